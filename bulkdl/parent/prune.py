"""Prune: the files an earlier run installed that the manifest no longer lists, and the rails before any goes.

Opt-in (``prune: true``, ``--prune``), as rsync's ``--delete`` and ``rclone sync`` are what a mirror asks
for but never a default. A file is a candidate only when the destination's state has its row (bulkdl
installed it there) and no manifest entry names its path: a file bulkdl never wrote is never touched, and
nothing outside dest or in ``.bulkdl/`` can be a candidate. It happens after the downloads, under the
destination lock, and only when every file of the run is in place: a run with a failed or interrupted file, or
one asked to stop, prunes nothing (rclone's ``--delete-after``, debmirror's cleanup "only if there was no
error"), since a manifest that half-worked may be a manifest that is wrong.

The cap, ``max_delete`` (rsync's and rclone's ``--max-delete``), is a count (``500``) or a share of the files
the state knew before the run (``10%``, the default): over it, nothing at all is removed and the run exits 4,
because the usual way to lose a mirror is a truncated or mistaken manifest, not a legitimate mass removal.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from ..errors import LOCAL_IO
from ..paths import check_relpath
from ..values import FileResult, Job, Status
from . import removal
from .report.page import counted
from .state import Row, State

REMOVE, LEAVE = "remove", "leave"  # what --dry-run says prune would do with a file


@dataclass(frozen=True, slots=True)
class Cap:
    """``max_delete``: at most ``count`` files, or when it is None, at most ``percent`` % of those known."""

    count: int | None = None
    percent: Fraction = Fraction(10)

    def allows(self, known: int) -> int:
        """How many files may go out of ``known``: a share is rounded down (10% of 15 is 1)."""
        return self.count if self.count is not None else math.floor(self.percent * known / 100)

    def __str__(self) -> str:
        return str(self.count) if self.count is not None else f"{float(self.percent):g}%"


@dataclass(frozen=True, slots=True)
class Pruning:
    """A manifest's prune settings; a manifest without ``prune: true`` (or ``--prune``) has none."""

    cap: Cap = field(default_factory=Cap)
    backup_dir: Path | None = None  # absolute; removed files are moved here instead of deleted


@dataclass(frozen=True, slots=True)
class Prune:
    doomed: tuple[Row, ...]  # the state's rows whose paths the manifest no longer lists, by path
    known: int  # the files the state knew before the run
    cap: Cap

    @property
    def allowed(self) -> int:
        return self.cap.allows(self.known)

    @property
    def refused(self) -> bool:
        return len(self.doomed) > self.allowed


@dataclass(frozen=True, slots=True)
class Pruned:
    """What prune did after a run: the results of the files it took, lines to tell the user, and why the cap
    refused, if it did (exit 4)."""

    results: tuple[FileResult, ...] = ()
    said: tuple[str, ...] = ()
    refused: str | None = None


def plan(rows: Mapping[str, Row], listed: Collection[str], cap: Cap) -> Prune:
    """``rows``: the state before the run; ``listed``: the manifest's paths (normalised, as check_relpath makes
    them). A row whose path is not one a manifest could name (``.bulkdl/...``, ``../x``: a state written by
    something else) is never a candidate."""
    doomed = tuple(rows[path] for path in sorted(rows.keys() - set(listed)) if _ours(path))
    return Prune(doomed, len(rows), cap)


def _ours(path: str) -> bool:
    try:
        return check_relpath(path) == path
    except ValueError:
        return False


def refusal(prune: Prune) -> str:
    """Why the cap refuses, without what follows (nothing removed, or nothing would be)."""
    share = "" if prune.cap.count is not None else f": {prune.cap} of {counted(prune.known, 'file')} the state knows"
    return (
        f"{counted(len(prune.doomed), 'file')} no longer in the manifest would be removed, more than max_delete "
        f"allows ({prune.allowed}{share})"
    )


def blocked(results: Sequence[FileResult], stopped: bool, problem: str | None) -> str | None:
    """Why prune must not run after this run, if it must not."""
    if stopped:
        return "the run was asked to stop"
    missing = Counter(r.status for r in results if not r.status.present)
    if missing:
        return ", ".join(f"{counted(n, 'file')} {status}" for status, n in sorted(missing.items()))
    if problem is not None:
        return "the state could not be recorded"
    return None


def after_run(
    dest: Path,
    pruning: Pruning,
    jobs: Sequence[Job],
    rows: Mapping[str, Row],
    done: tuple[Sequence[FileResult], bool],
    state: State,
    noting: bool = False,
) -> Pruned:
    """Prune after a run whose results and stop are ``done``; ``rows``: the state from before the run;
    ``noting``: --changes is asked for, so each removal is kept with its row's deletion until it is listed."""
    why = blocked(*done, state.problem)
    if why is not None:
        return Pruned(said=(f"prune skipped: {why}; nothing was removed",))
    prune = plan(rows, {job.name for job in jobs}, pruning.cap)
    if prune.refused:
        said = f"prune refused: {refusal(prune)}; nothing was removed. If the manifest is right, run once with "
        return Pruned(said=(f"{said}--max-delete {len(prune.doomed)}",), refused=refusal(prune))
    outcomes = removal.remove(dest, prune.doomed, pruning.backup_dir, _listed_files(jobs) if prune.doomed else set())
    for outcome in outcomes:
        if outcome.kind != removal.FAILED:  # a file left is no longer the one the row describes
            state.forget(outcome.row)
        if outcome.kind in (removal.REMOVED, removal.ALREADY_GONE):
            if noting:
                state.note_change(outcome.row.path, "-")
            else:
                state.drop_change(outcome.row.path)
    state.commit()
    shown = [o for o in outcomes if o.kind != removal.LEFT]
    left = tuple(f"prune left {o.row.path}: {o.detail}" for o in outcomes if o.kind == removal.LEFT)
    return Pruned(tuple(_result(len(jobs) + i, o) for i, o in enumerate(shown)), left)


def _result(index: int, outcome: removal.Outcome) -> FileResult:
    row = outcome.row
    failed = outcome.kind == removal.FAILED
    notes = ("already gone from disk; its state row dropped",) if outcome.kind == removal.ALREADY_GONE else ()
    return FileResult(
        index=index,
        name=row.path,
        url=row.url,
        status=Status.FAILED if failed else Status.REMOVED,
        size=row.size,
        transferred=0,
        sha256=row.sha256,
        elapsed=0.0,
        error=f"prune: {outcome.detail}" if failed else None,
        code=LOCAL_IO if failed else None,
        notes=(outcome.detail,) if outcome.detail and not failed else notes,  # where a backup went
        digests=row.digests,
    )


def preview(
    dest: Path, pruning: Pruning, jobs: Sequence[Job], rows: Mapping[str, Row]
) -> tuple[Prune, list[tuple[str, str, str]]]:
    """``--dry-run``: the plan, and (path, REMOVE or LEAVE, why) for each doomed file, read from the disk."""
    prune = plan(rows, {job.name for job in jobs}, pruning.cap)
    listed = _listed_files(jobs) if prune.doomed else set()
    return prune, [_foreseen(removal.inspect(dest, row, listed), pruning.backup_dir) for row in prune.doomed]


def _listed_files(jobs: Sequence[Job]) -> set[removal.FileId]:
    """The files the manifest's paths lead to now, symlinks followed: a row's path that no entry names may
    still be one of them (``current -> v2`` in dest, with ``current/a.iso`` listed and ``v2/a.iso`` dropped;
    or another spelling on a case-folding file system), and prune must never take a file the manifest lists.
    Read only when something is to go: a stat per listed file."""
    found = set()
    for job in jobs:
        try:
            info = os.stat(job.path)
        except OSError:
            continue
        found.add((info.st_dev, info.st_ino))
    return found


def _foreseen(outcome: removal.Outcome, backup: Path | None) -> tuple[str, str, str]:
    path = outcome.row.path
    if outcome.kind == removal.REMOVED:
        return path, REMOVE, f"no longer in the manifest{f'; to be moved to {backup}' if backup else ''}"
    if outcome.kind == removal.ALREADY_GONE:
        return path, REMOVE, "no longer in the manifest, already gone from disk: only its state row"
    return path, LEAVE, outcome.detail
