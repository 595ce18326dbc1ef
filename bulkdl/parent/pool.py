"""The process pool: the only module that starts, feeds, watches and stops worker processes.

``workers`` processes (CPU for hashing and copying) each run many files at once on threads
(worker/serve.py), so the files in flight are the run's connection budget, not a number of processes. Each
worker has a task pipe and a result pipe of its own: the parent sends it lists of tasks, keeping it a little
ahead of what its threads can take, and reads a message from it at most every 50 ms with what started,
the bytes received and the results. Only the parent draws.

Stopping is the parent's decision. Workers ignore SIGINT and SIGTERM (a terminal or ``kill`` of the process
group reaches them too) and watch a shared flag between chunks, so a stop leaves every part whole. A worker
that does not return within a grace period, or any worker on a second interrupt, is killed: part files are
only ever appended to and sidecars replaced atomically, so a kill loses time, never correctness. A worker
whose bulkdl process vanished (``kill -9``, the OOM killer) exits at once rather than write into a
destination nobody locks (serve.py).

The run's time budget (``Budget.deadline``, from --max-duration) stops the batch the same way: no file
starts after it and running ones stop at their next read, parts kept. Every byte of a part is a point to
resume from, so running on to the end of a chunk would only spend time past the budget for nothing.

A worker killed from outside (the OOM killer) may hold permits of the run's budget (worker/limits.py), or
its lock: the pool then starts every worker again with a new budget table, and every unfinished task goes
back to wait, its parts resuming. Only a file that was running in a worker that died twice fails.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import multiprocessing.connection
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

from ..errors import WORKER_DIED
from ..values import Budget, FileResult, Job, Status
from ..worker import crossing, limits
from ..worker.crossing import Task, not_started
from ..worker.events import Event
from ..worker.meter import Send
from . import processes

GRACE_SECONDS = 1.5
MAX_WORKER_DEATHS = 2  # a file running in a worker that died this often fails; the others are tried again
MAX_POOL_RESTARTS = 10  # a bound even if a dying worker never got to say which file it was on
_POLL_SECONDS = 0.1
_BATCH = 64  # tasks per message to a worker, at most
_AHEAD_SECONDS = 0.1  # work to keep sent to each worker, at the pace it reports results
_MAX_AHEAD = 256
_PACE_RESULTS = 256  # the results a worker's pace is measured over
OUT_OF_TIME = "the run's time budget (--max-duration) ran out; the next run fetches it, from its parts if any"


@dataclass(eq=False)
class _Worker:
    process: BaseProcess
    tasks: Connection  # the parent's end: it writes
    results: Connection | None  # the parent's end: it reads; None once closed (the worker is gone)
    assigned: set[int] = field(default_factory=set)  # job indexes sent to it and not yet reported
    started: set[int] = field(default_factory=set)  # those its threads have begun
    told_to_end: bool = False
    finished: deque[float] = field(default_factory=lambda: deque(maxlen=_PACE_RESULTS))  # when its last results came
    recalls: int = 0  # recalls sent to it and not answered yet

    def ahead(self, base: int, files: int, now: float) -> int:
        """Tasks to keep sent to it: ``base``, or what its threads finish in ``_AHEAD_SECONDS`` if more.

        A small file takes a thread half a millisecond, and the parent hears of results every few
        milliseconds at best: a fixed few tasks ahead left a worker's threads idle between two sends (a
        re-run of 20,000 small files took 8.5 s with 8 ahead per worker, 5.0-5.3 s at its pace). Big files come
        back a few a second, and keep the few: what one worker holds, another can take back only at the end.
        """
        if len(self.finished) < 2:
            return base
        # Up to now, so that a worker busy with big files since its last small ones is slow, and over no less
        # than the interval it predicts: results that came in one message (two big files that ended in the
        # same 50 ms) say nothing of a pace.
        span = max(now - self.finished[0], _AHEAD_SECONDS)
        wanted = files + math.ceil((len(self.finished) - 1) / span * _AHEAD_SECONDS)
        return max(base, min(_MAX_AHEAD, wanted))


class Batch:
    """Runs tasks over ``workers`` processes until all are done or the run is interrupted.

    Every task stays open, keyed by its job, until its result is reported, whichever worker has it or while
    none does: a stop reports each open task no worker has as interrupted, so none can drop out of the
    summary. While the batch runs, Ctrl-C and SIGTERM only count a request to stop, which the loop acts on
    between steps, so no interrupt lands between sending a task and recording who has it.
    """

    def __init__(
        self, workers: int, budget: Budget | None = None, on_events: Callable[[list[Event]], None] | None = None
    ) -> None:
        """``on_events`` receives the workers' events for the run's log; None: workers gather none."""
        self._context = processes.context()
        self._budget = budget or Budget()
        self._stop_flag = limits.SharedFlag(self._context)
        self._count = workers
        # More threads than connections could ever be open at once would only wait: a one-host mirror's
        # files in flight are its host's cap.
        useful = min(
            self._budget.connections, self._budget.per_host * len(self._budget.hosts) or self._budget.connections
        )
        files = max(1, math.ceil(useful / workers))
        self._config = crossing.Config(
            files=files, max_idle_per_host=min(self._budget.per_host, files * 2), events=on_events is not None
        )
        self._on_events = on_events
        self._files = files
        self._ahead = files + max(4, files // 2)  # tasks a worker holds at least: enough that no thread waits
        self._workers: list[_Worker] = []
        self._owner: dict[int, _Worker] = {}  # job index → the worker that has it
        self._deadline: float | None = None  # when running workers get killed, once stopping
        self._deaths: dict[int, int] = {}  # job index → workers that died while it was running
        self._restarts = 0
        self._broken = False  # a worker died: start them all again before sending more
        self._waiting: deque[int] = deque()  # job indexes to send, in order
        self._given_back: dict[int, _Worker] = {}  # job index → the worker a recall just took it back from
        self._retrying: set[int] = set()  # job indexes waiting because their worker died
        self._asked = 0  # stop requests (SIGINT, SIGTERM) received while running
        self._restarting = False
        self._out_of_time = False  # the budget's deadline stopped the run (not Ctrl-C or SIGTERM)

    @property
    def stopping(self) -> bool:
        return self._stop_flag.is_set()

    def run(
        self, tasks: Iterable[Task], on_tick: Send, on_result: Callable[[FileResult], None], on_poll: Callable[[], None]
    ) -> bool:
        """Send every task; report ticks and results as they arrive, and poll about ten times a second.

        Ctrl-C and SIGTERM stop the batch; a second one kills what still runs. Returns whether a stop was
        asked for: one that came too late to interrupt any file (every file had finished, or it arrived in the
        last step) still makes the run an interrupted one, which must not end as if it was not, but with its
        summary and report, since every result is in.

        At the budget's deadline the batch stops as it does for Ctrl-C, so every part is kept for the next
        run; that is no stop asked for (False, if nothing else stopped it), and each file it leaves has OUT_OF_TIME
        among its notes.
        """
        on_result = self._noting_the_deadline(on_result)
        open_ = {task[0].index: task for task in tasks}
        self._waiting.extend(open_)
        handled = 0
        with self._signals_deferred():
            while open_:
                try:
                    self._mind_the_deadline()
                    while handled < self._asked:
                        handled += 1
                        self.stop(at_once=self.stopping)
                    if not self.stopping:
                        if self._broken:
                            self._restart(open_, on_result)
                        elif not self._workers:
                            self._start_workers()
                        self._feed(open_)
                    self._step(open_, on_tick, on_result)
                    if self.stopping:
                        self._settle_unsent(open_, on_result)
                except KeyboardInterrupt:  # raised where signals could not be deferred (not the main thread)
                    self.stop(at_once=self.stopping)
                on_poll()
        return bool(self._asked) or (self.stopping and not self._out_of_time)

    def _mind_the_deadline(self) -> None:
        deadline = self._budget.deadline
        if deadline is not None and not self.stopping and time.monotonic() >= deadline:
            self._out_of_time = True
            self.stop()

    def _noting_the_deadline(self, on_result: Callable[[FileResult], None]) -> Callable[[FileResult], None]:
        def report(result: FileResult) -> None:
            if self._out_of_time and result.status == Status.INTERRUPTED:
                result = replace(result, notes=(*result.notes, OUT_OF_TIME))
            on_result(result)

        return report

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

    def _start_workers(self) -> None:
        # Held here for the pool's life: a worker rebuilds the table's locks by name after start() returns,
        # and they are unlinked once no object in this process refers to them.
        self._shared = shared = limits.Shared(self._budget, self._context)
        for _ in range(self._count):
            task_r, task_w = self._context.Pipe(duplex=False)
            result_r, result_w = self._context.Pipe(duplex=False)
            process = self._context.Process(  # type: ignore[attr-defined]  # every concrete context has it
                target=crossing.main,
                args=(self._config, task_r, result_w, self._stop_flag, shared),
                name="bulkdl-worker",
                daemon=True,
            )
            process.start()
            # Only the worker may hold its ends: its death must read as the end of its result pipe.
            task_r.close()
            result_w.close()
            self._workers.append(_Worker(process, task_w, result_r))

    def _restart(self, open_: dict[int, Task], on_result: Callable[[FileResult], None]) -> None:
        """A worker died: stop the others, put every unfinished task back to wait, start them all again."""
        self._restarts += 1
        self._kill_workers()
        self._restarting = True  # what the others had sent still counts; their end is no death of theirs
        try:
            for worker in self._workers:
                if worker.results is not None:
                    self._read(worker, open_, lambda *_: None, on_result, to_the_end=True)
        finally:
            self._restarting = False
        back = sorted(i for w in self._workers for i in w.assigned if i in open_)
        self._forget_workers()
        for index in reversed(back):
            job = open_[index][0]
            if self._deaths.get(index, 0) >= MAX_WORKER_DEATHS or self._restarts > MAX_POOL_RESTARTS:
                on_result(_died(job, self._deaths.get(index, 0), self._restarts))
                del open_[index]
                continue
            self._retrying.add(index)
            self._waiting.appendleft(index)
        self._broken = False
        self._start_workers()

    def _feed(self, open_: dict[int, Task]) -> None:
        """Send every worker the tasks dealt to it (_deal); once none is left to send, recall some."""
        for worker, batch in self._deal(open_):
            try:
                worker.tasks.send(batch)
            except OSError:  # it died since the last step, which the next step sees: these wait again
                self._waiting.extendleft(reversed([job.index for job, _ in batch]))
                continue
            for job, _ in batch:
                worker.assigned.add(job.index)
                self._owner[job.index] = worker
                self._retrying.discard(job.index)
        if not self._waiting:
            self._recall()

    def _deal(self, open_: dict[int, Task]) -> list[tuple[_Worker, list[Task]]]:
        """Keep every worker its tasks ahead: dealt one at a time in the order of the tasks, least loaded first.

        Dealt, not handed out a worker's fill at a time: the big files that follow small ones in a manifest
        went all to whichever worker was topped up first (9 of 12, 12 of 12), whose threads then ran them
        while the other worker's ran small files, and the run waited for the first one's last big file.
        """
        now = time.monotonic()
        room = {w: w.ahead(self._ahead, self._files, now) - len(w.assigned) for w in self._workers}
        batches: dict[_Worker, list[Task]] = {w: [] for w in self._workers}
        dealing = [w for w in sorted(self._workers, key=lambda w: len(w.assigned)) if room[w] > 0]
        while self._waiting and dealing:
            for worker in list(dealing):
                if self._waiting and self._given_back.get(self._waiting[0]) is worker and len(dealing) > 1:
                    continue  # just recalled from it, for a worker with idle threads: the next in turn
                task = self._next_unsent(open_)
                if task is None:
                    break
                batch = batches[worker]
                batch.append(task)
                if len(batch) >= min(room[worker], _BATCH):
                    dealing.remove(worker)
        self._given_back.clear()  # for one deal: if no other worker had room, it may go back after all
        return [(w, batch) for w, batch in batches.items() if batch]

    def _next_unsent(self, open_: dict[int, Task]) -> Task | None:
        while self._waiting:
            index = self._waiting.popleft()
            if index in open_ and index not in self._owner:
                return open_[index]
        return None

    def _recall(self) -> None:
        """With nothing left to send, ask a worker for half of the tasks its threads cannot start yet, once
        another worker has idle threads and nothing queued: a worker kept deep in small files may next have
        been sent big ones, which it would otherwise run one after another while the other waits (the tasks
        come back to wait, and the next feed deals them to the least loaded). What the parent knows of starts
        is late by a message, so a worker that was just sent tasks looks busy, and gives back fewer than it
        may have: never one it has started (serve.py)."""
        idle = [w for w in self._workers if w.results is not None and w.assigned <= w.started]
        free = sum(max(0, self._files - len(w.assigned)) for w in idle)  # threads with nothing to do
        for worker in self._workers:
            surplus = len(worker.assigned) - self._files  # more than its threads can run at once
            if free <= 0:
                return
            if worker.recalls or worker.told_to_end or worker.results is None or surplus <= 0:
                continue
            count = min((surplus + 1) // 2, free)
            try:
                worker.tasks.send(count)
            except OSError:  # it died since the last step, which the next step sees
                continue
            worker.recalls += 1
            free -= count

    def _step(self, open_: dict[int, Task], on_tick: Send, on_result: Callable[[FileResult], None]) -> None:
        """Read what the workers said; notice the ones that died."""
        pipes = {w.results: w for w in self._workers if w.results is not None}
        ready = multiprocessing.connection.wait([*pipes, *(w.process.sentinel for w in pipes.values())], _POLL_SECONDS)
        for worker in list(pipes.values()):
            if worker.results not in ready and worker.process.sentinel not in ready:
                continue
            self._read(worker, open_, on_tick, on_result)
            if worker.process.sentinel in ready and worker.results is not None:
                self._read(worker, open_, on_tick, on_result, to_the_end=True)
        if self._deadline is not None and time.monotonic() > self._deadline:
            self._kill_workers()

    def _read(
        self,
        worker: _Worker,
        open_: dict[int, Task],
        on_tick: Send,
        on_result: Callable[[FileResult], None],
        to_the_end: bool = False,
    ) -> None:
        """Handle the messages waiting on ``worker``'s pipe (every one, when it has exited)."""
        pipe = worker.results
        assert pipe is not None
        try:
            while to_the_end or pipe.poll():
                started, ticks, results, events, gave_back = pipe.recv()
                worker.started.update(started)
                self._take_back(worker, gave_back)
                for index, n, size in ticks:
                    on_tick(index, n, size)
                if events and self._on_events is not None:  # before the results: a file's events precede its end
                    self._on_events(events)
                for result in results:
                    self._report(worker, result, open_, on_result)
        except (EOFError, OSError):  # it exited (maybe mid-message: what it had not sent is lost)
            pipe.close()
            worker.results = None
            self._lost(worker, open_, on_result)

    def _take_back(self, worker: _Worker, answers: list[list[int]]) -> None:
        """Tasks a worker gave back at a recall wait again, in their order, ahead of the others."""
        worker.recalls -= len(answers)
        back = sorted(i for indexes in answers for i in indexes if self._owner.get(i) is worker)
        for index in back:
            worker.assigned.discard(index)
            del self._owner[index]
            self._given_back[index] = worker
        self._waiting.extendleft(reversed(back))

    def _report(
        self, worker: _Worker, result: FileResult, open_: dict[int, Task], on_result: Callable[[FileResult], None]
    ) -> None:
        if result.index not in open_ or self._owner.get(result.index) is not worker:
            return  # a worker of a pool since replaced, or a task already reported
        on_result(result)
        worker.finished.append(time.monotonic())
        worker.assigned.discard(result.index)
        worker.started.discard(result.index)
        del self._owner[result.index], open_[result.index]  # only once reported: an interrupt before cannot lose it

    def _lost(self, worker: _Worker, open_: dict[int, Task], on_result: Callable[[FileResult], None]) -> None:
        """``worker`` is gone; what it had and did not report is interrupted (stopping) or tried again."""
        unfinished = sorted(i for i in worker.assigned if i in open_)
        if self._restarting:
            return
        if not unfinished:
            # Dead with nothing to do, it may still hold permits of the budget (its idle connections'), which
            # another worker's file would wait for as long as the run lasts: the pool starts again all the same.
            self._broken = not self.stopping
            return
        if self.stopping:  # killed because it did not stop within the grace period
            for index in unfinished:
                reason = "stopped" if index in worker.started else "not started"
                self._report(worker, not_started(open_[index][0], reason), open_, on_result)
            return
        for index in worker.started & set(unfinished):  # the files it ran: one of them may be what kills it
            self._deaths[index] = self._deaths.get(index, 0) + 1
        self._broken = True

    def _settle_unsent(self, open_: dict[int, Task], on_result: Callable[[FileResult], None]) -> None:
        """Once stopping, report every open task that no worker has as interrupted."""
        gone = {i for w in self._workers if w.results is None for i in w.assigned}  # died before a restart
        for index in [i for i in open_ if i not in self._owner or i in gone]:
            replaced = index in self._retrying or index in gone
            reason = "stopped while its worker pool was replaced" if replaced else "not started"
            on_result(not_started(open_[index][0], reason))
            del open_[index]

    def stop(self, at_once: bool = False) -> None:
        """Send nothing more, ask running files to stop, and kill what still runs after the grace period."""
        self._stop_flag.set()
        self._tell_workers_to_end()
        self._deadline = time.monotonic() + (0 if at_once else GRACE_SECONDS)
        if at_once:
            self._kill_workers()

    def _tell_workers_to_end(self) -> None:
        for worker in self._workers:
            if not worker.told_to_end:
                worker.told_to_end = True
                with contextlib.suppress(OSError):
                    worker.tasks.send(None)

    def _kill_workers(self) -> None:
        for worker in self._workers:
            worker.process.kill()
        self._deadline = None

    def _forget_workers(self) -> None:
        for worker in self._workers:
            worker.process.join()
            worker.tasks.close()
            if worker.results is not None:
                worker.results.close()
            for index in worker.assigned:
                self._owner.pop(index, None)
        self._workers = []

    @property
    def problem(self) -> str | None:
        return None  # what ends a local run early is a signal, said by the run itself

    def close(self) -> None:
        """End every worker: the ones with nothing left exit by themselves, the others are killed."""
        try:
            self._tell_workers_to_end()
            ends = time.monotonic() + GRACE_SECONDS
            for worker in self._workers:
                worker.process.join(max(0.0, ends - time.monotonic()))
        finally:  # a second Ctrl-C in the join: workers ignore the SIGTERM of multiprocessing's exit
            self._kill_workers()
            self._forget_workers()


def _died(job: Job, deaths: int, restarts: int) -> FileResult:
    """A file failed because worker processes died (the OOM killer, a crash in C code) as often as allowed:
    ``deaths`` while this file ran in them, ``restarts`` of the pool in all."""
    if deaths >= MAX_WORKER_DEATHS:
        reason = f"the worker process fetching it died {deaths} times (killed by the system?); its parts are kept"
    else:  # the pool's bound, reached while the file waited or had just begun: not its own doing
        own = "its worker died once while fetching it; " if deaths else ""
        reason = (
            f"not tried again: {own}the run's worker processes died {restarts} times in all (killed by the "
            "system?); its parts are kept"
        )
    return FileResult(job.index, job.name, job.shown_url, Status.FAILED, None, 0, None, 0.0, reason, code=WORKER_DIED)
