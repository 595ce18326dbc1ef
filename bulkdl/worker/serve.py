"""A worker process's life: many files at once on threads, tasks in and results out in batches.

The parent (parent/pool.py) sends lists of tasks down this worker's task pipe, a number when it wants some
of them back for a worker whose threads are idle (a recall: the ones not started are given back), and
``None`` once it has no more; ``files`` threads take them one by one, each running ``fetch_file`` over the
process's urllib3 pools, so the files in flight are a number of threads, not of processes. What the parent
needs to hear (which files started, bytes received, results) is gathered by a reporter thread and sent up
the result pipe as one message at a time, at most every ``_FLUSH`` seconds: a few messages a second
whatever the number of files, instead of four per file.

Each pipe has one writer: the parent's task pipe is read only by the main thread here, the result pipe
written only by the reporter. A worker killed mid-message leaves only its own pipe unreadable, which the
parent then stops reading (pool.py).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import replace
from multiprocessing.connection import Connection

from ..errors import INTERNAL, local_code
from ..values import Budget, FileResult, Job, Settings, Status
from . import events, headlines, limits, net
from .crossing import Config, Report, Task, not_started
from .fetch import fetch_file
from .retry import StopFlag

_FLUSH = 0.05  # seconds between two messages to the parent, at most
_SOONEST = 0.005  # seconds between two messages, at least
_JANITOR = 0.05  # seconds between two looks for idle connections another thread waits for
_M_ARENA_MAX = -8  # glibc's mallopt parameter


def main(config: Config, tasks: Connection, results: Connection, stop: StopFlag, shared: limits.Shared) -> None:
    """The worker process: serve tasks until the parent says there are no more, then report and exit."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # stopping is the parent's decision (pool.py)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    tune_process()
    threading.Thread(target=_exit_when_orphaned, name="orphan-watch", daemon=True).start()
    net.start(config.max_idle_per_host)
    limits.install(shared, stop)
    reporter = _Reporter(results)
    if config.events:
        events.install(reporter.event)
    files = _Files()
    threads = [
        threading.Thread(
            target=_serve, args=(files, stop, reporter, shared.budget, config.files), name=f"file-{i}", daemon=True
        )
        for i in range(config.files)
    ]
    for thread in threads:
        thread.start()
    janitor = threading.Thread(target=_janitor, args=(shared, stop), name="janitor", daemon=True)
    janitor.start()
    try:
        while (message := tasks.recv()) is not None:
            if isinstance(message, int):  # a recall: give back up to that many tasks not started
                reporter.gave_back(files.take_back(message))
                continue
            for task in message:
                files.put(task)
    except EOFError:  # the parent is gone: the orphan watch ends the process
        return
    for _ in threads:
        files.put(None)
    for thread in threads:
        thread.join()
    reporter.close()


def tune_process() -> None:
    """What only a process of bulkdl's own may change, before its threads start: its malloc arenas, and
    http.client's parser of response heads (headlines.py; not in a Dask worker, whose process is not ours)."""
    _few_malloc_arenas()
    headlines.install()


def _few_malloc_arenas() -> None:
    """Two malloc arenas for the process.

    glibc gives every thread that allocates an arena of its own (up to eight per core) and keeps what each
    freed: 16 threads reading 256 KiB bodies held a worker at 67-70 MiB on WAN MIXED (32 connections), 58-59
    MiB with two arenas, against the 64 MiB a worker may use. The GIL serializes the allocations anyway.
    Elsewhere than glibc there is no mallopt, and nothing to do.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).mallopt(_M_ARENA_MAX, 2)


class _Files:
    """The worker's tasks not started yet, in order. Its threads take them from the front; a recall takes them
    from the back, for a worker whose threads are idle (pool.py): what one worker holds, another can then run."""

    def __init__(self) -> None:
        self._tasks: deque[Task | None] = deque()  # None: a thread is to end
        self._ready = threading.Condition()

    def put(self, task: Task | None) -> None:
        with self._ready:
            self._tasks.append(task)
            self._ready.notify()

    def get(self) -> Task | None:
        with self._ready:
            while not self._tasks:
                self._ready.wait()
            return self._tasks.popleft()

    def take_back(self, count: int) -> list[int]:
        """Remove up to ``count`` tasks from the back; their job indexes."""
        back: list[int] = []
        with self._ready:
            while len(back) < count and self._tasks and (task := self._tasks[-1]) is not None:
                self._tasks.pop()
                back.append(task[0].index)
        return back

    def qsize(self) -> int:
        return len(self._tasks)


def _serve(files: _Files, stop: StopFlag, reporter: _Reporter, budget: Budget, threads: int) -> None:
    cap = min(budget.per_host, budget.connections)
    low = max(2, threads // 2)
    while (task := files.get()) is not None:
        job, condition = task
        if job.settings.segments > cap:
            job = replace(job, settings=_within(job.settings, cap))
        if stop.is_set():  # queued here when the stop came: never started
            reporter.result(not_started(job))
            continue
        reporter.started(job.index)
        events.emit("file_start", path=job.name, url=job.shown_url)
        try:
            result = fetch_file(job, condition, stop, reporter.tick)
        except OSError as exc:  # fetch_file's own cleanup failed: a disk failing under it
            reason = f"{exc.strerror or exc}: {exc.filename or job.path}"
            result = _failed(job, reason, local_code(exc))
        except BaseException as exc:  # a bug: the batch goes on, the user gets the traceback on stderr
            traceback.print_exc(file=sys.stderr)
            result = _failed(job, f"internal error: {type(exc).__name__}: {exc}", INTERNAL)
        reporter.result(result)  # every task it took is reported, or the parent waits for it for ever
        if files.qsize() < low:  # the parent sends more when it hears of results: tell it now, not in 50 ms
            reporter.soon()


@functools.lru_cache(maxsize=64)
def _within(settings: Settings, cap: int) -> Settings:
    """No more segments than connections one host may have: the others would only wait for a permit, and a
    range that waits looks slow to its siblings, which then split it (each split a request, and a body cut)."""
    return replace(settings, segments=cap)


def _failed(job: Job, reason: str, code: str) -> FileResult:
    return FileResult(job.index, job.name, job.shown_url, Status.FAILED, None, 0, None, 0.0, reason, code=code)


def _janitor(shared: limits.Shared, stop: StopFlag) -> None:
    """Give back idle connections that a waiting thread (of any worker) needs: a worker whose files for a
    host are done would otherwise keep that host's permits for as long as its connections stay alive."""
    while not stop.wait(_JANITOR):
        if shared.waiting():
            net.close_idle(shared.surplus)


def _exit_when_orphaned() -> None:
    """Watch bulkdl; once it is gone, exit at once, busy or not.

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


class _Reporter:
    """Gathers what the parent needs to hear and sends it as one message every ``_FLUSH`` seconds."""

    def __init__(self, pipe: Connection) -> None:
        self._pipe = pipe
        self._lock = threading.Lock()
        self._started: list[int] = []
        self._ticks: dict[int, tuple[int, int | None]] = {}  # job index → (bytes since the last message, size)
        self._results: list[FileResult] = []
        self._events: list[events.Event] = []
        self._gave_back: list[list[int]] = []
        self._closing = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reporter", daemon=True)
        self._thread.start()

    def started(self, index: int) -> None:
        with self._lock:
            self._started.append(index)

    def tick(self, index: int, n: int, size: int | None) -> None:
        with self._lock:
            self._ticks[index] = (self._ticks.get(index, (0, None))[0] + n, size)

    def result(self, result: FileResult) -> None:
        with self._lock:
            self._results.append(result)

    def event(self, event: events.Event) -> None:
        with self._lock:
            self._events.append(event)

    def gave_back(self, indexes: list[int]) -> None:
        """Answer a recall, even with nothing: the parent waits for the answer before it recalls again."""
        with self._lock:
            self._gave_back.append(indexes)
        self._wake.set()

    def soon(self) -> None:
        """Send what there is without waiting out the interval (still at most every ``_SOONEST`` s)."""
        self._wake.set()

    def close(self) -> None:
        self._closing.set()
        self._wake.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._closing.is_set():
            self._wake.wait(_FLUSH)
            self._wake.clear()
            self._flush()
            time.sleep(_SOONEST)
        self._flush()

    def _flush(self) -> None:
        with self._lock:
            if not (self._started or self._ticks or self._results or self._events or self._gave_back):
                return
            report: Report = (
                self._started,
                [(index, n, size) for index, (n, size) in self._ticks.items()],
                self._results,
                self._events,
                self._gave_back,
            )
            self._started, self._ticks, self._results, self._events, self._gave_back = [], {}, [], [], []
        try:
            self._pipe.send(report)
        except OSError:  # the parent is gone: the orphan watch ends the process
            self._closing.set()
