"""What runs a run's files: the local process pool (pool.Batch), or a Dask cluster (bulkdl/cluster/).

Both take the same tasks and report the same FileResults through the same callbacks, so everything the parent
does with them (state, summary, JSON report, exit code) is one code path. Dask is imported only when
--scheduler (or ``scheduler:``) asks for it: a local run never loads it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

from ..errors import UsageError
from ..values import Budget, FileResult
from ..worker.crossing import Task
from ..worker.events import Event
from ..worker.meter import Send
from .pool import Batch

NEEDS_DASK = "--scheduler needs Dask: pip install 'bulkdl[dask]'"


class Executor(Protocol):
    def run(
        self, tasks: Iterable[Task], on_tick: Send, on_result: Callable[[FileResult], None], on_poll: Callable[[], None]
    ) -> bool:
        """Run every task, reporting each file's result once; whether a stop (Ctrl-C, SIGTERM) was asked for."""

    @property
    def problem(self) -> str | None:
        """What ended the run before its files did (the cluster lost mid-run), for one line on stderr; each
        file it left was reported failed with its code."""

    def close(self) -> None:
        """Give back what running took (processes, a cluster connection), whatever state the run ended in."""


def check(scheduler: str | None) -> None:
    """Refuse --scheduler at once, before the destination is touched, when the Dask extra is not installed."""
    if scheduler is not None and importlib.util.find_spec("distributed") is None:
        raise UsageError(NEEDS_DASK)


def start(
    workers: int, budget: Budget, scheduler: str | None, dest: Path, on_events: Callable[[list[Event]], None] | None
) -> Executor:
    """The local pool of ``workers`` processes, or a connection to the Dask scheduler at ``scheduler``.

    ``on_events`` takes the workers' events for the run's log (local or Dask: the same events)."""
    if scheduler is None:
        return Batch(workers, budget, on_events)
    check(scheduler)
    from ..cluster.client import DaskExecutor  # only here: a local run imports nothing of Dask

    return DaskExecutor(scheduler, budget, dest, on_events)
