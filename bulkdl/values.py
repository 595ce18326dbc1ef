"""The values that cross the process boundary, in one place.

The parent (manifest, decide, state, lock, pool, report) hands a worker a Job and, for a conditional GET, a
Condition; the worker (fetch and what it uses) hands back a FileResult. All are frozen dataclasses of plain
values, so they pickle unchanged and neither side can change what the other holds.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

_T = TypeVar("_T")

NOT_MODIFIED = "not modified on the server (304)"  # the note of a file a conditional GET proved current
# The note of a file found on disk unlike any row (none: the state lost, a mirror seeded by rsync; another
# size or mtime: touched, or a kill -9 between install and record) whose bytes matched every digest the
# manifest pins: kept, never fetched.
ADOPTED = "the copy on disk, unrecorded or changed since the last run, has the manifest's digests: kept"


def _pickled_by_position(cls: type[_T]) -> type[_T]:
    """Pickle ``cls`` as its constructor and its values in field order.

    dataclasses pickles a frozen slotted class through a __getstate__ that calls fields() for every object:
    sending a Job and its Condition and getting the FileResult back cost 17 µs of the two processes' time a
    file, 9 µs this way (each file of a run crosses, 20,000 a night of SCALE).
    """
    values = operator.attrgetter(*cls.__dataclass_fields__)  # type: ignore[attr-defined]

    def __reduce__(self: _T) -> tuple[type[_T], Any]:
        return cls, values(self)

    setattr(cls, "__reduce__", __reduce__)  # noqa: B010 - mypy refuses assigning to a method
    return cls


class Status(str, Enum):
    """What became of a file: a run's six, and verify's four. The value is what reports and tables show."""

    DOWNLOADED = "downloaded"
    SKIPPED = "skipped"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    GONE = "gone"  # upstream answered 404 or 410 for a file the mirror holds: the local copy is kept
    REMOVED = "removed"  # pruned: an earlier run installed it and the manifest no longer lists it
    VERIFIED = "verified"
    UNVERIFIED = "unverified"
    CORRUPT = "corrupt"
    MISSING = "missing"

    def __str__(self) -> str:
        return self.value

    @property
    def present(self) -> bool:
        """The file is in place (whether or not anything could vouch for its bytes)."""
        return self in (Status.DOWNLOADED, Status.SKIPPED, Status.GONE, Status.VERIFIED, Status.UNVERIFIED)

    @property
    def bad(self) -> bool:
        """What makes the exit code 1."""
        return self in (Status.FAILED, Status.CORRUPT, Status.MISSING)


@_pickled_by_position
@dataclass(frozen=True, slots=True)
class Settings:
    """Per-file knobs; ``defaults:`` sets them for every entry and an entry may override each."""

    segments: int = 8
    min_segment_size: int = 4 * 1024**2
    chunk_size: int = 8 * 1024**2  # a file larger than segments times this is fetched as chunks of it, in file order
    retries: int = 5
    timeout: float = 30.0  # seconds to connect, and at most between two received packets
    min_speed: int = 1024  # bytes/s; a segment slower than this for stall_time seconds is retried (0: never)
    stall_time: float = 30.0
    max_retry_after: float = 60.0  # a server's Retry-After is honoured up to this many seconds
    max_size: int | None = None  # refuse files larger than this (None: no limit but the free disk space)
    ca_bundle: str | None = None  # CA certificates to trust instead of the system's (top-level ca_bundle:)
    insecure: bool = False  # no TLS verification; an entry's own choice only, and said in the summary
    headers: tuple[tuple[str, str], ...] = (("User-Agent", "bulkdl/0.1"),)


@dataclass(frozen=True, slots=True)
class Budget:
    """What the whole run may use at once, over every worker (worker/limits.py enforces it)."""

    connections: int = 16  # sockets open at once: the files in flight, and the segments of big ones
    per_host: int = 8  # of which to one host (host and port), as curl's --parallel-max-host
    limit_rate: int | None = None  # body bytes per second for the whole run; None: no limit
    hosts: tuple[str, ...] = ()  # "host:port" of every origin the manifest names, each counted on its own
    deadline: float | None = None  # time.monotonic() from which no file starts and running ones stop (--max-duration)


@_pickled_by_position
@dataclass(frozen=True, slots=True)
class Job:
    """One file to fetch, fully resolved: the worker needs nothing else."""

    index: int
    url: str  # what requests go to (credentials moved into headers)
    shown_url: str  # what summaries, reports and the state show: no secrets
    secrets: tuple[str, ...]  # values to scrub from any message
    name: str  # the path below dest, as the user wrote it and reads it in the summary
    mirrors: tuple[str, ...]  # other URLs for the same bytes
    path: Path  # absolute destination, built only here after validation
    size: int | None
    digests: tuple[tuple[str, str], ...]  # (algorithm, lower-case hex), manifest order
    settings: Settings


@_pickled_by_position
@dataclass(frozen=True, slots=True)
class Condition:
    """What a conditional GET sends, and what the file is if the server answers 304; or, with ``adopt``, a
    copy on disk that no run recorded, kept without a request if its bytes match the manifest's digests."""

    etag: str | None
    last_modified: str | None
    size: int
    digests: tuple[tuple[str, str], ...]
    mtime_ns: int
    adopt: bool = False


@_pickled_by_position
@dataclass(frozen=True, slots=True)
class FileResult:
    index: int
    name: str
    url: str
    status: Status
    size: int | None
    transferred: int  # body bytes received in this run
    sha256: str | None
    elapsed: float
    error: str | None = None
    notes: tuple[str, ...] = ()
    digests: tuple[tuple[str, str], ...] = ()  # every digest computed, sha256 included
    etag: str | None = None
    last_modified: str | None = None
    mtime_ns: int | None = None  # the file's mtime on disk once in place
    http_status: int | None = None  # of the answer that failed the file for good, if one did (404: gone?)
    code: str | None = None  # of a failure: one of errors.CODES, for the report's readers
