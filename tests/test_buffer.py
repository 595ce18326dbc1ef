"""A thread assembling one small file after another reads through its one buffer, not a new MiB per file."""

from __future__ import annotations

import threading
import tracemalloc
from pathlib import Path

from bulkdl.hashing import BUFFER
from bulkdl.worker import buffer, plan
from bulkdl.worker.assemble import Assembly
from bulkdl.worker.parts import Parts
from bulkdl.worker.plan import Plan


def _fetch_one(final: Path) -> None:
    current = Plan("u", "u", 10, '"v"', None, True, plan.single(10))
    parts = Parts(final)
    parts.start(current, record=False)
    parts.append(0, 0, bytes(10))
    with Assembly(parts, []) as assembly:
        assembly.finish(current, 10, ())
    parts.close()


def test_files_after_the_first_allocate_no_buffer(tmp_path: Path) -> None:
    _fetch_one(tmp_path / "first.bin")  # this thread's buffer, if it had none yet
    tracemalloc.start()
    try:
        for i in range(5):
            _fetch_one(tmp_path / f"f{i}.bin")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < BUFFER // 2, f"{peak} bytes allocated at the peak"


def test_each_thread_has_its_own_buffer() -> None:
    seen: list[memoryview] = []
    thread = threading.Thread(target=lambda: seen.append(buffer.get()))
    thread.start()
    thread.join()
    assert buffer.get() is buffer.get() and seen[0] is not buffer.get() and len(seen[0]) == BUFFER
