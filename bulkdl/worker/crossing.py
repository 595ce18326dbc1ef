"""What the run's pool (parent/pool.py) and a worker process (serve.py) agree on: a task, the worker's
settings, what it reports, and its entry point.

Apart from serve.py so that the parent can start workers without importing the download code (urllib3,
http.client, the fetch and the assembly): 60 ms of every run's start before its first request, while the
forkserver imports that code on the other core (parent/processes.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from multiprocessing.connection import Connection

from ..values import Condition, FileResult, Job, Status
from . import events, limits
from .retry import StopFlag

Task = tuple[Job, Condition | None]

# What a worker sends up, one message at a time: files started, progress ticks, results, the events for the
# run's log (events.py; always empty when the run keeps no log), and its answers to the parent's recalls (the
# job indexes of the tasks it gave back, one list per recall).
Report = tuple[list[int], list[tuple[int, int, int | None]], list[FileResult], list[events.Event], list[list[int]]]


@dataclass(frozen=True, slots=True)
class Config:
    files: int  # files this worker has in flight at most (threads)
    max_idle_per_host: int  # idle connections its pools keep per host
    events: bool = False  # gather events for the run's log (-v, --log-file); off: events.emit does nothing


def main(config: Config, tasks: Connection, results: Connection, stop: StopFlag, shared: limits.Shared) -> None:
    """The worker process's entry point, by name, for the forkserver: serve.main, imported here only."""
    from . import serve  # the forkserver has it loaded already (forkserver.py): nothing to import

    serve.main(config, tasks, results, stop, shared)


def not_started(job: Job, reason: str = "not started") -> FileResult:
    return FileResult(job.index, job.name, job.shown_url, Status.INTERRUPTED, None, 0, None, 0.0, reason)
