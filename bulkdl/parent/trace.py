"""The trace: a small text file in the mirror saying when it last completed a sync, for downstream mirrors.

Modelled on ftpsync's ``project/trace/<host>``: the first line is the date of the completed sync as
``date -u`` prints it (what mirror checkers parse), then ``Key: value`` lines. Only a run that exits 0
writes it (every file present and verified, nothing interrupted, nothing out of time), atomically, so a
downstream mirror may trust that the tree it pulls is as complete as the date says; any other run leaves
the previous trace as it was.
"""

from __future__ import annotations

import email.utils
import errno
from datetime import datetime
from pathlib import Path

from .. import __version__, durable, paths
from .lastrun import Run
from .report.summary import Totals

# date(1)'s names in the C locale, whatever the locale of the run: strftime's %a and %b follow it.
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def text(run: Run, ended: datetime, totals: Totals) -> str:
    fields = {
        "Date": email.utils.format_datetime(ended),
        "Date-Started": email.utils.format_datetime(run.started),
        "Creator": f"bulkdl {__version__}",
        "Running on host": run.host,
        "Files": sum(n for status, n in totals.counts if status.present),
        "Bytes": totals.bytes,
        "Manifest-SHA256": run.manifest_sha256,
    }
    return "".join([f"{date_line(ended)}\n", *(f"{key}: {value}\n" for key, value in fields.items())])


def date_line(moment: datetime) -> str:
    """``Wed Dec  2 14:27:39 UTC 2026``, as ``date -u`` prints it."""
    day, month = _DAYS[moment.weekday()], _MONTHS[moment.month - 1]
    return f"{day} {month} {moment.day:2d} {moment:%H:%M:%S} UTC {moment.year}"


def write(path: Path, run: Run, ended: datetime, totals: Totals, dest: Path) -> None:
    """Write the trace at ``path``; one below ``dest`` never through a symlink that leads out of it, as no
    file of the mirror is."""
    if path.is_relative_to(dest) and (reason := paths.outside(dest, path.parent)) is not None:
        raise OSError(errno.EPERM, reason)
    path.parent.mkdir(parents=True, exist_ok=True)
    durable.write_bytes(path, text(run, ended, totals).encode())
