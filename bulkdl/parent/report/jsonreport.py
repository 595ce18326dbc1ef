"""The JSON report (``--report FILE``): every file of a run or a verify, for scripts; written atomically.

A stable interface, described by the JSON Schema in reportschema.py: ``schema_version`` changes only when a
key is removed or changes meaning (a new key is no new version). Every total is present, zero or not, and
every file has a ``status`` from STATUSES and, when it failed or was interrupted, an error ``code`` from
errors.CODES beside its ``error`` message. A command that fails before it looks at any file (exit 2 or 3)
still writes one, with no files, its exit code and its ``error``, so that an earlier night's report is never
left in place looking current.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ... import __version__, durable
from ...errors import CLUSTER_CODES, INTERNAL, INTERRUPTED, OUT_OF_TIME
from ...values import NOT_MODIFIED, FileResult, Status
from ..pool import OUT_OF_TIME as OUT_OF_TIME_NOTE
from .summary import Earlier, Totals, label

SCHEMA_VERSION = 1
# The unversioned report's counts, by outcome, always present even when 0; the others only when not.
_OUTCOMES_ALWAYS = (Status.DOWNLOADED, Status.SKIPPED, Status.FAILED, Status.INTERRUPTED)
# What a file became, as the summary calls it (summary.label), and what each means. "not modified" is the
# summary's "unchanged" that the server vouched for with a 304; "unchanged" was proven without a request.
STATUSES = (
    ("new", "downloaded; no earlier run had installed this path"),
    ("updated", "downloaded with other bytes than the copy an earlier run had installed"),
    ("re-fetched", "downloaded again with the very bytes recorded before (--force, or changed or removed on disk)"),
    ("repaired", "verify --repair downloaded it again"),
    ("adopted", "on disk unrecorded or changed since the last run; kept, its bytes matching the manifest's"),
    ("unchanged", "the state proved the copy on disk current without asking the server"),
    ("not modified", "the server answered 304: the copy on disk is current"),
    ("failed", "not in place, or not the right bytes; see error and code"),
    ("interrupted", "stopped by Ctrl-C, SIGTERM or --max-duration; resumable"),
    ("gone", "the server answered 404 or 410; the local copy is kept"),
    ("removed", "pruned: an earlier run installed it and the manifest no longer lists it"),
    ("verified", "verify: the digests match"),
    ("unverified", "verify: no digest to compare with"),
    ("corrupt", "verify: another size or digest than expected"),
    ("missing", "verify: not on disk"),
)
# The error codes of a command that failed before it looked at any file, beside errors.CODES.
USAGE, MANIFEST, LOCKED, DESTINATION = "usage", "manifest", "locked", "destination"
RUN_CODES = (
    (USAGE, "bad invocation, or a --report, --changes, --checksums-file or --backup-dir that cannot be used"),
    (MANIFEST, "the manifest is invalid"),
    (LOCKED, "another bulkdl run holds the destination"),
    (DESTINATION, "the destination or its state cannot be used"),
    (INTERRUPTED, "interrupted before the files were looked at"),
    (INTERNAL, "a bug in bulkdl: the traceback is on stderr"),
    *CLUSTER_CODES,
)


@dataclass(frozen=True, slots=True)
class Header:
    """What a report says besides its files."""

    command: str  # run, verify
    manifest: Path  # absolute
    started: datetime  # UTC
    exit_code: int
    error: tuple[str, str] | None = None  # (code, message) of a command that failed before the files


def status(r: FileResult, earlier: Mapping[str, Earlier], repairing: bool = False) -> str:
    """``r``'s status in the report: its label in the summary, "not modified" told apart."""
    said = label(r, earlier, repairing)
    return "not modified" if said == "unchanged" and NOT_MODIFIED in r.notes else said


def code(r: FileResult) -> str | None:
    """The error code of ``r``: the one its failure was made with, or what interrupted it."""
    if r.status == Status.INTERRUPTED:
        return OUT_OF_TIME if OUT_OF_TIME_NOTE in r.notes else INTERRUPTED
    return r.code


def check_writable(path: Path) -> None:
    """Raise the OSError that writing the JSON report at ``path`` would meet, by going as far as write_json
    goes (its directory, its temp file) without leaving anything but the directory."""
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    _make_directory(path.parent)
    probe = durable.temp_path(path)
    os.close(os.open(probe, os.O_WRONLY | os.O_CREAT, 0o666))
    probe.unlink()


def document(
    header: Header, results: Sequence[FileResult], totals: Totals, earlier: Mapping[str, Earlier], repairing: bool
) -> dict[str, object]:
    statuses = [status(r, earlier, repairing) for r in results]
    counts = dict.fromkeys((name for name, _ in STATUSES), 0)
    for said in statuses:
        counts[said] += 1
    amounts = {"bytes": totals.bytes, "transferred": totals.transferred, "elapsed_s": round(totals.elapsed, 3)}
    return {
        "schema_version": SCHEMA_VERSION,
        "bulkdl_version": __version__,
        "command": header.command,
        "manifest": str(header.manifest),
        "started": _iso(header.started),
        "ended": _iso(datetime.now(timezone.utc)),
        "exit_code": header.exit_code,
        "error": None if header.error is None else {"code": header.error[0], "message": header.error[1]},
        "totals": {**counts, **amounts},
        # For the readers of reports before schema_version 1, as they were: "totals" replaces it.
        "summary": {**{s.value: n for s, n in totals.counts if n or s in _OUTCOMES_ALWAYS}, **amounts},
        "files": [
            {
                "url": r.url,
                "path": r.name,
                "status": said,
                "outcome": r.status.value,
                "bytes": r.size,
                "transferred": r.transferred,
                "sha256": r.sha256,
                "elapsed_s": round(r.elapsed, 3),
                "error": r.error,
                "code": code(r),
                "notes": list(r.notes),
            }
            for r, said in zip(results, statuses, strict=True)
        ],
    }


def write_json(path: Path, doc: Mapping[str, object]) -> None:
    _make_directory(path.parent)
    durable.write_bytes(path, (json.dumps(doc, indent=2) + "\n").encode())


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _make_directory(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # mkdir's word for a file in the way, which is no reason a user can act on
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(directory)) from None
