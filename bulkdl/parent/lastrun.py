"""``<dest>/.bulkdl/last-run.json``: what the last run that held the destination did, for a monitor to read.

Written at the end of every run that got as far as taking the destination lock, whatever its end: done,
failed, interrupted or out of time. It answers "when did the mirror last sync, and how did that go" (rsync
and ftpsync users read the trace's date; rclone users parse its log) without parsing a summary. Written
atomically (durable.py): a reader finds the old record or the new, never a torn one, even after a kill -9.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from .. import __version__, durable
from ..hashing import hash_file
from ..values import Status
from .report.summary import Totals

# Always in a record, even when 0: what a run can make of a file, so a monitor never meets a missing key.
_RUN_STATUSES = (Status.DOWNLOADED, Status.SKIPPED, Status.FAILED, Status.INTERRUPTED, Status.GONE, Status.REMOVED)


def path(dest: Path) -> Path:
    return dest / ".bulkdl" / "last-run.json"


@dataclass(frozen=True, slots=True)
class Run:
    """What a record says of a run besides its outcome: which manifest, from which host, when."""

    manifest: Path  # absolute
    manifest_sha256: str
    host: str
    started: datetime  # UTC

    @classmethod
    def of(cls, manifest: Path, started: datetime) -> Run:
        # gethostname, not getfqdn: a run must not wait on DNS to say where it ran.
        return cls(manifest.absolute(), hash_file(manifest)["sha256"], socket.gethostname(), started)


def document(run: Run, ended: datetime, totals: Totals, code: int) -> dict[str, object]:
    return {
        "started": _iso(run.started),
        "ended": _iso(ended),
        "manifest": str(run.manifest),
        "manifest_sha256": run.manifest_sha256,
        "bulkdl_version": __version__,
        "host": run.host,
        "files": {status.value: n for status, n in totals.counts if n or status in _RUN_STATUSES},
        "bytes_in_place": totals.bytes,
        "bytes_received": totals.transferred,
        "exit_code": code,
    }


def write(dest: Path, run: Run, ended: datetime, totals: Totals, code: int) -> None:
    text = json.dumps(document(run, ended, totals, code), indent=2) + "\n"
    durable.write_bytes(path(dest), text.encode())


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")
