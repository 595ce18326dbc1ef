"""How far ahead the pool keeps a worker: pure logic, no process."""

from __future__ import annotations

from typing import Any

import pytest

from bulkdl.parent import pool
from bulkdl.values import FileResult, Status


def _worker(finished: list[float]) -> pool._Worker:
    nothing: Any = None
    worker = pool._Worker(nothing, nothing, nothing)
    worker.finished.extend(finished)
    return worker


def test_until_results_come_back_a_worker_gets_the_base() -> None:
    assert _worker([]).ahead(8, 4) == 8
    assert _worker([5.0]).ahead(8, 4) == 8


def test_a_worker_of_small_files_is_kept_a_tenth_of_a_second_ahead() -> None:
    # 1,000 results a second: 100 in the next 0.1 s, beyond its 4 threads
    assert _worker([i / 1000 for i in range(200)]).ahead(8, 4) == 4 + 100


def test_a_worker_of_big_files_keeps_the_base() -> None:
    assert _worker([0.0, 0.5, 1.0, 1.5]).ahead(8, 4) == 8  # two a second: one more than its threads


def test_results_that_came_together_are_no_pace() -> None:
    # two big files that ended in the same message: not a reason to send this worker every file left
    assert _worker([1.0, 1.0]).ahead(8, 4) == 8
    assert _worker([1.0] * 50).ahead(8, 4) == 4 + 49  # what it did in the last tenth of a second, at most


def test_the_depth_is_bounded() -> None:
    assert _worker([i / 1e5 for i in range(300)]).ahead(8, 4) == pool._MAX_AHEAD


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
    assert _worker(fast_then_slow).ahead(8, 4) == 8
    assert len(_worker(fast_then_slow).finished) == pool._PACE_RESULTS


@pytest.mark.parametrize("rate", [10, 100, 2000])
def test_more_results_a_second_never_means_fewer_ahead(rate: int) -> None:
    slower = _worker([i / rate for i in range(100)]).ahead(8, 4)
    faster = _worker([i / (rate * 2) for i in range(100)]).ahead(8, 4)
    assert faster >= slower
