"""The process pool: the only module that touches multiprocessing.

Each worker process handles one file at a time and keeps one urllib3 pool for its whole life, so
connections stay alive from file to file. Workers ignore SIGINT: the parent decides when to stop and tells
them through an Event that segment threads check between chunks, so parts are left whole and resumable.
Workers put small throttled progress ticks on a queue; only the parent draws.
"""

from __future__ import annotations

import multiprocessing
import queue
import signal
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from multiprocessing.context import BaseContext
from typing import Any

from . import net
from .fetch import FileResult, Send, StopFlag, fetch_file
from .manifest import Job

_POLL_SECONDS = 0.1

# Set in each worker process by _start_worker.
_ticks: Any = None
_stop: StopFlag | None = None


def _context() -> BaseContext:
    # Never fork a parent that may run threads; forkserver starts workers cheaply where it exists.
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    return multiprocessing.get_context(method)


def _start_worker(ticks: Any, stop: StopFlag, max_connections: int) -> None:
    global _ticks, _stop
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _ticks, _stop = ticks, stop
    net.start(max_connections)


def _send(index: int, n: int, size: int | None) -> None:
    _ticks.put((index, n, size))


def _work(job: Job) -> FileResult:
    assert _stop is not None
    return fetch_file(job, _stop, _send)


class Batch:
    """Runs jobs over ``workers`` processes; ``stop()`` asks everything in flight to wind down."""

    def __init__(self, workers: int, max_connections: int) -> None:
        self._context = _context()
        self._ticks = self._context.Queue()
        self._stop_event = self._context.Event()
        self._executor = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=self._context,
            initializer=_start_worker,
            initargs=(self._ticks, self._stop_event, max_connections),
        )

    def stop(self) -> None:
        self._stop_event.set()

    @property
    def stopping(self) -> bool:
        return self._stop_event.is_set()

    def run(self, jobs: Iterable[Job], on_tick: Send, on_result: Callable[[FileResult], None]) -> None:
        """Submit every job and report each tick and result as it arrives, until all are done."""
        pending: dict[Future[FileResult], Job] = {self._executor.submit(_work, job): job for job in jobs}
        while pending:
            try:
                done, _ = wait(pending, timeout=_POLL_SECONDS, return_when=FIRST_COMPLETED)
            except KeyboardInterrupt:
                if self.stopping:
                    raise  # a second Ctrl-C: the caller leaves at once
                self.cancel_pending()
                continue
            self._drain(on_tick)
            for future in done:
                on_result(_outcome(future, pending.pop(future)))

    def _drain(self, on_tick: Send) -> None:
        while True:
            try:
                index, n, size = self._ticks.get_nowait()
            except queue.Empty:
                return
            on_tick(index, n, size)

    def cancel_pending(self) -> None:
        """Drop jobs no worker has started; those running see the stop event."""
        self._stop_event.set()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._ticks.close()
        self._ticks.join_thread()


def _outcome(future: Future[FileResult], job: Job) -> FileResult:
    if future.cancelled():
        return FileResult(job.index, job.name, job.url, "interrupted", None, 0, None, 0.0, "not started")
    exc = future.exception()
    if exc is not None:  # the worker process itself died (OOM killer, a crash in C code)
        return FileResult(job.index, job.name, job.url, "failed", None, 0, None, 0.0, f"worker process died: {exc}")
    return future.result()
