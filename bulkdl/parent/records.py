"""What a run leaves for others once it ends, while it still holds the destination.

``<dest>/.bulkdl/last-run.json`` always (lastrun.py), the ``--changes`` file when asked (changes.py), and
the trace only after a run that exited 0 (trace.py). Each is written atomically; one that cannot be written
costs the others nothing and is reported as one line.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

from ..values import FileResult
from . import changes, lastrun, trace
from .manifest import Manifest
from .report.summary import Earlier, Totals
from .state import State


@dataclass
class Outcome:
    """What the records need to know of a run, filled in as it goes: a run that raised has no results."""

    code: int
    results: Sequence[FileResult] = ()
    earlier: Mapping[str, Earlier] = field(default_factory=dict)  # the state's rows from before the run
    changes_written: bool = False  # by write_changes, at the end of a run that did not raise


def write_changes(path: Path | None, outcome: Outcome, state: State) -> str | None:
    """Write the ``--changes`` file of a run that ended normally, with what killed runs never listed, and then
    forget those; why it could not be written, if it could not."""
    if path is None:
        return None
    outcome.changes_written = True  # tried: the records at the end do not write it again
    unreported = state.unreported()
    try:
        changes.write(path, outcome.results, outcome.earlier, unreported)
    except OSError as exc:
        return f"could not write the changes file {path}: {exc.strerror or exc}"
    state.reported(unreported)
    return None


def leave(loaded: Manifest, run: lastrun.Run, changes_to: Path | None, outcome: Outcome, complete: bool) -> list[str]:
    """Write the records; ``complete``: the run exited 0, so the trace may say the mirror is in sync. Returns
    one line for each record that could not be written."""
    ended, totals = datetime.now(timezone.utc), Totals.of(outcome.results, 0.0)
    writes: list[tuple[str, Path, Callable[[], None]]] = [
        (
            "the run's record",
            lastrun.path(loaded.dest),
            partial(lastrun.write, loaded.dest, run, ended, totals, outcome.code),
        )
    ]
    if changes_to is not None and not outcome.changes_written:  # a run that raised: nothing changed is listed
        writes.append(
            ("the changes file", changes_to, partial(changes.write, changes_to, outcome.results, outcome.earlier))
        )
    if loaded.trace is not None and complete:
        writes.append(("the trace", loaded.trace, partial(trace.write, loaded.trace, run, ended, totals, loaded.dest)))
    problems = []
    for what, path, write in writes:
        try:
            write()
        except OSError as exc:
            problems.append(f"could not write {what} {path}: {exc.strerror or exc}")
    return problems
