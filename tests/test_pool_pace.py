"""How far ahead the pool keeps a worker, and how it takes back what an idle one could run: pure logic, no process."""

from __future__ import annotations

import multiprocessing
import time
from typing import Any

import pytest

from bulkdl.parent import pool
from bulkdl.values import FileResult, Status
from bulkdl.worker import serve
from bulkdl.worker.serve import _Reporter


def _worker(finished: list[float], pipe: Any = None) -> pool._Worker:
    nothing: Any = None
    worker = pool._Worker(nothing, pipe, pipe)  # with a pipe, a live worker
    worker.finished.extend(finished)
    return worker


def _ahead(finished: list[float], now: float | None = None) -> int:
    """The depth of a worker of 4 threads (base 8) that reported results at ``finished``; now: the last."""
    return _worker(finished).ahead(8, 4, finished[-1] if now is None and finished else now or 0.0)


def test_until_results_come_back_a_worker_gets_the_base() -> None:
    assert _ahead([]) == 8
    assert _ahead([5.0]) == 8


def test_a_worker_of_small_files_is_kept_a_tenth_of_a_second_ahead() -> None:
    # 1,000 results a second: 100 in the next 0.1 s, beyond its 4 threads
    assert _ahead([i / 1000 for i in range(200)]) == 4 + 100


def test_a_worker_of_big_files_keeps_the_base() -> None:
    assert _ahead([0.0, 0.5, 1.0, 1.5]) == 8  # two a second: one more than its threads


def test_results_that_came_together_are_no_pace() -> None:
    # two big files that ended in the same message: not a reason to send this worker every file left
    assert _ahead([1.0, 1.0]) == 8
    assert _ahead([1.0] * 50) == 4 + 49  # what it did in the last tenth of a second, at most


def test_the_depth_is_bounded() -> None:
    assert _ahead([i / 1e5 for i in range(300)]) == pool._MAX_AHEAD


def test_the_pool_notes_when_each_result_came() -> None:
    batch = pool.Batch(1)
    worker = _worker([])
    results = [FileResult(i, f"f{i}", "http://127.0.0.1:9/f", Status.DOWNLOADED, 1, 1, None, 0.0) for i in range(3)]
    open_: dict[int, Any] = {r.index: None for r in results}
    for result in results:
        batch._owner[result.index] = worker
        worker.assigned.add(result.index)
    reported: list[FileResult] = []
    for result in results:
        batch._report(worker, result, open_, reported.append)
    assert reported == results and len(worker.finished) == 3
    assert list(worker.finished) == sorted(worker.finished)


def test_the_pace_is_the_recent_one() -> None:
    fast_then_slow = [i / 1000 for i in range(400)] + [1.0 + i for i in range(pool._PACE_RESULTS)]
    assert _ahead(fast_then_slow) == 8
    assert len(_worker(fast_then_slow).finished) == pool._PACE_RESULTS


def test_a_worker_silent_since_its_small_files_is_slow() -> None:
    """Busy with big files since its last small ones: its pace is measured up to now, and drops."""
    fast = [i / 1000 for i in range(200)]
    assert _ahead(fast) == 4 + 100
    assert _ahead(fast, now=2.0) == 4 + 10  # 199 results in 2 s
    assert _ahead(fast, now=20.0) == 8


@pytest.mark.parametrize("rate", [10, 100, 2000])
def test_more_results_a_second_never_means_fewer_ahead(rate: int) -> None:
    slower = _ahead([i / rate for i in range(100)])
    faster = _ahead([i / (rate * 2) for i in range(100)])
    assert faster >= slower


class _Pipe:
    def __init__(self) -> None:
        self.sent: list[Any] = []

    def send(self, message: Any) -> None:
        self.sent.append(message)


class _Job:
    def __init__(self, index: int) -> None:
        self.index = index


def test_tasks_a_worker_has_not_started_go_to_the_idle_one() -> None:
    """Two workers that ran small files fast; 40 big files are left. The first feed may send them all to one
    worker; once nothing is left to send, the other one, idle, gets as many as it has idle threads."""
    batch = pool.Batch(2)
    batch._files, batch._ahead = 4, 8
    busy, idle = (_worker([i / 1000 for i in range(256)], _Pipe()) for _ in range(2))
    batch._workers = [busy, idle]
    open_: dict[int, Any] = {i: (_Job(i), None) for i in range(40)}
    for index in open_:  # as if the first feed had sent them all to one worker, which started four
        busy.assigned.add(index)
        batch._owner[index] = busy
    busy.started.update(range(4))
    batch._feed(open_)
    assert busy.tasks.sent == [4] and idle.tasks.sent == [], "as many as the idle worker's four threads"
    batch._feed(open_)
    assert busy.tasks.sent == [4], "no second recall before the first is answered"
    batch._take_back(busy, [[39, 38, 37, 36]])  # the worker gives back from the end of its queue
    assert busy.recalls == 0 and list(batch._waiting) == [36, 37, 38, 39]
    batch._feed(open_)
    sent = [job.index for batch_ in idle.tasks.sent for job, _ in batch_]
    assert sent == [36, 37, 38, 39], "the idle worker gets them, in order"
    assert {batch._owner[i] for i in sent} == {idle} and busy.assigned == set(range(36))
    assert not batch._waiting


def test_a_recall_answered_for_tasks_since_reported_gives_back_none_of_them() -> None:
    batch = pool.Batch(2)
    worker = _worker([], _Pipe())
    worker.recalls = 1
    batch._owner[7] = worker
    worker.assigned.add(7)
    batch._take_back(worker, [[7, 8]])  # 8: reported meanwhile, no longer the worker's
    assert list(batch._waiting) == [7] and worker.assigned == set() and worker.recalls == 0


def test_a_worker_gives_back_from_the_end_of_its_queue_and_never_an_end() -> None:
    files = serve._Files()
    for i in range(5):
        files.put((_Job(i), None))  # type: ignore[arg-type]  # a task's job needs only its index here
    assert files.take_back(2) == [4, 3]
    assert [files.get()[0].index for _ in range(2)] == [0, 1]  # type: ignore[index]
    files.put(None)
    assert files.take_back(5) == []  # a thread's end stays
    assert files.qsize() == 2


def test_tasks_are_dealt_in_turn_not_a_worker_s_fill_at_a_time() -> None:
    """Big files after small ones went all to whichever worker was topped up first."""
    batch = pool.Batch(2)
    batch._files, batch._ahead = 4, 8
    first, second = (_worker([], _Pipe()) for _ in range(2))
    batch._workers = [first, second]
    open_: dict[int, Any] = {i: (_Job(i), None) for i in range(6)}
    batch._waiting.extend(open_)
    batch._feed(open_)
    dealt = [[job.index for sent in w.tasks.sent for job, _ in sent] for w in (first, second)]
    assert dealt == [[0, 2, 4], [1, 3, 5]]


def test_a_worker_with_no_room_is_dealt_nothing_and_the_other_gets_its_fill() -> None:
    batch = pool.Batch(2)
    batch._files, batch._ahead = 4, 8
    full, empty = (_worker([], _Pipe()) for _ in range(2))
    full.assigned.update(range(100, 108))
    batch._workers = [full, empty]
    open_: dict[int, Any] = {i: (_Job(i), None) for i in range(20)}
    batch._waiting.extend(open_)
    batch._feed(open_)
    assert full.tasks.sent == []
    assert [job.index for job, _ in empty.tasks.sent[0]] == list(range(8))
    assert list(batch._waiting) == list(range(8, 20))


class _DeadPipe:
    def send(self, message: Any) -> None:
        raise BrokenPipeError


def _batch(*workers: pool._Worker) -> pool.Batch:
    batch = pool.Batch(2)
    batch._files, batch._ahead = 4, 8
    batch._workers = list(workers)
    return batch


def _give(batch: pool.Batch, worker: pool._Worker, indexes: range, started: range) -> None:
    for index in indexes:
        worker.assigned.add(index)
        batch._owner[index] = worker
    worker.started.update(started)


def test_no_recall_while_every_worker_s_threads_are_busy_or_fed() -> None:
    busy, full, fed = (_worker([], _Pipe()) for _ in range(3))
    batch = _batch(busy, full, fed)
    _give(batch, busy, range(0, 40), range(0, 4))  # 36 queued
    _give(batch, full, range(40, 44), range(40, 44))  # all four threads busy: no idle thread
    _give(batch, fed, range(44, 46), range(44, 45))  # a thread free, but something queued it will start
    open_: dict[int, Any] = {i: (_Job(i), None) for i in range(46)}
    batch._feed(open_)
    assert [w.tasks.sent for w in (busy, full, fed)] == [[], [], []]


def test_no_recall_to_a_worker_told_to_end_nor_for_a_dead_idle_one() -> None:
    busy, idle = (_worker([], _Pipe()) for _ in range(2))
    batch = _batch(busy, idle)
    _give(batch, busy, range(0, 40), range(0, 4))
    open_: dict[int, Any] = {i: (_Job(i), None) for i in range(40)}
    idle.results = None  # gone: it has idle threads no more
    batch._feed(open_)
    assert busy.tasks.sent == []
    idle.results = idle.tasks
    busy.told_to_end = True
    batch._feed(open_)
    assert busy.tasks.sent == []


def test_a_worker_that_cannot_be_sent_to_does_not_starve_the_others() -> None:
    dead, live = _worker([], _DeadPipe()), _worker([], _Pipe())
    batch = _batch(dead, live)
    open_: dict[int, Any] = {i: (_Job(i), None) for i in range(6)}
    batch._waiting.extend(open_)
    batch._feed(open_)
    assert [job.index for sent in live.tasks.sent for job, _ in sent] == [1, 3, 5]
    assert list(batch._waiting) == [0, 2, 4] and not dead.assigned


def test_tasks_given_back_wait_ahead_of_the_others() -> None:
    worker = _worker([], _Pipe())
    batch = _batch(worker)
    _give(batch, worker, range(3, 6), range(0))
    worker.recalls = 1
    batch._waiting.extend([10, 11])
    batch._take_back(worker, [[5, 4]])
    assert list(batch._waiting) == [4, 5, 10, 11]


def test_an_answer_alone_is_sent() -> None:
    receive, send = multiprocessing.Pipe(duplex=False)
    reporter = _Reporter(send)
    try:
        reporter.gave_back([])
        assert receive.poll(1), "the parent waits for the answer before it recalls again"
        assert receive.recv()[4] == [[]]
    finally:
        reporter.close()


def test_tasks_recalled_from_a_worker_go_to_the_idle_one_not_back() -> None:
    """What a recall took back goes to the worker with idle threads, not back to the one that gave it; and
    the recall asks only for what the idle threads can take (five free: two of the four queued)."""
    idle, donor = _worker([], _Pipe()), _worker([], _Pipe())
    batch = pool.Batch(2)
    batch._files, batch._ahead = 8, 12
    batch._workers = [idle, donor]
    _give(batch, idle, range(0, 3), range(0, 3))  # five threads free
    _give(batch, donor, range(3, 15), range(3, 11))  # eight running, 11..14 queued
    open_: dict[int, Any] = {i: (_Job(i), None) for i in range(15)}
    batch._feed(open_)
    assert donor.tasks.sent == [2]
    batch._take_back(donor, [[14, 13]])
    batch._feed(open_)
    assert [job.index for sent in idle.tasks.sent for job, _ in sent] == [13, 14]
    assert donor.tasks.sent == [2], "nothing dealt back to the worker it was just recalled from"


def test_the_least_loaded_worker_is_dealt_first() -> None:
    loaded, empty = (_worker([], _Pipe()) for _ in range(2))
    batch = _batch(loaded, empty)
    _give(batch, loaded, range(100, 103), range(100, 103))
    open_: dict[int, Any] = {0: (_Job(0), None)}
    batch._waiting.append(0)
    batch._feed(open_)
    assert loaded.tasks.sent == [] and [job.index for job, _ in empty.tasks.sent[0]] == [0]


def test_a_worker_that_reports_results_fast_is_dealt_beyond_the_base() -> None:
    batch = pool.Batch(1)
    batch._files, batch._ahead = 4, 8
    now = time.monotonic()
    worker = _worker([now - 0.2 + i / 1000 for i in range(200)], _Pipe())  # 1,000 a second, until now
    batch._workers = [worker]
    open_: dict[int, Any] = {i: (_Job(i), None) for i in range(300)}
    batch._waiting.extend(open_)
    batch._feed(open_)
    dealt = [job.index for sent in worker.tasks.sent for job, _ in sent]
    assert dealt == list(range(pool._BATCH)), "a message's worth, not the base of 8"
