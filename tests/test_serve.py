"""What a worker tells the parent (worker/serve.py): coalesced, complete, one message at a time."""

from __future__ import annotations

import multiprocessing
import threading

from bulkdl.values import FileResult, Status
from bulkdl.worker.serve import _Reporter


def test_ticks_are_summed_per_file_and_nothing_is_lost() -> None:
    # Four threads tick 3,000 times over three files: each message names a file at most once, with the sum
    # since the previous message, and the sums over all messages are every byte. Results and starts arrive.
    receive, send = multiprocessing.Pipe(duplex=False)
    reporter = _Reporter(send)

    def tick(thread: int) -> None:
        for i in range(3000):
            reporter.tick(i % 3, thread + 1, 1000)
        reporter.started(10 + thread)
        reporter.result(FileResult(10 + thread, f"f{thread}", "u", Status.DOWNLOADED, 1, 1, None, 0.0))

    threads = [threading.Thread(target=tick, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    reporter.close()
    send.close()
    totals: dict[int, int] = {}
    started, results = [], []
    messages = 0
    while receive.poll(1):
        try:
            begun, ticks, done = receive.recv()
        except EOFError:
            break
        messages += 1
        indexes = [index for index, _, _ in ticks]
        assert len(indexes) == len(set(indexes)), "a file named twice in one message"
        for index, n, size in ticks:
            assert size == 1000
            totals[index] = totals.get(index, 0) + n
        started += begun
        results += done
    assert totals == {i: 1000 * (1 + 2 + 3 + 4) for i in range(3)}
    assert sorted(started) == [10, 11, 12, 13]
    assert sorted(r.index for r in results) == [10, 11, 12, 13]
    assert messages < 12_000 // 10, f"{messages} messages for 12,000 ticks"
