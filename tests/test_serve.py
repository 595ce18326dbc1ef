"""What a worker tells the parent (worker/serve.py): coalesced, complete, one message at a time."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from bulkdl.parent import manifest
from bulkdl.values import FileResult, Status
from bulkdl.worker import limits, net, serve
from bulkdl.worker.limits import Shared, SharedFlag
from bulkdl.worker.serve import _Reporter

from .conftest import write_manifest
from .httpserver import FaultServer

_CONTEXT = multiprocessing.get_context("spawn")


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
            begun, ticks, done, _, _ = receive.recv()
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


def test_a_worker_whose_queue_runs_low_reports_at_once(
    builtin: FaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The parent sends a worker more files only when it hears of results: a result held back until the next
    # interval starves the worker (at 50 ms, two workers did about 320 files a second whatever they could do).
    # With an interval of minutes, the result of a worker's last file must still arrive at once.
    monkeypatch.setattr(serve, "_FLUSH", 600.0)
    loaded = manifest.load(write_manifest(tmp_path, [builtin.add("one.bin", b"one")]))
    receive, send = multiprocessing.Pipe(duplex=False)
    stop = SharedFlag(_CONTEXT)
    shared = Shared(loaded.budget, _CONTEXT)
    files = serve._Files()
    files.put((loaded.jobs[0], None))
    files.put(None)
    net.start(2)
    limits.install(shared, stop)
    reporter = serve._Reporter(send)
    try:
        thread = threading.Thread(target=serve._serve, args=(files, stop, reporter, shared.budget, 4), daemon=True)
        thread.start()
        thread.join(30)
        results: list[FileResult] = []
        while not results and receive.poll(30):
            results += receive.recv()[2]
        assert [r.status for r in results] == [Status.DOWNLOADED], "the result waited for the interval"
    finally:
        stop.set()
        reporter.close()
        limits.install(None, stop)
        net.stop()


_ARENAS = """
import ctypes, os, sys, tempfile, threading
if sys.argv[1] == "few":
    import http.client
    from bulkdl.worker import headlines, serve
    serve.tune_process()
    assert http.client.parse_headers is headlines.parse_headers
go = threading.Barrier(8)
def allocate():
    go.wait()  # all at once: each thread that finds the arenas busy may get one of its own
    for _ in range(200):
        block = bytearray(256 * 1024)
        del block
threads = [threading.Thread(target=allocate) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
libc = ctypes.CDLL(None)
libc.fopen.restype = ctypes.c_void_p
path = tempfile.mktemp()
f = libc.fopen(path.encode(), b"w")
libc.malloc_info(0, ctypes.c_void_p(f))
libc.fclose(ctypes.c_void_p(f))
print(open(path).read().count("<heap nr="))
os.unlink(path)
"""


def test_a_worker_keeps_two_malloc_arenas_whatever_its_threads() -> None:
    """glibc's malloc_info lists one heap per arena: 8 threads allocating at once make more without the
    setting (the memory a worker keeps, benchmarked: 67-70 MiB against 57-60 on WAN MIXED). The same
    set-up puts headlines' parser in http.client."""

    def arenas(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", _ARENAS, mode], capture_output=True, text=True, check=True)
        return int(out.stdout)

    assert arenas("few") <= 2
    assert arenas("default") > 2  # the check can see more
