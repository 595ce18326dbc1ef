"""One file inside a worker process: resume or probe → plan → transfer → assemble → stamp. Never raises.

A partial download left by an earlier run (sidecar plus parts) is resumed, each segment with If-Range
against the manifest's URL (a redirect's target may have been signed, and expired since), and discarded if
anything about it cannot be trusted (parts.Parts.adopt). Otherwise the probe (probe.py) decides the plan.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .. import paths
from ..credentials import redact_url, scrub
from ..errors import (
    CHECKSUM,
    INTERNAL,
    DigestMismatch,
    FetchError,
    LocalError,
    PartsUnchecked,
    PermanentError,
    RangeNotHonoured,
    RemoteChanged,
    VerifyError,
    local_code,
)
from ..hashing import hash_file, hash_open
from ..sizes import format_size
from ..values import ADOPTED, NOT_MODIFIED, Condition, FileResult, Job, Status
from . import events, heads, net, probe, room
from .assemble import Assembly
from .events import Tell
from .meter import Meter, Send
from .parts import Parts
from .plan import Plan, single
from .retry import Cancelled, StopFlag
from .transfer import Handoff, Transfer


@dataclass(frozen=True, slots=True)
class _Outcome:
    status: Status
    size: int
    digests: tuple[tuple[str, str], ...]
    etag: str | None
    last_modified: str | None
    mtime_ns: int


def fetch_file(job: Job, condition: Condition | None, stop: StopFlag, send: Send | None = None) -> FileResult:
    """Bring ``job`` into place (or confirm it is current); report what happened."""
    started = time.monotonic()
    meter = Meter(job.index, send)
    download = _Download(job, condition, stop, meter)
    outcome, status, error, http_status, code = None, Status.FAILED, None, None, None
    try:
        outcome = download.run()
        status = outcome.status
    except Cancelled:
        status = Status.INTERRUPTED
    except FetchError as exc:
        error, code = str(exc), exc.code
        http_status = exc.status if isinstance(exc, PermanentError) else None
    except OSError as exc:
        error, code = str(LocalError(f"{exc.strerror or exc}: {exc.filename or job.path}")), local_code(exc)
    except Exception as exc:  # a bug: the batch goes on, the user gets the traceback on stderr
        traceback.print_exc(file=sys.stderr)
        error, code = f"internal error: {type(exc).__name__}: {exc}", INTERNAL
    finally:
        download.parts.close()
    meter.flush()
    for source, reason in download.transfer.dropped.items():
        download.notes.append(f"{redact_url(source)} dropped for this file: {reason}")
    retried = download.transfer.retried
    if retried and status != Status.FAILED:  # a failure's message already carries the last reason
        download.notes.append(f"{len(retried)} {'retry' if len(retried) == 1 else 'retries'}; last: {retried[-1]}")
    digests = dict(outcome.digests) if outcome else {}
    return FileResult(
        index=job.index,
        name=job.name,
        url=job.shown_url,
        status=status,
        size=outcome.size if outcome else None,
        transferred=meter.total,
        sha256=digests.get("sha256"),
        elapsed=time.monotonic() - started,
        error=scrub(error, job.secrets),
        notes=tuple(scrub(note, job.secrets) or "" for note in download.notes),
        digests=tuple(digests.items()),
        etag=outcome.etag if outcome else None,
        last_modified=outcome.last_modified if outcome else None,
        mtime_ns=outcome.mtime_ns if outcome else None,
        http_status=http_status,
        code=code,
    )


_RESUMED = "resumed with "


class _Download:
    def __init__(self, job: Job, condition: Condition | None, stop: StopFlag, meter: Meter) -> None:
        self.job = job
        self.condition = condition
        self.meter = meter
        self.notes: list[str] = []
        if job.settings.insecure:
            self.notes.append("insecure: TLS certificates were not verified for this file")
        self.parts = Parts(job.path)
        self.fell_back = False  # to one stream, which keeps no part of an earlier run
        self.tell = _teller(job)
        self.stop = stop
        self.transfer = Transfer(job.url, job.settings, stop, meter, self.parts, self.tell)

    def run(self) -> _Outcome:
        _make_room_for(self.job)
        if self.condition is not None and self.condition.adopt:
            kept = self._adopted()
            if kept is not None:
                return kept
            self.condition = None  # not the manifest's bytes: fetched as any file not on disk
        saved, problem = self.parts.adopt(self.job.url, self.job.size)
        if problem is not None:
            self.notes.append(f"discarded a partial download: {problem}")
        try:
            return self._attempt(saved)
        except PartsUnchecked as exc:
            why = f"the partial download could not be checked with the server ({exc})"
        except RemoteChanged as exc:
            why = f"remote file changed {'since the partial download' if saved else 'during download'} ({exc})"
        except DigestMismatch as exc:
            if saved is None or self.fell_back:  # no byte of the earlier run's was in what failed
                raise
            # Bytes kept from an earlier run (a disk's damage, a version no validator told apart) are what
            # failed: a fresh download decides tonight, rather than a failure and a fetch tomorrow.
            why = f"the resumed parts gave a wrong {exc.algorithm}"
        # What was resumed is gone: "resumed with 2.00 MiB already on disk" would say the opposite of the note.
        self.notes = [note for note in self.notes if not note.startswith(_RESUMED)]
        self.notes.append(f"{why}; started over")
        self.parts.discard()
        try:
            return self._attempt(None)
        except RemoteChanged as exc:
            raise RemoteChanged(f"remote file changed during download ({exc})") from None

    def _attempt(self, saved: Plan | None) -> _Outcome:
        if saved is not None:
            have = sum(self.parts.length(s.index) for s in saved.segments)
            self.notes.append(f"{_RESUMED}{format_size(have)} already on disk")
            room.check(self.job.path.parent, saved.size, have, len(saved.segments), self.job.settings.max_size)
            # Resumes ask the manifest's URL again: where it redirected last time may have been signed, and expired.
            resumed = replace(saved, url=saved.source)
            # Nothing left to fetch, so no request would ask whether the file changed; or what is left may come
            # from a mirror, whose first request carries no validator of the primary's.
            if saved.size and (have == saved.size or (have and saved.mirrors)):
                self._confirm(resumed)
            return self._fetch(resumed, None)
        handoff, mirrors = probe.first(self.job, self.transfer, self.condition, self.notes)
        with handoff:  # closed on every way out of here unless a segment thread took it
            if handoff.head.status == 304:
                return self._not_modified(handoff.head)
            current, usable = probe.plan_for(self.job, handoff.head, self.notes)
            if (why := probe.one_stream(self.job, handoff.head)) is not None:
                self.tell("fallback", why=why)
            current = replace(current, mirrors=mirrors)
            room.check(self.job.path.parent, current.size, 0, len(current.segments), self.job.settings.max_size)
            self.parts.start(current, record=self._worth_a_sidecar(current))
            try:
                return self._fetch(current, handoff if usable else None)
            except DigestMismatch as exc:
                if self.condition is None:
                    raise
                # A conditional GET means a copy the state vouches for is in place: the server's new version
                # is what no longer matches the manifest, as an operator pinning digests needs to hear.
                raise VerifyError(
                    f"upstream changed: its {exc.algorithm} is {exc.got}, the manifest pins {exc.expected}; "
                    "the copy on disk was kept",
                    CHECKSUM,
                ) from None

    def _confirm(self, resumed: Plan) -> None:
        """Transfer.confirm; with mirrors, a primary that cannot answer makes the file start over (from them)
        rather than fail every night while its parts wait for the primary."""
        try:
            self.transfer.confirm(resumed)
        except RemoteChanged:
            raise
        except FetchError as exc:
            if not resumed.mirrors:
                raise
            raise PartsUnchecked(str(exc)) from None

    def _fetch(self, current: Plan, handoff: Handoff | None) -> _Outcome:
        self.meter.size = current.size
        try:
            return self._assemble(current, handoff)
        except RangeNotHonoured as exc:
            self.notes.append(f"{exc}; downloaded as one stream")
            self.tell("fallback", why=str(exc))
            self.fell_back = True  # every part started over
            current = replace(current, ranged=False, segments=single(current.size))
            self.parts.start(current, record=False)
            return self._assemble(current, None)

    def _assemble(self, current: Plan, handoff: Handoff | None) -> _Outcome:
        """Transfer the plan's segments, assembling as they arrive, and put the checked file in place."""
        with Assembly(self.parts, (a for a, _ in self.job.digests)) as assembly:
            current = self.transfer.run(current, handoff, assembly)
            try:
                size, digests = assembly.finish(current, self.job.size, self.job.digests)
            except VerifyError:
                self.parts.discard()  # wrong bytes: no later run may build on them
                raise
        note = _stamp(self.job.path, current.last_modified)
        if note:
            self.notes.append(note)
        mtime_ns = self.job.path.stat().st_mtime_ns
        return _Outcome(Status.DOWNLOADED, size, tuple(digests.items()), current.etag, current.last_modified, mtime_ns)

    def _worth_a_sidecar(self, current: Plan) -> bool:
        """A sidecar costs a new file, and creating files is most of a small file's cost. A file no larger
        than one minimal segment is quicker fetched again than resumed, and one without ranges cannot be."""
        return current.ranged and (current.size or 0) > self.job.settings.min_segment_size

    def _adopted(self) -> _Outcome | None:
        """The copy on disk, if its bytes match every digest the manifest pins; else None, with a note saying
        why it is fetched. A copy with the very digests the state recorded keeps the server's validators."""
        c, wanted = self.condition, self.job.digests
        assert c is not None
        read = _hashed(self.job.path, [*(a for a, _ in wanted), *(a for a, _ in c.digests), "sha256"], self._halt)
        if isinstance(read, str):
            self.notes.append(f"the copy on disk {read}: not adopted")
            return None
        found, local = read
        unlike = [a for a, expected in wanted if found[a] != expected]
        if unlike or self.job.size not in (None, local.st_size):
            self.notes.append(
                f"the copy on disk has another {unlike[0] if unlike else 'size'} than the manifest's: not adopted"
            )
            return None
        self.notes.append(ADOPTED)
        recorded = c.digests and all(found[a] == v for a, v in c.digests)
        etag, modified = (c.etag, c.last_modified) if recorded else (None, None)
        return _Outcome(Status.SKIPPED, local.st_size, tuple(found.items()), etag, modified, local.st_mtime_ns)

    def _halt(self) -> None:
        """Between two buffers of a hash: a run asked to stop does not wait for a big file's last byte."""
        if self.stop.is_set():
            raise Cancelled

    def _not_modified(self, head: net.Head) -> _Outcome:
        """The server says the copy on disk is current. A digest the manifest names but no run recorded
        (added to the manifest since) is checked against that copy now: a 304 vouches for sameness, not for it."""
        c = self.condition
        assert c is not None
        self.notes.append(NOT_MODIFIED)
        digests = dict(c.digests)
        unchecked = [a for a, _ in self.job.digests if a not in digests]
        if unchecked:
            try:
                digests |= hash_file(self.job.path, unchecked)
            except OSError as exc:
                raise LocalError(f"cannot read the copy on disk to check its digest: {exc.strerror}") from None
            for algorithm, expected in self.job.digests:
                if digests[algorithm] != expected:
                    raise VerifyError(
                        f"{algorithm} mismatch: the manifest says {expected}, the copy on disk (current on the "
                        f"server: 304) has {digests[algorithm]}; kept as it is",
                        CHECKSUM,
                    )
        etag, modified = head.etag or c.etag, head.last_modified or c.last_modified
        return _Outcome(Status.SKIPPED, c.size, tuple(digests.items()), etag, modified, c.mtime_ns)


def _hashed(path: Path, algorithms: list[str], halt: Callable[[], None]) -> tuple[dict[str, str], os.stat_result] | str:
    """The digests of the regular file at ``path`` and its stat, or what keeps it from being adopted: a
    symlink never is (the mirror's file would be its target), nor a file written while it is read.

    The file is opened without following a link and hashed from that descriptor; its stat before and after
    includes the change time, which every write moves and no ``touch -r`` or ``rsync -t`` can set back."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # a FIFO in the way must not block
    except OSError as exc:
        return "is not a regular file" if exc.errno == errno.ELOOP else f"is unreadable ({exc.strerror})"
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            return "is not a regular file"
        with os.fdopen(fd, "rb", closefd=False) as f:
            found = hash_open(f, algorithms, halt)
        after, there = os.fstat(fd), os.lstat(path)  # there: what the path names now (a rename over it?)
    except OSError as exc:
        return f"is unreadable ({exc.strerror})"
    finally:
        os.close(fd)
    if not _identity(before) == _identity(after) == _identity(there):
        return "changed while it was hashed"
    return found, after


def _identity(st: os.stat_result) -> tuple[int, ...]:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _teller(job: Job) -> Tell:
    """``job``'s events for the run's log: its path added, its secrets scrubbed; nothing when no log is kept."""

    def tell(kind: str, **fields: Any) -> None:
        if events.on():
            said = {k: scrub(v, job.secrets) if isinstance(v, str) else v for k, v in fields.items()}
            events.emit(kind, path=job.name, **said)

    return tell


# Directories this worker made or found inside dest: each is checked and created once per process, not per file.
# Shared by the worker's threads without a lock: membership and add are atomic, and two threads that both miss
# a new directory both check it and mkdir(exist_ok) it, which gives the same result as one doing so.
_INSIDE: set[Path] = set()


def _make_room_for(job: Job) -> None:
    """Create the file's directory, refusing one that a symlink below dest would take outside it."""
    directory = job.path.parent
    if directory in _INSIDE:
        return
    dest = job.path.parents[job.name.count("/")]
    if (reason := paths.outside(dest, directory)) is not None:
        raise LocalError(reason)
    directory.mkdir(parents=True, exist_ok=True)
    _INSIDE.add(directory)


def _stamp(path: os.PathLike[str], last_modified: str | None) -> str | None:
    """Give the file the server's Last-Modified as its mtime, as ``wget -N`` and ``curl -R`` do; a note if not."""
    if not last_modified:
        return None
    when = heads.mtime_ns(last_modified)
    if when is None:  # not a date, or one no mtime (nor the state's 64-bit integer) can hold: 2262 and later
        return f"server's Last-Modified ({last_modified[:40]}) cannot be a file time; mtime left at the download's"
    os.utime(path, ns=(time.time_ns(), when))
    return None
