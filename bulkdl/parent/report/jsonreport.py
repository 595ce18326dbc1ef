"""The JSON report: every file of a run, for machines; written atomically."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Sequence
from pathlib import Path

from ... import durable
from ...values import FileResult, Status
from .summary import Totals

# Always in a report, even when 0.
_RUN_STATUSES = (Status.DOWNLOADED, Status.SKIPPED, Status.FAILED, Status.INTERRUPTED)


def check_writable(path: Path) -> None:
    """Raise the OSError that writing the JSON report at ``path`` would meet, by going as far as write_json
    goes (its directory, its temp file) without leaving anything but the directory."""
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    _make_directory(path.parent)
    probe = durable.temp_path(path)
    os.close(os.open(probe, os.O_WRONLY | os.O_CREAT, 0o666))
    probe.unlink()


def write_json(path: Path, results: Sequence[FileResult], totals: Totals) -> None:
    doc = {
        "files": [
            {
                "url": r.url,
                "path": r.name,
                "status": r.status.value,
                "bytes": r.size,
                "transferred": r.transferred,
                "sha256": r.sha256,
                "elapsed_s": round(r.elapsed, 3),
                "error": r.error,
                "notes": list(r.notes),
            }
            for r in results
        ],
        "summary": {
            **{status.value: n for status, n in totals.counts if n or status in _RUN_STATUSES},
            "bytes": totals.bytes,
            "transferred": totals.transferred,
            "elapsed_s": round(totals.elapsed, 3),
        },
    }
    _make_directory(path.parent)
    durable.write_bytes(path, (json.dumps(doc, indent=2) + "\n").encode())


def _make_directory(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # mkdir's word for a file in the way, which is no reason a user can act on
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(directory)) from None
