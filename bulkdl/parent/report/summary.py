"""The summary a person reads at the end of a run or a verify: what went wrong, what changed, a verdict.

Sections, most urgent first: failed (verify: corrupt, missing), interrupted, new, updated; then what did
not change, as one count line per kind; the verdict last, where ``tail -1`` and a mail preview find it. A
night without change is a few lines whatever the number of files; ``--summary full`` lists every file
(the JSON report always does). Every listed file shows its full path, and its full SHA-256 or its reason.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from ...sizes import format_size
from ...values import ADOPTED, FileResult, Status
from ..decide import ON_DISK
from .page import Cell, Line, Page, Row, counted

Earlier = tuple[str, int]  # (sha256, size) the state recorded for a path before this run

_STYLES = {
    Status.DOWNLOADED: "green",
    Status.SKIPPED: "cyan",
    Status.FAILED: "bold red",
    Status.INTERRUPTED: "yellow",
    Status.GONE: "yellow",
    Status.REMOVED: "magenta",
    Status.VERIFIED: "green",
    Status.UNVERIFIED: "yellow",
    Status.CORRUPT: "bold red",
    Status.MISSING: "bold red",
}
# Sections in the order shown: (heading, what files in it count as, style). What a file counts as is its
# status, but that a downloaded file is "new", "updated" (its path had a row in the state before the run)
# or "repaired" (by verify --repair), or "re-fetched" (downloaded again with the very bytes the state recorded:
# --force, a file touched or removed locally; calling it updated would tell the reader upstream changed), and a
# skipped one "unchanged", or "adopted" (found on disk unlike its row or with none, kept because its bytes
# match the manifest's digests). Listed file by file, but see _COLLAPSED.
_SECTIONS = (
    ("failed", ("failed", "corrupt", "missing"), "bold red"),
    ("interrupted", ("interrupted",), "bold yellow"),
    ("gone upstream, local copy kept", ("gone",), "bold yellow"),
    ("new", ("new",), "bold green"),
    ("updated", ("updated",), "bold green"),
    ("re-fetched", ("re-fetched",), "bold cyan"),
    ("repaired", ("repaired",), "bold green"),
    ("removed", ("removed",), "bold magenta"),
    ("adopted", ("adopted",), "bold cyan"),
    ("unchanged", ("unchanged",), "bold cyan"),
    ("verified", ("verified",), "bold green"),
    ("unverified", ("unverified",), "bold yellow"),
)
_LABELS = tuple(label for _, labels, _ in _SECTIONS for label in labels)
# Without --summary full, these are one count line each instead of a section.
_COLLAPSED = {
    "adopted": "adopted (on disk unrecorded or changed since the last run; their bytes match the manifest's)",
    "unchanged": "unchanged (skipped or not modified)",
    "re-fetched": "re-fetched with the same bytes as before (--force, --revalidate, or changed or removed on disk)",
    "verified": "verified (digests match)",
    "unverified": "unverified (no digest in the manifest or the state to compare with)",
}
NOT_STARTED = "not started"  # the pool's reason for an interrupted file that never began
_RIGHT = frozenset({2, 3, 4})  # size, time, rate


@dataclass(frozen=True, slots=True)
class Totals:
    counts: tuple[tuple[Status, int], ...]  # (status, files), in the order Status lists them
    bytes: int  # size of the files now in place
    transferred: int  # body bytes received in this run
    elapsed: float

    @classmethod
    def of(cls, results: Sequence[FileResult], elapsed: float) -> Totals:
        counted = Counter(r.status for r in results)  # one pass, not one per status
        return cls(
            counts=tuple((status, counted[status]) for status in Status),
            bytes=sum(r.size or 0 for r in results if r.status.present),
            transferred=sum(r.transferred for r in results),
            elapsed=elapsed,
        )

    def count(self, status: Status) -> int:
        return dict(self.counts)[status]

    @property
    def bad(self) -> int:
        """Files that make the exit code 1: failed, corrupt or missing."""
        return sum(n for status, n in self.counts if status.bad)


@dataclass(frozen=True, slots=True)
class About:
    """What the summary says besides the files: its first line, and where the verdict says it came from."""

    title: str
    manifest: Path
    started: datetime  # wall clock, UTC
    full: bool = False  # every file listed, not only failures and changes
    repairing: bool = False  # verify --repair: what was downloaded was repaired
    stopped: bool = False  # Ctrl-C or SIGTERM asked the run to stop, maybe after every file had finished
    left: Left | None = None  # the time budget ran out: what it left for the next run
    refused: str | None = None  # why prune's cap refused to remove anything (exit 4)
    quiet: bool = False  # --quiet: the failures and the verdict only, as cron's "no news is good news" wants


@dataclass(frozen=True, slots=True)
class Left:
    """What a run stopped by its time budget (--max-duration) left for the next one."""

    budget: float  # seconds
    files: int
    bytes: int  # of the files whose size is known: their sizes less what this run received of them
    unknown: int  # files of unknown size

    def line(self) -> Line:
        unknown = f" and {self.unknown:,} of unknown size" if self.unknown else ""
        size = f", {format_size(self.bytes)}{unknown}" if self.files > self.unknown else " of unknown size"
        return Line(
            f"time budget {duration(self.budget)} reached: {counted(self.files, 'file')}{size} left for the next run",
            "bold yellow",
        )


def summary_page(
    results: Sequence[FileResult],
    totals: Totals,
    earlier: Mapping[str, Earlier],
    about: About,
    unwritten: str | None = None,
) -> Page:
    """``results`` in manifest order; ``earlier``: the state's rows from before the run, by path;
    ``unwritten``: what could not be written, ``the report F`` (the exit code is 1: the verdict says FAILED)."""
    labelled = [(label(r, earlier, about.repairing), r) for r in results]
    lines: list[Line | Row] = [] if about.quiet else [Line(about.title, "bold")]
    for heading, labels, style in _SECTIONS[:1] if about.quiet else _SECTIONS:
        members = [(label, r) for label, r in labelled if label in labels]
        if members:
            lines += _section(heading, style, members, earlier, about.full)
    if about.left is not None and not about.quiet:
        lines.append(about.left.line())
    lines.append(verdict(Counter(label for label, _ in labelled), totals, about, unwritten))
    return Page(tuple(lines), _RIGHT)


def label(r: FileResult, earlier: Mapping[str, Earlier], repairing: bool = False) -> str:
    """What ``r`` counts as: its section's name (new, updated, re-fetched, repaired, adopted, unchanged) or
    its status."""
    if r.status == Status.DOWNLOADED:
        if repairing:
            return "repaired"
        if r.name not in earlier:
            return "new"
        return "re-fetched" if earlier[r.name] == (r.sha256, r.size) else "updated"
    if r.status == Status.SKIPPED and ADOPTED in r.notes:
        return "adopted"
    return "unchanged" if r.status == Status.SKIPPED else r.status.value


def _section(
    heading: str, style: str, members: list[tuple[str, FileResult]], earlier: Mapping[str, Earlier], full: bool
) -> list[Line | Row]:
    if heading == "re-fetched" and not full:
        return _refetched(style, members)
    if heading in _COLLAPSED and not full:
        return [Line(f"{len(members):,} {_COLLAPSED[heading]}", "dim")]
    shown, idle = members, 0
    if heading == "interrupted" and not full:  # files that never began have nothing to say each
        shown = [(label, r) for label, r in members if r.error != NOT_STARTED]
        idle = len(members) - len(shown)
    lines: list[Line | Row] = [Line(f"{heading} ({len(members):,})", style)]
    lines += [_row(r, earlier.get(r.name) if label == "updated" else None) for label, r in shown]
    if idle:
        lines.append(Line(f"{idle:,} {NOT_STARTED}", "yellow", indent=2))
    return lines


def _refetched(style: str, members: list[tuple[str, FileResult]]) -> list[Line | Row]:
    """Re-fetched files, counted; but each one whose copy in dest was removed or changed since the last run
    by name: the morning reader learns that someone touched the mirror, and where."""
    touched = [r for _, r in members if r.notes and r.notes[0] in ON_DISK]
    if not touched:
        return [Line(f"{len(members):,} {_COLLAPSED['re-fetched']}", "dim")]
    lines: list[Line | Row] = [Line(f"re-fetched ({len(members):,})", style)]
    lines += [_row(r, None) for r in touched]
    if len(members) > len(touched):
        lines.append(Line(f"{len(members) - len(touched):,} more with the same bytes as before", "dim", indent=2))
    return lines


def _row(r: FileResult, was: Earlier | None) -> Row:
    detail: Cell = (r.error, "red") if r.error else (r.sha256 or "", "")
    if r.status == Status.INTERRUPTED and not r.error:  # a worker that stopped when asked gives no reason
        detail = (f"stopped after {format_size(r.transferred)} received" if r.transferred else "stopped", "yellow")
    cells: tuple[Cell, ...] = (
        (r.name, ""),
        (r.status.value, _STYLES[r.status]),
        (format_size(r.size) if r.size is not None else "-", ""),
        (duration(r.elapsed), ""),
        (_rate(r.transferred, r.elapsed), ""),
        detail,
    )
    under = [(f"was {was[0]} {format_size(was[1])}", "")] if was else []
    under += [(f"note: {note}", "yellow") for note in r.notes]
    return Row(cells, tuple(under))


def verdict(labels: Counter[str], totals: Totals, about: About, unwritten: str | None = None) -> Line:
    """One line, last: ``OK`` or ``FAILED``, the counts, the bytes, how long, which manifest, when. Files
    pruned are no longer the manifest's: they are counted after the others."""
    files = counted(sum(labels.values()) - labels["removed"], "file")
    interrupted = labels["interrupted"]
    out_of_time = about.left is not None and not about.stopped  # each file interrupted, by the time budget
    if interrupted and not out_of_time:
        head, said, style = f"FAILED: interrupted, {interrupted:,} of {files} not finished", "interrupted", "bold red"
    elif about.stopped:
        head, said, style = f"FAILED: interrupted after every file had finished; {files}", "", "bold red"
    elif totals.bad:
        head, said, style = f"FAILED: {totals.bad:,} of {files} failed", "failed", "bold red"
    elif unwritten is not None:
        head, said, style = f"FAILED: {unwritten} could not be written; {files}", "", "bold red"
    elif out_of_time:
        head, said, style = (
            f"FAILED: out of time, {interrupted:,} of {files} left for the next run",
            "interrupted",
            "bold yellow",
        )
    elif about.refused is not None:
        head, said, style = f"FAILED: prune refused, {about.refused}; {files}", "", "bold red"
    else:
        head, said, style = f"OK: {files}", "", "bold green"
    kinds = ", ".join(
        f"{labels[label]:,} {label}" for label in _LABELS if labels[label] and label not in (said, "removed")
    )
    removed = f", {labels['removed']:,} removed" if labels["removed"] else ""
    return Line(
        f"{head}{f' ({kinds})' if kinds else ''}{removed}, {format_size(totals.bytes)} in place, "
        f"{format_size(totals.transferred)} received, {duration(totals.elapsed)}; manifest {about.manifest}; "
        f"started {about.started:%Y-%m-%d %H:%M:%S} UTC",
        style,
    )


def duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def _rate(n: int, seconds: float) -> str:
    return f"{format_size(int(n / seconds))}/s" if n and seconds > 0 else "-"
