"""The process pool: the only module that touches multiprocessing.

Each worker process handles one file at a time and keeps one urllib3 pool for its whole life, so
connections stay alive from file to file. Workers put small throttled progress ticks on a queue; only the
parent draws.

Stopping is the parent's decision. Workers ignore SIGINT and SIGTERM (a terminal or ``kill`` of the process
group reaches them too) and watch a shared Event between chunks, so a stop leaves every part whole. A worker
that does not return within a grace period, or any worker on a second interrupt, is killed: part files are
only ever appended to and sidecars replaced atomically, so a kill loses time, never correctness. A worker
whose bulkdl process vanished (``kill -9``, the OOM killer) exits at once rather than write into a
destination nobody locks, and exits even when idle: otherwise it, and the forkserver it keeps alive, would
wait on a queue nobody feeds, and every killed nightly run would leave a handful of processes behind.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.context import BaseContext
from types import FrameType
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
_TICKS_PER_STEP = 2000  # ten steps a second take 20,000: 256 workers send at most 2,560 (meter.py)

Task = tuple[Job, Condition | None]

# Set in each worker process by _start_worker.
_ticks: Any = None
_starts: Any = None
_stop: StopFlag | None = None


def _exit_when_orphaned() -> None:
    """Watch bulkdl from a daemon thread; once it is gone, exit at once, busy or not.

    Nobody holds the destination lock any more, so nothing may be installed into it, not even the file
    that is almost done: a new run may already have started on it. Exiting mid-fetch is as safe as a kill
    by the parent: parts are only appended to, sidecars and installs are atomic renames.

    A worker's parent is the forkserver, which outlives bulkdl, so its pid tells nothing. The sentinel
    multiprocessing hands every child is a pipe whose other end bulkdl holds: it turns readable when
    bulkdl dies, however it dies.
    """
    parent = multiprocessing.parent_process()
    if parent is None:
        return
    parent.join()
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
    _ticks, _starts, _stop = ticks, starts, stop
    threading.Thread(target=_exit_when_orphaned, name="orphan-watch", daemon=True).start()
    net.start(max_connections)


def _send(index: int, n: int, size: int | None) -> None:
    _ticks.put((index, n, size))


def _work(task: Task) -> FileResult:
    assert _stop is not None
    job, condition = task
    _starts.put((job.index, os.getpid()))
    return fetch_file(job, condition, _stop, _send)


class Batch:
    """Runs tasks over ``workers`` processes until all are done or the run is interrupted.

    A worker killed from outside (the OOM killer) breaks a ProcessPoolExecutor for every task in it. The
    batch then starts a fresh pool and resubmits every unfinished task, whose parts resume; only a file
    whose own worker died twice fails. Which file a worker is on, it says when it starts one.

    Every task stays open, keyed by its job, until its result is reported, whichever pool it is on or
    between pools: a stop reports each open task that has no future as interrupted, so none can drop out
    of the summary. While the batch runs, Ctrl-C and SIGTERM only count a request to stop, which the loop
    acts on between steps, so no interrupt lands between submitting a task and recording its future.
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
        self._generation = 0  # the pool a future was submitted to; a restart starts the next one
        self._broken = False  # the current pool broke: replace it before submitting more
        self._current: dict[int, Future[FileResult]] = {}  # job index → its future, while it has one
        self._waiting: list[int] = []  # job indexes to submit, last first
        self._retrying: set[int] = set()  # job indexes waiting because their pool broke
        self._asked = 0  # stop requests (SIGINT, SIGTERM) received while running
        # Futures append themselves here when done, so a step costs what finished, not what is pending:
        # concurrent.futures.wait() locks every pending future on every call, quadratic over a big batch.
        self._finished: list[tuple[int, int, Future[FileResult]]] = []  # (job index, generation, future)
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
    ) -> bool:
        """Submit every task; report ticks and results as they arrive, and poll about ten times a second.

        Ctrl-C and SIGTERM stop the batch; a second one kills what still runs. Returns whether a stop was
        asked for: one that came too late to interrupt any file (every file had finished, or it arrived in the
        last step) still makes the run an interrupted one, which must not end as if it was not, but with its
        summary and report, since every result is in.
        """
        open_ = {task[0].index: task for task in tasks}
        self._waiting = list(reversed(open_))
        handled = 0
        with self._signals_deferred():
            while open_:
                try:
                    while handled < self._asked:
                        handled += 1
                        self.stop(at_once=self.stopping)
                    if not self.stopping:
                        if self._broken and self._waiting:
                            self._restart()
                        self._submit_waiting(open_)
                    self._step(open_, on_tick, on_result)
                    if self.stopping:
                        self._settle_unsubmitted(open_, on_result)
                    on_poll()
                except KeyboardInterrupt:  # raised where signals could not be deferred (not the main thread)
                    self.stop(at_once=self.stopping)
        return bool(self._asked) or self.stopping

    @contextlib.contextmanager
    def _signals_deferred(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # only the main thread may set handlers; KeyboardInterrupt is caught in run()
            return

        def ask(signum: int, frame: FrameType | None) -> None:
            self._asked += 1  # nothing more: a handler runs between any two bytecodes, even under a lock

        previous: dict[signal.Signals, Any] = {}
        try:  # installed inside: a SIGTERM between the two (it raises) must not leave ask() behind
            for number in (signal.SIGINT, signal.SIGTERM):
                previous[number] = signal.signal(number, ask)
            yield
        finally:
            for number, handler in previous.items():
                signal.signal(number, signal.SIG_DFL if handler is None else handler)

    def _restart(self) -> None:
        """Replace the broken pool; the tasks it took down wait, still open, to be submitted to the new one."""
        self._restarts += 1
        # Its other workers go on with files whose futures have already failed, and the pool's shutdown
        # waits for them (they ignore the SIGTERM it sends): kill them, their parts resume on the new pool.
        self._kill_workers()
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._executor = self._new_executor()
        self._generation += 1
        self._broken = False

    def _submit_waiting(self, open_: dict[int, Task]) -> None:
        while self._waiting:
            index = self._waiting[-1]
            if index in open_ and index not in self._current:
                try:
                    future = self._executor.submit(_work, open_[index])
                except BrokenProcessPool:  # it broke since the last step: the next one restarts it
                    self._broken = True
                    return
                future.add_done_callback(functools.partial(self._on_done, index, self._generation))
                self._current[index] = future
            self._retrying.discard(index)
            self._waiting.pop()

    def _on_done(self, index: int, generation: int, future: Future[FileResult]) -> None:
        self._finished.append((index, generation, future))
        self._finishing.set()

    def _step(self, open_: dict[int, Task], on_tick: Send, on_result: Callable[[FileResult], None]) -> None:
        """Report what finished; put the tasks a broken pool took down that deserve another try back to wait."""
        self._finishing.wait(_POLL_SECONDS)
        self._finishing.clear()
        done = self._finished[:]  # dropped from the list only once handled: an interrupt loses nothing
        self._drain(on_tick)
        for index, generation, future in done:
            if self._current.get(index) is not future:
                continue  # handled by a step an interrupt cut short
            job = open_[index][0]
            if self._retry_after_breakage(future, job, generation):
                self._retrying.add(index)
                self._waiting.append(index)
                del self._current[index]
                continue
            on_result(_outcome(future, job, self.stopping, self._deaths.get(index, 0)))
            self._running.discard(index)
            del self._current[index], open_[index]  # only once reported: an interrupt before cannot lose it
        del self._finished[: len(done)]  # callbacks only ever append
        if self._deadline is not None and time.monotonic() > self._deadline:
            self._kill_workers()

    def _retry_after_breakage(self, future: Future[FileResult], job: Job, generation: int) -> bool:
        if self.stopping or future.cancelled() or not isinstance(future.exception(), BrokenProcessPool):
            return False
        # A pool that broke fails every future in it, maybe over several steps: only one of the current
        # pool calls for a new pool; the rest of an old one just go to the pool that replaced it.
        self._broken = self._broken or generation == self._generation
        if self._restarts >= MAX_POOL_RESTARTS:
            return False
        if job.index in self._running:
            self._deaths[job.index] = self._deaths.get(job.index, 0) + 1
            self._running.discard(job.index)
        return self._deaths.get(job.index, 0) < MAX_WORKER_DEATHS

    def _settle_unsubmitted(self, open_: dict[int, Task], on_result: Callable[[FileResult], None]) -> None:
        """Once stopping, report every open task that has no future (it waited for a pool) as interrupted."""
        for index in [i for i in open_ if i not in self._current]:
            job = open_[index][0]
            reason = "stopped while its worker pool was replaced" if index in self._retrying else "not started"
            on_result(FileResult(job.index, job.name, job.shown_url, Status.INTERRUPTED, None, 0, None, 0.0, reason))
            del open_[index]

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
        # At most so many ticks a step: workers that tick faster than on_tick takes them kept a step draining
        # for as long as they ran, and no result (a progress counter stuck at 3/300) nor stop was handled.
        for _ in range(_TICKS_PER_STEP):
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
