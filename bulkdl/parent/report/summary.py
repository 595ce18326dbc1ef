"""The summary a person reads at the end of a run, and the --dry-run plan.

The summary is printed at the end of every run. On a terminal it fits the window; anywhere else (cron mail,
a pipe, a log file) the table is laid out as wide as it needs, so every path and every full SHA-256 stays on
one line and can be grepped.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TextIO

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ...sizes import format_size
from ...values import FileResult, Status

_STYLES = {
    Status.DOWNLOADED: "green",
    Status.SKIPPED: "cyan",
    Status.FAILED: "bold red",
    Status.INTERRUPTED: "yellow",
    Status.VERIFIED: "green",
    Status.UNVERIFIED: "yellow",
    Status.CORRUPT: "bold red",
    Status.MISSING: "bold red",
}
_UNCONSTRAINED = 100_000  # columns: wider than any summary line


@dataclass(frozen=True, slots=True)
class Totals:
    counts: tuple[tuple[Status, int], ...]  # (status, files), in the order Status lists them
    bytes: int  # size of the files now in place
    transferred: int  # body bytes received in this run
    elapsed: float

    @classmethod
    def of(cls, results: Sequence[FileResult], elapsed: float) -> Totals:
        return cls(
            counts=tuple((status, sum(r.status == status for r in results)) for status in Status),
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


def summary_table(results: Iterable[FileResult], totals: Totals, title: str) -> Table:
    table = Table(
        title=title,
        box=box.SIMPLE_HEAVY,
        title_justify="left",
        caption_justify="left",
        # The box draws a space between columns; no padding or edges on top, so that a 120-column terminal
        # keeps each digest on one line.
        padding=0,
        show_edge=False,
    )
    table.add_column("File", overflow="fold")
    table.add_column("Status")
    table.add_column("Size", justify="right", no_wrap=True)
    table.add_column("Time", justify="right", no_wrap=True)
    table.add_column("Rate", justify="right", no_wrap=True)
    table.add_column("SHA-256 / reason", overflow="fold")
    for r in results:
        detail = Text(r.sha256 or "")
        if r.error:
            detail = Text(r.error, style="red")
        for note in r.notes:
            detail.append(f"\nnote: {note}", style="yellow")
        size = format_size(r.size) if r.size is not None else "-"
        # Text, not str, for every cell: rich would read a name's "[...]" as markup (and parse each cell).
        table.add_row(
            Text(r.name),
            Text(r.status, style=_STYLES[r.status]),
            Text(size),
            Text(_duration(r.elapsed)),
            Text(_rate(r.transferred, r.elapsed)),
            detail,
        )
    table.add_section()
    # The per-status counts go under the table: in the Status column they would widen it for every row.
    table.caption = ", ".join(f"{n} {status}" for status, n in totals.counts if n) or "no files"
    table.add_row(
        Text("total", style="bold"),
        f"{sum(n for _, n in totals.counts)} files",
        format_size(totals.bytes),
        _duration(totals.elapsed),
        _rate(totals.transferred, totals.elapsed),
        f"{format_size(totals.transferred)} received",
    )
    return table


def plan_table(rows: Iterable[tuple[str, str, str]], title: str) -> Table:
    """``--dry-run``: what a run would do with each file, and why."""
    table = Table(title=title, box=box.SIMPLE_HEAVY, title_justify="left")
    table.add_column("File", overflow="fold")
    table.add_column("Action")
    table.add_column("Why", overflow="fold")
    for name, action, reason in rows:
        table.add_row(Text(name), Text(action, style=_ACTION_STYLES.get(action, "")), Text(reason))
    return table


_ACTION_STYLES = {"download": "green", "resume": "yellow", "check": "cyan", "skip": "dim"}


def print_summary(table: Table, file: TextIO | None = None) -> None:
    console = Console(file=file or sys.stdout)
    if not console.is_terminal:
        # No window to fit: a table that does not expand is laid out at its natural width, so in a console
        # too wide to constrain it nothing is folded or cut (and no separate measuring pass is needed).
        console = Console(file=file or sys.stdout, width=_UNCONSTRAINED, no_color=True)
        for column in table.columns:
            column.no_wrap = True  # nothing can need wrapping at that width: skip rich's line breaking per cell
    console.print(table)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def _rate(n: int, seconds: float) -> str:
    return f"{format_size(int(n / seconds))}/s" if n and seconds > 0 else "-"
