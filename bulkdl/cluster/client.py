"""The Dask executor, in the bulkdl process: the only client-side module that imports ``distributed``.

It does what parent/pool.py does for a local run, over a Dask cluster: the files go out as tasks
(task.run_batch), each a batch of files of one origin host, and their results come back as lists of
FileResults, handed to the parent one file at a time as tasks complete, so the state, summary, JSON report and
exit code are the same code as a local run's. Only this process holds the destination lock and writes the
state; workers only write the files into dest, which must therefore be a mount every worker shares at the same
path, checked at the start (``_check_shared``).

Keys are ``bulkdl-<run>-<first index of the batch>``, ``pure=False``: downloading has side effects, and a
task's key must say which files it is. A worker that dies mid-task has it rescheduled by Dask; the parts its
files had written let them resume. A task that killed its workers ``allowed-failures`` times (KilledWorker)
fails its own files, not the run. A scheduler lost mid-run ends the run with one error (SchedulerLost) after
every result already in was recorded: the parts are kept, and the next run resumes.

Stopping (Ctrl-C, SIGTERM, --max-duration) sets the run's ``distributed.Event``, which the workers' files see
at their next chunk; the batches finish with their interrupted results, and whatever has not come back after
the local pool's grace period is cancelled and reported interrupted, as the local pool does.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import queue
import secrets
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

import dask.config
from dask.utils import parse_timedelta
from distributed import Client, Event, Future, KilledWorker, Semaphore, Variable, as_completed

from ..errors import (
    CLIENT_LOST,
    INTERNAL,
    NO_WORKERS,
    SCHEDULER_LOST,
    WORKER_DIED,
    ClusterError,
    DestNotShared,
    NoWorkers,
    SchedulerLost,
    SchedulerUnreachable,
)
from ..parent import lock
from ..values import Budget, FileResult, Job, Status
from ..worker import limits
from ..worker.crossing import Task, not_started
from ..worker.events import Event as Told
from ..worker.meter import Send
from . import claim, task
from .done import run_dir
from .task import Config

GRACE_SECONDS = 1.5  # as the local pool's: how long stopping files get to hand their results back
_CALL_SECONDS = 2.0  # the longest a stop or the end waits for the scheduler to answer one of its calls
MAX_BATCH = 32  # files per task, at most: the scheduler's per-task cost is milliseconds, a file's far more
_POLL_SECONDS = 0.05
# Dask config keys of bulkdl's own (``DASK_BULKDL__BUSY_WAIT=10m`` in the client's environment, or a Dask
# config file): how long a worker may miss the client's heartbeat before it stops the run's files, and how long
# a task waits for a worker process busy with another run before it fails its files (worker_busy).
CLIENT_LOST_AFTER, BUSY_WAIT = ("bulkdl.client-lost-after", "20s"), ("bulkdl.busy-wait", "5 minutes")
# Why a file failed when the cluster ended the run before it (the run's own line says the rest).
_UNFINISHED = {
    SCHEDULER_LOST: "the Dask scheduler went away or stopped answering during the run",
    NO_WORKERS: "the Dask cluster had no worker left",
}
_CUT_OFF = (
    "the Dask worker stopped it: it had not heard from this bulkdl for {:g} s (bulkdl.client-lost-after: was "
    "bulkdl paused, or its machine asleep?); its parts are kept for the next run"
)
OUT_OF_TIME = "the run's time budget (--max-duration) ran out; the next run fetches it, from its parts if any"


def batches(tasks: Iterable[Task], slots: int) -> list[list[Task]]:
    """The tasks grouped by origin host, in their order, cut so that ``slots`` threads all get work, twice."""
    by_host: dict[str, list[Task]] = {}
    for item in tasks:
        by_host.setdefault(_host(item[0]), []).append(item)
    cut: list[list[Task]] = []
    for group in by_host.values():
        size = max(1, min(MAX_BATCH, math.ceil(len(group) / (2 * max(1, slots)))))
        cut += [group[i : i + size] for i in range(0, len(group), size)]
    return cut


class DaskExecutor:
    """Runs tasks on the Dask cluster at ``address``; the same contract as pool.Batch."""

    def __init__(
        self, address: str, budget: Budget, dest: Path, on_events: Callable[[list[Told]], None] | None = None
    ) -> None:
        """``on_events`` receives the files' events for the run's log; None: the workers gather none."""
        self._address, self._budget, self._dest, self._on_events = address, budget, dest, on_events
        self._run = secrets.token_hex(8)
        # bulkdl says itself what went wrong, in one line: Dask's own log (a lost scheduler is an ERROR with a
        # traceback, and another as the client closes) would bury it.
        for name in ["distributed", *logging.root.manager.loggerDict]:
            if name.split(".")[0] == "distributed":  # Dask's logging config sets some of them one by one
                logging.getLogger(name).setLevel(logging.CRITICAL)
        try:
            # How long to try: Dask's own distributed.comm.timeouts.connect (30 s unless configured).
            self._client = Client(address, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as exc:
            raise SchedulerUnreachable(
                f"no Dask scheduler answers at {address} ({exc}); start one with `dask scheduler` "
                "and its workers with `dask worker ADDRESS`, or correct --scheduler"
            ) from None
        self._event = Event(task.stop_event_name(self._run), client=self._client)
        self._futures: dict[Future[Any], list[Task]] = {}
        self._asked = 0  # stop requests (SIGINT, SIGTERM) received while running
        self._handled = 0
        self._stopping = False
        self._out_of_time = False
        self._grace_ends: float | None = None
        self._done: Any = None  # the as_completed of the run's tasks
        self._lost_after = _seconds(*CLIENT_LOST_AFTER)
        self._patience = _connect_timeout()  # what _mind_the_cluster allows, read once: it looks every 50 ms
        self._answered = self._staffed = time.monotonic()  # by the heartbeat thread: the scheduler's last answer
        self._looked = self._answered  # when the run loop last judged the cluster
        self._problem: str | None = None
        self._heartbeat = Variable(task.heartbeat_name(self._run), client=self._client)
        self._closing = threading.Event()
        self._caps: set[str] = set()  # the names of the run's semaphores (task.py), each made by a first lease
        self._heard: queue.SimpleQueue[list[list[Any]]] = queue.SimpleQueue()  # progress, from the client's loop
        self._beating = threading.Thread(target=self._beat, name="bulkdl-heartbeat", daemon=True)

    def run(
        self, tasks: Iterable[Task], on_tick: Send, on_result: Callable[[FileResult], None], on_poll: Callable[[], None]
    ) -> bool:
        """Send every task; hand each file's result to ``on_result`` as its batch completes, and the bytes
        the workers tell of (task.PROGRESS_TOPIC, every half second) to ``on_tick``."""
        listed = list(tasks)
        open_ = {item[0].index: item[0] for item in listed}
        self._caps = {"connections", *(_host(job) for job in open_.values())}
        threads = self._workers()
        self._check_shared(list(threads))
        # What a client killed before left (this one holds the lock now), then this run's own (done.py).
        shutil.rmtree(run_dir(self._dest, self._run).parent, ignore_errors=True)
        run_dir(self._dest, self._run).mkdir(parents=True)
        claim.locks_dir(self._dest / ".bulkdl").mkdir(exist_ok=True)
        config = self._config(threads)
        lock.mark_writers(self._dest, self._run)  # before any task: what a task of an earlier run checks
        self._heartbeat.set(0)
        self._answered = self._staffed = self._looked = time.monotonic()
        self._beating.start()
        self._client.subscribe_topic(task.PROGRESS_TOPIC, self._hear)
        for batch in batches(listed, sum(threads.values())):
            key = f"bulkdl-{self._run}-{batch[0][0].index}"
            self._futures[self._client.submit(task.run_batch, config, batch, key=key, pure=False)] = batch
        # Results are fetched in the background: a result on its way when the scheduler goes cannot block the loop.
        done = as_completed(list(self._futures), with_results=True, raise_errors=False, loop=self._client.loop)
        self._done = done
        with self._signals_deferred():
            try:
                while open_:
                    self._mind_the_stop(open_, on_result)
                    for future, outcome in done.next_batch(block=False) if done.has_ready() else ():
                        self._collect(future, outcome, open_, on_result)
                    if open_ and self._client.status != "running":
                        raise self._lost(len(open_))
                    self._mind_the_cluster(len(open_))
                    while not self._heard.empty():
                        for index, n, size in self._heard.get():
                            on_tick(index, n, size)
                    on_poll()
                    time.sleep(_POLL_SECONDS)
            except ClusterError as exc:  # mid-run: what came back is the run's; every other file fails with it
                self._problem = str(exc)
                reason = f"not finished: {_UNFINISHED.get(exc.code, exc.code)}; its parts are kept for the next run"
                for job in list(open_.values()):
                    on_result(task.failed(job, reason, exc.code))
                open_.clear()
        return bool(self._asked) or (self._stopping and not self._out_of_time)

    @property
    def problem(self) -> str | None:
        return self._problem

    def _workers(self) -> dict[str, int]:
        """Each worker's address and threads; waits a little for a first one."""
        try:
            self._client.wait_for_workers(1, timeout=_connect_timeout())
        except TimeoutError:
            raise NoWorkers(
                f"the Dask scheduler at {self._address} has no workers; start them with `dask worker {self._address}`"
            ) from None
        info: dict[str, Any] = self._client.scheduler_info(n_workers=-1)["workers"]
        return {address: int(worker.get("nthreads", 1)) for address, worker in info.items()}

    def _config(self, threads: dict[str, int]) -> Config:
        budget, slots = self._budget, max(1, sum(threads.values()))
        useful = min(budget.connections, budget.per_host * len(budget.hosts) or budget.connections)
        rate = budget.limit_rate
        share = replace(budget, limit_rate=None if rate is None else max(1, rate // len(threads)), deadline=None)
        files = max(1, math.ceil(useful / slots))
        idle = min(budget.per_host, files * 2)
        told = self._on_events is not None
        marks = str(run_dir(self._dest, self._run))
        writers, locks = str(lock.writers_path(self._dest)), str(claim.locks_dir(self._dest / ".bulkdl"))
        waits = (self._lost_after, _seconds(*BUSY_WAIT))
        return Config(self._run, share, files, idle, *waits, told, marks, writers, locks)

    def _hear(self, event: tuple[float, Any]) -> None:
        """Progress from a worker (in the client's event loop: only queued here)."""
        message = event[1]
        if isinstance(message, dict) and message.get("run") == self._run:
            self._heard.put(message["ticks"])

    def _beat(self) -> None:
        """Count the heartbeat up, in a thread of its own so that no slow step of the run can miss a beat,
        and note when the scheduler last answered and last had a worker (``_mind_the_cluster``)."""
        beat = 0
        while not self._closing.wait(min(2.0, self._lost_after / 4)):
            beat += 1
            with contextlib.suppress(Exception):  # a scheduler gone: the run loop says so
                self._heartbeat.set(beat)
                staffed = bool(self._client.nthreads())
                self._answered = time.monotonic()
                if staffed:
                    self._staffed = self._answered

    def _mind_the_cluster(self, left: int) -> None:
        """End the run when the scheduler has stopped answering (hung, not gone: its connection stays up), or
        has had no worker, for Dask's connect timeout: the tasks would wait there for ever, and so would cron."""
        now, limit = time.monotonic(), self._patience
        if now - self._looked > 2.0:  # this process was paused itself (Ctrl-Z, a machine asleep): look again
            self._answered = self._staffed = now
        self._looked = now
        if now - self._answered > limit:
            raise SchedulerLost(
                f"the Dask scheduler at {self._address} has not answered for {limit:g} s; {left} files not "
                "finished keep their parts: restart the scheduler and its workers, and run bulkdl again"
            )
        if now - self._staffed > limit:
            raise NoWorkers(
                f"the Dask scheduler at {self._address} has had no worker for {limit:g} s; {left} files not "
                f"finished keep their parts: start workers (`dask worker {self._address}`) and run bulkdl again"
            )

    def _check_shared(self, workers: list[str]) -> None:
        """Every worker writes a random token into dest/.bulkdl/; this process must read each one back."""
        token = secrets.token_hex(16)
        paths = [task.probe_path(self._dest, f"{token}-{i}") for i in range(len(workers))]
        futures = [
            self._client.submit(
                task.probe, str(path), path.name, key=f"bulkdl-{self._run}-probe-{i}", workers=[address], pure=False
            )
            for i, (address, path) in enumerate(zip(workers, paths, strict=True))
        ]
        try:  # with a timeout: a task pinned to a worker that left would wait for it for ever
            problems = [future.result(timeout=_connect_timeout()) for future in futures]
        except Exception as exc:  # a worker gone meanwhile, or the scheduler: say it plainly
            raise ClusterError(f"the Dask workers could not check dest: {type(exc).__name__}: {exc}") from None
        try:
            for address, path, problem in zip(workers, paths, problems, strict=True):
                seen = _read(path)
                if problem is not None or seen != path.name:
                    why = problem or f"what it wrote at {path} is {'missing' if seen is None else 'another file'} here"
                    raise DestNotShared(
                        f"the Dask worker {address} does not see the destination {self._dest} ({why}); with "
                        "--scheduler, dest must be a directory all workers mount at the same path (NFS, a shared mount)"
                    )
        finally:
            for path in paths:
                path.unlink(missing_ok=True)

    def _collect(
        self, future: Future[Any], outcome: Any, open_: dict[int, Job], on_result: Callable[[FileResult], None]
    ) -> None:
        """Hand on the results of one task: its own, or what its end means for each of its files."""
        batch = self._futures.pop(future, None)
        if batch is None:  # cancelled after the grace period, and collected then
            return
        jobs = [job for job, _ in batch if job.index in open_]
        again = future.status != "cancelled" and not _over(future, outcome)
        if again and not self._stopping and self._client.status == "running":
            # Its result was lost with the worker that held it (or is being fetched again): Dask computes it again.
            self._futures[future] = batch
            self._done.add(future)
            return
        if future.status == "finished" and isinstance(outcome, tuple):
            results, told = outcome
            if told and self._on_events is not None:  # before the results: a file's events precede its end
                self._on_events(told)
        elif future.status == "error":  # its exception is here already (outcome holds it as an exc_info)
            results = [_failed(job, future.exception()) for job in jobs]
        elif self._stopping:  # cancelled by a stop
            results = [not_started(job, "stopped") for job in jobs]
        else:
            raise self._lost(len(open_))
        for result in results:
            if result.index in open_:
                del open_[result.index]
                on_result(self._noted(result))
        for job in (job for job in jobs if job.index in open_):  # a task that forgot one must not hang the run
            del open_[job.index]
            on_result(_failed(job, RuntimeError("its task returned no result for it")))

    def _noted(self, result: FileResult) -> FileResult:
        if self._out_of_time and result.status == Status.INTERRUPTED:
            return replace(result, notes=(*result.notes, OUT_OF_TIME))
        if result.status == Status.INTERRUPTED and not self._stopping:  # nobody here asked: a worker did
            return replace(result, status=Status.FAILED, error=_CUT_OFF.format(self._lost_after), code=CLIENT_LOST)
        return result

    def _lost(self, left: int) -> SchedulerLost:
        return SchedulerLost(
            f"lost the Dask scheduler at {self._address} during the run; {left} files not finished keep their "
            "parts: start the scheduler and its workers again and run bulkdl again to resume them"
        )

    def _mind_the_stop(self, open_: dict[int, Job], on_result: Callable[[FileResult], None]) -> None:
        deadline = self._budget.deadline
        if deadline is not None and not self._stopping and time.monotonic() >= deadline:
            self._out_of_time = True
            self._stop()
        while self._handled < self._asked:
            self._handled += 1
            self._stop(at_once=self._stopping)
        if self._grace_ends is not None and time.monotonic() >= self._grace_ends:
            futures = list(self._futures)
            _bounded(lambda: self._client.cancel(futures, force=True), _CALL_SECONDS)
            for batch in self._futures.values():  # what they had done is lost with them, parts kept
                for job in (job for job, _ in batch if job.index in open_):
                    del open_[job.index]
                    on_result(self._noted(not_started(job, "stopped")))
            self._futures.clear()

    def _stop(self, at_once: bool = False) -> None:
        if not self._stopping:
            self._stopping = True
            # A scheduler gone, or hung: its workers stop by themselves (task.py), and this run goes on to end.
            _bounded(self._event.set, _CALL_SECONDS)
            self._grace_ends = time.monotonic() + GRACE_SECONDS
        if at_once:
            self._grace_ends = time.monotonic()

    @contextlib.contextmanager
    def _signals_deferred(self) -> Iterator[None]:
        """Ctrl-C and SIGTERM only count a request to stop, which the loop acts on between steps."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def ask(signum: int, frame: FrameType | None) -> None:
            self._asked += 1

        previous: dict[signal.Signals, Any] = {}
        try:
            for number in (signal.SIGINT, signal.SIGTERM):
                previous[number] = signal.signal(number, ask)
            yield
        finally:
            for number, handler in previous.items():
                signal.signal(number, signal.SIG_DFL if handler is None else handler)

    def close(self) -> None:
        self._closing.set()
        if self._beating.is_alive():
            self._beating.join(timeout=_CALL_SECONDS)  # in a call a hung scheduler never answers, it is left
        _bounded(self._forget, _CALL_SECONDS)
        shutil.rmtree(run_dir(self._dest, self._run), ignore_errors=True)

    def _forget(self) -> None:
        """What the run leaves on the scheduler goes, and the connection to it."""
        futures = list(self._futures)
        running = bool(futures)
        # Each step alone: one that fails (a lost scheduler has nothing left to cancel or close) skips no other.
        steps: list[Callable[[], object]] = [
            lambda: self._client.unsubscribe_topic(task.PROGRESS_TOPIC),
            self._heartbeat.delete,
        ]
        if running:  # tasks still out: the Event stays set, for them to see (a cleared one they could miss)
            steps += [self._event.set, lambda: self._client.cancel(futures, force=True)]
        else:  # an Event cleared with nobody waiting is forgotten by the scheduler
            steps.append(self._event.clear)
        # So is a closed semaphore; a task still out that asks it for a lease then stops.
        steps += [functools.partial(self._close_semaphore, key) for key in self._caps]
        steps.append(lambda: self._client.close(timeout=2))
        for step in steps:
            with contextlib.suppress(Exception):
                step()

    def _close_semaphore(self, key: str) -> None:
        name = task.semaphore_name(self._run, key)
        Semaphore(name=name, scheduler_rpc=self._client.scheduler, loop=self._client.loop).close()


def _bounded(call: Callable[[], object], seconds: float) -> bool:
    """Whether ``call``, run in a thread of its own, returned within ``seconds``. Dask's Event, Variable and
    cancel calls have no timeout of their own: a scheduler that hangs (SIGSTOP, wedged) never answers them,
    and Ctrl-C must still end the run. A call left waiting is in a daemon thread, gone with the process."""
    returned = threading.Event()

    def run() -> None:
        with contextlib.suppress(Exception):
            call()
            returned.set()

    threading.Thread(target=run, name="bulkdl-scheduler-call", daemon=True).start()
    return returned.wait(seconds)


def _host(job: Job) -> str:
    """The key of the job's origin host, as limits.py and task.py name its connection cap."""
    parts = urlsplit(job.url)
    return limits.host_key(parts.hostname or "", parts.port, parts.scheme)


def _over(future: Future[Any], outcome: Any) -> bool:
    """Whether the task has ended for good: with its results in hand, or with an error."""
    return (future.status == "finished" and isinstance(outcome, tuple)) or future.status == "error"


def _connect_timeout() -> float:
    return _seconds("distributed.comm.timeouts.connect", "30s")


def _seconds(key: str, default: str) -> float:
    return float(parse_timedelta(dask.config.get(key, default), default="s"))


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None


def _failed(job: Job, exc: BaseException | None) -> FileResult:
    if isinstance(exc, KilledWorker):
        reason = "the Dask workers running it died as often as the scheduler's allowed-failures; its parts are kept"
        return task.failed(job, reason, WORKER_DIED)
    # A bug in the task, or something Dask said about it.
    return task.failed(job, f"the Dask task running it failed: {type(exc).__name__}: {exc}", INTERNAL)
