"""Runs inside each Dask worker process: the only worker-side module that imports ``distributed``.

A task is a batch of files of one origin host (client.py makes them). Its files run on threads with the same
per-file code as the local pool's workers (worker/fetch.py: decide, segments, resume, assembly, verification),
over one urllib3 PoolManager per worker process (net.start), and it returns their FileResults: a worker writes
the files into the shared destination and nothing else (the client alone holds the lock and writes the state).

The run's connection budget holds across the cluster, per connection, with ``distributed.Semaphore``: a socket
takes a lease of its host's semaphore (``max_leases=per_host``) and one of the run's (``connections``) as it
connects and gives both back as it closes, exactly where limits.Shared counts in a local run (net.py calls
``acquire``/``release``). Per connection rather than per task or per thread: a file's segments are
connections too, and a kept-alive connection between two files holds its host's lease, which is what the cap
is about. The cost, a scheduler round trip per connect, is small beside the TCP (and TLS) handshake it goes
with, as connections are kept alive across the files of a batch. Worker resources could only cap tasks, not
the connections a task opens. A worker that dies holding leases loses them for the scheduler's lease timeout
(``distributed.scheduler.locks.lease-timeout``, 30 s by default), after which the scheduler takes them back.

Nobody here sees who waits for a lease elsewhere, so a connection idle for longer than net.py's grace is
closed, giving its lease back (``surplus`` is always true). Host health and the rate are kept per worker
process, as the local table does (a rate the client divided among the workers it saw).

The stop flag is a ``distributed.Event`` that a watcher thread per process polls and copies into a local
event the file threads check between chunks; one that cannot be asked (the scheduler is gone) stops too, as a
local worker whose parent died does: nobody holds the destination lock any more. The same holds for a client
that died (SIGKILL, the OOM killer, its machine) while the scheduler stays up: Dask lets a running task run on,
so the client counts a ``distributed.Variable`` up every few seconds, and a worker that sees it stand still for
``client_lost_after`` stops the run's files, parts kept, rather than write on into a dest whose lock is gone.
"""

from __future__ import annotations

import contextlib
import fcntl
import multiprocessing
import os
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from distributed import Event, Semaphore, Variable, get_client, get_worker

from ..errors import INTERNAL, WORKER_BUSY, local_code
from ..values import Budget, FileResult, Job, Status
from ..worker import events, limits, net
from ..worker.crossing import Task, not_started
from ..worker.fetch import fetch_file
from ..worker.meter import Send
from ..worker.retry import Cancelled, StopFlag
from . import claim
from .done import Done

_LEASE_WAIT = 0.2  # seconds one ask for a lease waits before the stop flag is looked at again
_WATCH = 0.5  # seconds one ask whether the run is stopping waits at the scheduler
_JANITOR = 0.05  # seconds between two looks for idle connections to give back
_TICKS = 0.5  # seconds between two messages of a worker process's byte progress
# One topic for every run's progress, each message naming its run: the scheduler keeps a bounded log per
# topic for ever, so a topic per run would grow a long-lived scheduler by one each night.
PROGRESS_TOPIC = "bulkdl-progress"


@dataclass(frozen=True, slots=True)
class Config:
    """What every task of a run carries: plain values (the semaphores and the event are named after ``run``)."""

    run: str  # the run's id, random per run
    budget: Budget  # limit_rate: this worker process's share of the run's
    files: int  # threads per task, at most
    max_idle_per_host: int
    client_lost_after: float  # seconds the client's heartbeat may stand still before its files stop here
    busy_wait: float  # seconds a task waits for a worker process serving another run before failing its files
    events: bool  # gather the files' events for the run's log (-v, --log-file), as crossing.Config's
    done: str  # the run's directory of what its tasks finished (done.py)
    writers: str  # dest's writers lock (parent/lock.py), held shared while this process may write into dest
    locks: str  # the directory of the files' claims (claim.py)


# What a task returns: its files' results, and their events for the run's log (empty when it keeps none).
Outcome = tuple[list[FileResult], list[events.Event]]


def semaphore_name(run: str, key: str) -> str:
    return f"bulkdl-{run}-{key}"


def stop_event_name(run: str) -> str:
    return f"bulkdl-{run}-stop"


def heartbeat_name(run: str) -> str:
    return f"bulkdl-{run}-alive"


def probe_path(dest: Path, token: str) -> Path:
    return dest / ".bulkdl" / f"shared-probe-{token}"


def probe(path: str, token: str) -> str | None:
    """Write ``token`` at ``path`` (in dest/.bulkdl/, which the client made); None, or why it could not."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        return f"cannot write {path} there: {exc.strerror or exc}"
    try:
        os.write(fd, token.encode())
        os.fsync(fd)  # a shared mount shows another machine what is written and closed (close-to-open)
    finally:
        os.close(fd)
    return None


def run_batch(config: Config, tasks: list[Task]) -> Outcome:
    """The task: every file of the batch on up to ``config.files`` threads; each one's result, in any order,
    and the events its files told."""
    with Done(Path(config.done) / str(tasks[0][0].index)) as done:
        # A rerun (the worker of an earlier attempt died) hands back what that attempt finished.
        left = [item for item in tasks if item[0].index not in done.found]
        found = [done.found[item[0].index] for item in tasks if item[0].index in done.found]
        try:
            with _joined(config) as run:
                return found + _serve(run, config, left, done.add), run.events_of({job.name for job, _ in tasks})
        except _Busy as busy:
            return found + [_busy(job, config, busy.args[0]) for job, _ in left], []


def _serve(run: _Run, config: Config, tasks: list[Task], finished: Callable[[FileResult], None]) -> list[FileResult]:
    pending = deque(tasks)
    results: list[FileResult] = []
    cap = min(config.budget.per_host, config.budget.connections)

    def serve() -> None:
        while True:
            try:
                job, condition = pending.popleft()
            except IndexError:
                return
            with claim.claimed(Path(config.locks), job.name) as mine:
                result = _one(job, condition, run.stop, cap, run.tick) if mine else _claimed(job)
            finished(result)
            results.append(result)

    threads = [threading.Thread(target=serve, name=f"file-{i}") for i in range(min(config.files, len(tasks)))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def _one(job: Job, condition: Any, stop: StopFlag, cap: int, send: Send) -> FileResult:
    """One file, as worker/serve.py runs one in a local worker (the same caps, the same failures)."""
    if job.settings.segments > cap:
        job = replace(job, settings=replace(job.settings, segments=cap))
    if stop.is_set():
        return not_started(job)
    events.emit("file_start", path=job.name, url=job.shown_url)
    try:
        return fetch_file(job, condition, stop, send)
    except OSError as exc:  # fetch_file's own cleanup failed: a disk failing under it
        return failed(job, f"{exc.strerror or exc}: {exc.filename or job.path}", local_code(exc))
    except BaseException as exc:  # a bug: the batch goes on, the traceback goes to the worker's log
        traceback.print_exc(file=sys.stderr)
        return failed(job, f"internal error: {type(exc).__name__}: {exc}", INTERNAL)


def _claimed(job: Job) -> FileResult:
    reason = (
        "not started: another process is writing it now (a Dask worker the scheduler took for dead, still "
        "running?); the next run fetches it"
    )
    return failed(job, reason, WORKER_BUSY)


def failed(job: Job, reason: str, code: str) -> FileResult:
    """A file that failed before or outside fetch_file (which says its own failures)."""
    return FileResult(job.index, job.name, job.shown_url, Status.FAILED, None, 0, None, 0.0, reason, code=code)


def _busy(job: Job, config: Config, other: str) -> FileResult:
    reason = (
        f"not started: the Dask worker {get_worker().address} was still serving bulkdl run {other} after "
        f"{config.busy_wait:g} s (one worker process serves one run at a time: give each run its own workers, "
        "or run them one after the other); the next run fetches it"
    )
    return failed(job, reason, WORKER_BUSY)


class _Permits(limits.Shared):
    """limits.Shared for one worker process, whose connection caps are leases of the cluster's semaphores."""

    def __init__(self, config: Config, scheduler: Any, loop: Any) -> None:
        # This process's own table still says which hosts are down and paces the rate's share.
        super().__init__(config.budget, multiprocessing.get_context("spawn"))
        self._run, self._scheduler, self._loop = config.run, scheduler, loop
        self._semaphores: dict[str, Semaphore] = {}
        self._made = threading.Lock()
        self._total = self._semaphore("connections", config.budget.connections)

    def _semaphore(self, key: str, leases: int) -> Semaphore:
        with self._made:
            found = self._semaphores.get(key)
            if found is None:
                name = semaphore_name(self._run, key)
                found = Semaphore(leases, name, scheduler_rpc=self._scheduler, loop=self._loop)
                self._semaphores[key] = found
            return found

    def acquire(self, key: str, stop: StopFlag, meanwhile: Callable[[], None] = lambda: None) -> None:
        super().acquire(key, stop, meanwhile)
        host = self._semaphore(key, self.budget.per_host)
        try:
            _lease(host, stop, meanwhile)  # the host's first: a wait for it must not hold one of the run's
            try:
                _lease(self._total, stop, meanwhile)
            except BaseException:
                host.release()
                raise
        except BaseException:
            super().release(key)
            raise

    def release(self, key: str) -> None:
        # A lease the scheduler cannot be told of (it is gone) lapses there by itself after its lease timeout.
        for semaphore in (self._total, self._semaphore(key, self.budget.per_host)):
            with contextlib.suppress(Exception):
                semaphore.release()
        super().release(key)

    def surplus(self, key: str) -> bool:
        return True  # who waits for a lease is on other machines: every connection idle past the grace goes

    def close(self) -> None:
        for semaphore in self._semaphores.values():
            refresh = getattr(semaphore, "refresh_callback", None)  # none with lease-timeout: inf
            if refresh is not None:
                refresh.stop()


def _lease(semaphore: Semaphore, stop: StopFlag, meanwhile: Callable[[], None]) -> None:
    try:
        while not semaphore.acquire(timeout=_LEASE_WAIT):
            meanwhile()
            if stop.is_set():
                raise Cancelled
    except Cancelled:
        raise
    except Exception:  # the scheduler that counts the leases is gone, and with it the run: stop, parts kept
        raise Cancelled from None


class _Run:
    """A run's presence in this worker process, for as long as one of its tasks runs here."""

    def __init__(self, config: Config) -> None:
        worker = get_worker()  # only in the task's own thread
        self._worker = worker
        self.config = config
        self.users = 0
        self.stop = threading.Event()
        self._done = threading.Event()
        self._event = Event(stop_event_name(config.run), client=get_client())
        self._heartbeat = Variable(heartbeat_name(config.run), client=get_client())
        self._beat: Any = None
        self._beat_seen = time.monotonic()
        # events.py's sink is the process's, and so is this run: the tasks of the run running here share it,
        # and each takes back the events of its own files (every file event names its path).
        self._told: list[events.Event] = []
        self._told_lock = threading.Lock()
        if config.events:
            events.install(self._tell)
        self._ticks: dict[int, list[Any]] = {}  # index: [bytes since the last message, size if known]
        self._ticks_lock = threading.Lock()
        self.permits = _Permits(config, worker.scheduler, worker.loop)
        net.start(config.max_idle_per_host)
        limits.install(self.permits, self.stop)
        self._threads = [
            threading.Thread(target=self._watch, name="bulkdl-stop-watch", daemon=True),
            threading.Thread(target=self._janitor, name="bulkdl-janitor", daemon=True),
            threading.Thread(target=self._ticker, name="bulkdl-progress", daemon=True),
        ]
        self._ask()
        # Shared, for as long as this process may write into dest: a later run waits for it (parent/lock.py).
        self._writing = os.open(config.writers, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self._writing, fcntl.LOCK_SH)
        # Its content names the run that holds dest (client.py writes it, lock.py when a later run takes
        # dest): a task of a killed bulkdl that starts only now (it waited in _joined) must write nothing.
        holder = os.pread(self._writing, 64, 0).decode(errors="replace").strip()
        if holder != config.run:
            print(
                f"bulkdl: run {config.run} no longer holds its dest ({holder or 'none'} does); its files stop here",
                file=sys.stderr,
            )
            self.stop.set()
        for thread in self._threads:
            thread.start()

    def _ask(self, timeout: float = 0.0) -> None:
        try:
            stopping = self._event.wait(timeout) if timeout else self._event.is_set()
        except Exception:  # the scheduler is gone: so is the client's lock, and nothing more may be written
            stopping = True
        if stopping:
            self.stop.set()

    def _watch(self) -> None:
        while not self._done.is_set() and not self.stop.is_set():
            self._ask(_WATCH)
            self._mind_the_client()

    def _mind_the_client(self) -> None:
        try:
            beat = self._heartbeat.get(timeout=_WATCH)
        except Exception:  # not set (yet, or any more), or the scheduler is gone, which _ask sees
            return
        if beat != self._beat:
            self._beat, self._beat_seen = beat, time.monotonic()

    def _client_lost(self) -> bool:
        """Whether no new beat came for client_lost_after: judged apart from the watcher, which a scheduler
        that hangs (stopped, wedged) would hold in its call for ever, and with it any judgement it made."""
        if time.monotonic() - self._beat_seen <= self.config.client_lost_after or self.stop.is_set():
            return False
        print(
            f"bulkdl: the client of run {self.config.run} has not been heard from for "
            f"{self.config.client_lost_after:g} s; its files stop here, parts kept",
            file=sys.stderr,
        )
        return True

    def _tell(self, event: events.Event) -> None:
        with self._told_lock:
            self._told.append(event)

    def events_of(self, paths: set[str]) -> list[events.Event]:
        """The events told so far of the files at ``paths``, taken out of the process's list."""
        with self._told_lock:
            mine = [e for e in self._told if e[2].get("path") in paths]
            self._told = [e for e in self._told if e[2].get("path") not in paths]
        return mine

    def tick(self, index: int, n: int, size: int | None) -> None:
        """A file's progress (meter.Send), gathered over the process's files until the next message."""
        with self._ticks_lock:
            found = self._ticks.setdefault(index, [0, size])
            found[0] += n
            found[1] = size if size is not None else found[1]

    def _ticker(self) -> None:
        while not self._done.wait(_TICKS):
            with self._ticks_lock:
                ticks, self._ticks = self._ticks, {}
            if ticks:  # a batched message to the scheduler, which hands it to the client (client.py)
                message = {"run": self.config.run, "ticks": [[index, n, size] for index, (n, size) in ticks.items()]}
                with contextlib.suppress(Exception):  # progress only: a scheduler gone is seen elsewhere
                    self._worker.log_event(PROGRESS_TOPIC, message)

    def _janitor(self) -> None:
        looked = time.monotonic()
        while not self._done.wait(_JANITOR):
            now = time.monotonic()
            if now - looked > 2.0:  # this process was stalled itself: the watcher gets to look again first
                self._beat_seen = max(self._beat_seen, now)
            looked = now
            net.close_idle(self.permits.surplus)
            if self._client_lost():
                self.stop.set()

    def end(self) -> None:
        self._done.set()
        os.close(self._writing)  # its files' threads are done: so is the last write into dest
        for thread in self._threads:  # the watcher may be in a call a hung scheduler never answers
            thread.join(timeout=3 * _WATCH)
        net.stop()  # every socket closes, giving its leases back
        limits.install(None, threading.Event())
        events.install(None)
        self.permits.close()


class _Busy(Exception):
    """This worker process still serves the run ``args[0]``."""


_lock = threading.Condition()
_current: _Run | None = None


@contextlib.contextmanager
def _joined(config: Config) -> Iterator[_Run]:
    """The run this process serves, started by its first task here and ended by its last; _Busy after
    ``config.busy_wait`` seconds of waiting for another run's to end.

    limits and net are per process, so one worker process serves one run at a time: a task of another run
    (two bulkdl runs sharing a cluster) waits here until this one's tasks are done. For a bounded time: a run
    whose files never end here (a hung server read) must not hold every later run's tasks for ever.
    """
    global _current
    with _lock:
        if not _lock.wait_for(lambda: _current is None or _current.config.run == config.run, config.busy_wait):
            assert _current is not None
            raise _Busy(_current.config.run)
        if _current is None:
            _current = _Run(config)
        run = _current
        run.users += 1
    try:
        yield run
    finally:
        with _lock:
            run.users -= 1
            if run.users == 0:
                _current = None
                try:
                    run.end()
                finally:  # whatever end() met, the tasks waiting for this process go on
                    _lock.notify_all()
