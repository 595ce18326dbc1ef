"""The process pool: the only module that touches multiprocessing.

Each worker process handles one file at a time and keeps one urllib3 pool for its whole life, so
connections stay alive from file to file. Workers put small throttled progress ticks on a queue; only the
parent draws.

Stopping is the parent's decision. Workers ignore SIGINT and SIGTERM (a terminal or ``kill`` of the process
group reaches them too) and watch a shared Event between chunks, so a stop leaves every part whole. A worker
that does not return within a grace period, or any worker on a second interrupt, is killed: part files are
only ever appended to and sidecars replaced atomically, so a kill loses time, never correctness. A worker
whose bulkdl process vanished (``kill -9``, the OOM killer) stops by itself rather than write into a
destination nobody locks, and exits even when idle: otherwise it, and the forkserver it keeps alive, would
wait on a queue nobody feeds, and every killed nightly run would leave a handful of processes behind.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.context import BaseContext
from typing import Any

from ..values import Condition, FileResult, Job, Status
from ..worker import net
from ..worker.fetch import fetch_file
from ..worker.meter import Send
from ..worker.retry import StopFlag

GRACE_SECONDS = 1.5
MAX_WORKER_DEATHS = 2  # a file whose worker died this often fails; the others are tried again
MAX_POOL_RESTARTS = 10  # a bound even if a dying worker never got to say which file it was on
_POLL_SECONDS = 0.1

Task = tuple[Job, Condition | None]

# Set in each worker process by _start_worker.
_ticks: Any = None
_starts: Any = None
_stop: _StopOrOrphaned | None = None
_busy = threading.Lock()  # held while this worker fetches a file


class _StopOrOrphaned:
    """The shared stop Event, which also reads as set once the bulkdl process that owns this worker is gone."""

    def __init__(self, event: StopFlag) -> None:
        self._event = event
        self.orphaned = threading.Event()

    def is_set(self) -> bool:
        return self._event.is_set() or self.orphaned.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        deadline = time.monotonic() + (timeout or 0)
        while not self.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._event.wait(min(left, 0.5))
        return True


def _exit_when_orphaned(stop: _StopOrOrphaned) -> None:
    """Watch bulkdl from a daemon thread; once it is gone, let a running fetch stop at a chunk, then exit.

    A worker's parent is the forkserver, which outlives bulkdl, so its pid tells nothing. The sentinel
    multiprocessing hands every child is a pipe whose other end bulkdl holds: it turns readable when
    bulkdl dies, however it dies.
    """
    parent = multiprocessing.parent_process()
    if parent is None:
        return
    parent.join()
    stop.orphaned.set()
    _busy.acquire(timeout=4 * GRACE_SECONDS)  # held by a fetch; a task still queued never starts
    os._exit(0)


def _context() -> BaseContext:
    # Never fork a parent that may run threads; forkserver starts workers cheaply where it exists.
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["bulkdl.worker.forkserver"])
    return context


def _start_worker(ticks: Any, starts: Any, stop: StopFlag, max_connections: int) -> None:
    global _ticks, _starts, _stop
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _ticks, _starts, _stop = ticks, starts, _StopOrOrphaned(stop)
    threading.Thread(target=_exit_when_orphaned, args=(_stop,), name="orphan-watch", daemon=True).start()
    net.start(max_connections)


def _send(index: int, n: int, size: int | None) -> None:
    _ticks.put((index, n, size))


def _work(task: Task) -> FileResult:
    assert _stop is not None
    job, condition = task
    with _busy:
        _starts.put((job.index, os.getpid()))
        return fetch_file(job, condition, _stop, _send)


class Batch:
    """Runs tasks over ``workers`` processes until all are done or the run is interrupted.

    A worker killed from outside (the OOM killer) breaks a ProcessPoolExecutor for every task in it. The
    batch then starts a fresh pool and resubmits every unfinished task, whose parts resume; only a file
    whose own worker died twice fails. Which file a worker is on, it says when it starts one.
    """

    def __init__(self, workers: int, max_connections: int) -> None:
        self._context = _context()
        self._ticks = self._context.Queue()
        self._starts = self._context.Queue()  # (job index, worker pid) as each worker takes a file
        self._stop_event = self._context.Event()
        self._deadline: float | None = None  # when running workers get killed, once stopping
        self._workers, self._max_connections = workers, max_connections
        self._running: set[int] = set()  # job indexes a worker has started and not finished
        self._deaths: dict[int, int] = {}  # job index → pools that broke while it was running
        self._restarts = 0
        # Futures append themselves here when done, so a step costs what finished, not what is pending:
        # concurrent.futures.wait() locks every pending future on every call, quadratic over a big batch.
        self._finished: list[Future[FileResult]] = []
        self._finishing = threading.Event()
        self._executor = self._new_executor()

    def _new_executor(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self._workers,
            mp_context=self._context,
            initializer=_start_worker,
            initargs=(self._ticks, self._starts, self._stop_event, self._max_connections),
        )

    @property
    def stopping(self) -> bool:
        return self._stop_event.is_set()

    def run(
        self, tasks: Iterable[Task], on_tick: Send, on_result: Callable[[FileResult], None], on_poll: Callable[[], None]
    ) -> None:
        """Submit every task; report ticks and results as they arrive, and poll about ten times a second.

        Ctrl-C and SIGTERM stop the batch.
        """
        pending = {self._submit(task): task for task in tasks}
        while pending:
            try:
                again = self._step(pending, on_tick, on_result)
                if again:
                    self._restarts += 1
                    self._executor.shutdown(wait=True, cancel_futures=True)
                    self._executor = self._new_executor()
                    pending |= {self._submit(task): task for task in again}
                on_poll()
            except KeyboardInterrupt:
                self.stop(at_once=self.stopping)

    def _submit(self, task: Task) -> Future[FileResult]:
        future = self._executor.submit(_work, task)
        future.add_done_callback(self._on_done)
        return future

    def _on_done(self, future: Future[FileResult]) -> None:
        self._finished.append(future)
        self._finishing.set()

    def _step(
        self, pending: dict[Future[FileResult], Task], on_tick: Send, on_result: Callable[[FileResult], None]
    ) -> list[Task]:
        """Report what finished; return the tasks a broken pool took down that deserve another try."""
        self._finishing.wait(_POLL_SECONDS)
        self._finishing.clear()
        done = self._finished[:]  # dropped from the list only once handled: an interrupt loses nothing
        self._drain(on_tick)
        again = []
        for future in done:
            if future not in pending:
                continue  # handled by a step an interrupt cut short
            job = pending[future][0]
            if self._retry_after_breakage(future, job):
                again.append(pending.pop(future))
                continue
            on_result(_outcome(future, job, self.stopping, self._deaths.get(job.index, 0)))
            self._running.discard(job.index)
            del pending[future]  # only once reported, so an interrupt in between cannot lose a result
        del self._finished[: len(done)]  # callbacks only ever append
        if self._deadline is not None and time.monotonic() > self._deadline:
            self._kill_workers()
        return again

    def _retry_after_breakage(self, future: Future[FileResult], job: Job) -> bool:
        if self.stopping or future.cancelled() or not isinstance(future.exception(), BrokenProcessPool):
            return False
        if self._restarts >= MAX_POOL_RESTARTS:
            return False
        if job.index in self._running:
            self._deaths[job.index] = self._deaths.get(job.index, 0) + 1
            self._running.discard(job.index)
        return self._deaths.get(job.index, 0) < MAX_WORKER_DEATHS

    def stop(self, at_once: bool = False) -> None:
        """Drop tasks not started, ask running ones to stop, and kill what is still running after the grace."""
        self._stop_event.set()
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._deadline = time.monotonic() + (0 if at_once else GRACE_SECONDS)
        if at_once:
            self._kill_workers()

    def _kill_workers(self) -> None:
        for child in multiprocessing.active_children():
            child.kill()
        self._deadline = None

    def _drain(self, on_tick: Send) -> None:
        while True:
            try:
                index, n, size = self._ticks.get_nowait()
            except queue.Empty:
                break
            on_tick(index, n, size)
        while True:
            try:
                index, _pid = self._starts.get_nowait()
            except queue.Empty:
                return
            self._running.add(index)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        for q in (self._ticks, self._starts):
            q.close()
            q.join_thread()


def _outcome(future: Future[FileResult], job: Job, stopping: bool, deaths: int) -> FileResult:
    if future.cancelled():
        return FileResult(job.index, job.name, job.shown_url, Status.INTERRUPTED, None, 0, None, 0.0, "not started")
    exc = future.exception()
    if exc is None:
        return future.result()
    if stopping:  # killed because it did not stop within the grace period
        return FileResult(job.index, job.name, job.shown_url, Status.INTERRUPTED, None, 0, None, 0.0, "stopped")
    # The worker process itself died (the OOM killer, a crash in C code), as often as we allow.
    reason = f"the worker process fetching it died {deaths} times (killed by the system?); its parts are kept"
    return FileResult(job.index, job.name, job.shown_url, Status.FAILED, None, 0, None, 0.0, reason)
