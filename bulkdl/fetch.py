"""One file inside a worker process: resume or probe → plan → transfer → assemble → stamp. Never raises.

The probe is the first ranged GET (``bytes=0-N``, N the end of the first segment when the manifest gives the
size, else of one minimal segment): a 206 proves range support and tells the size, and its connection goes
on to read the rest of the first segment. With a Condition from an earlier run it is also a conditional
GET, and a 304 ends the file there. A partial download left by an earlier run (sidecar plus parts) is
resumed instead, each segment with If-Range, and discarded if anything about it cannot be trusted.
"""

from __future__ import annotations

import email.utils
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace

from . import net, plan
from .assemble import Assembly
from .credentials import redact_url, scrub
from .decide import Condition
from .errors import (
    FetchError,
    LocalError,
    PermanentError,
    RangeNotHonoured,
    RemoteChanged,
    TransientError,
    VerifyError,
)
from .manifest import Job
from .meter import Meter, Send
from .plan import Plan
from .sizes import format_size
from .transfer import Cancelled, StopFlag, Transfer


@dataclass(frozen=True, slots=True)
class FileResult:
    index: int
    name: str
    url: str
    status: str  # "downloaded", "skipped", "failed" or "interrupted"
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


@dataclass(frozen=True, slots=True)
class _Outcome:
    status: str
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
    outcome, status, error = None, "failed", None
    try:
        outcome = download.run()
        status = outcome.status
    except Cancelled:
        status = "interrupted"
    except FetchError as exc:
        error = str(exc)
    except OSError as exc:
        error = str(LocalError(f"{exc.strerror or exc}: {exc.filename or job.path}"))
    except Exception as exc:  # a bug: the batch goes on, the user gets the traceback on stderr
        traceback.print_exc(file=sys.stderr)
        error = f"internal error: {type(exc).__name__}: {exc}"
    meter.flush()
    for source, reason in download.transfer.dropped.items():
        download.notes.append(f"{redact_url(source)} dropped for this file: {reason}")
    retried = download.transfer.retried
    if retried and status != "failed":  # a failure's message already carries the last reason
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
    )


class _Download:
    def __init__(self, job: Job, condition: Condition | None, stop: StopFlag, meter: Meter) -> None:
        self.job = job
        self.condition = condition
        self.meter = meter
        self.notes: list[str] = []
        if job.settings.insecure:
            self.notes.append("insecure: TLS certificates were not verified for this file")
        self.transfer = Transfer(job.url, job.path, job.settings, stop, meter)

    def run(self) -> _Outcome:
        self.job.path.parent.mkdir(parents=True, exist_ok=True)
        saved = self._saved()
        try:
            return self._attempt(saved)
        except RemoteChanged as exc:
            when = "since the partial download" if saved else "during download"
            self.notes.append(f"remote file changed {when} ({exc}); started over")
        plan.remove(self.job.path, None)
        try:
            return self._attempt(None)
        except RemoteChanged as exc:
            raise RemoteChanged(f"remote file changed during download ({exc})") from None

    def _saved(self) -> Plan | None:
        """The partial download an earlier run left, if it can be trusted; otherwise it is removed."""
        if not plan.sidecar_path(self.job.path).exists():
            return None  # a part without its sidecar is never continued: _begin clears it
        saved = plan.load(self.job.path)
        problem = self._distrust(saved)
        if problem is None:
            return saved
        self.notes.append(f"discarded a partial download: {problem}")
        plan.remove(self.job.path, None)
        return None

    def _distrust(self, saved: Plan | None) -> str | None:
        if saved is None:
            return "its sidecar could not be read"
        if saved.source != self.job.url:
            return "the URL in the manifest changed"
        if not (saved.etag or saved.last_modified):
            return "the server gave no ETag or Last-Modified to resume against"
        if self.job.size is not None and saved.size not in (None, self.job.size):
            return "its size differs from the manifest's"
        for segment in saved.segments:
            length = plan.length(plan.part_path(self.job.path, segment.index))
            if segment.length is not None and length > segment.length:
                return f"part {segment.index} is longer than its segment"
        return None

    def _attempt(self, saved: Plan | None) -> _Outcome:
        body = None
        if saved is None:
            head, body, mirrors = self._probe()
            if head.status == 304:
                body.close()
                return self._not_modified(head)
            try:
                current = replace(self._plan(head), mirrors=mirrors)
                self._check_room(current, 0)
            except BaseException:
                body.close()
                raise
            self._begin(current)
        else:
            current = saved
            have = sum(plan.length(plan.part_path(self.job.path, s.index)) for s in saved.segments)
            self.notes.append(f"resumed with {format_size(have)} already on disk")
            self._check_room(current, have)
        self.meter.size = current.size
        try:
            return self._fetch(current, body)
        except RangeNotHonoured as exc:
            self.notes.append(f"{exc}; downloaded as one stream")
            plan.remove(self.job.path, None)  # every part: steals may have added some this plan does not name
            current = replace(current, ranged=False, segments=plan.single(current.size))
            self._begin(current)
            return self._fetch(current, None)

    def _fetch(self, current: Plan, body: net.Body | None) -> _Outcome:
        """Transfer the plan's segments, assembling as they arrive, and put the checked file in place."""
        with Assembly(self.job.path, (a for a, _ in self.job.digests)) as assembly:
            # A small file is over before a follower thread would have started: it is assembled at the end.
            follows = current.size is None or current.size > self.job.settings.min_segment_size
            current = self.transfer.run(current, body, self._saver(current), assembly if follows else None)
            try:
                size, digests = assembly.finish(current, self.job.size, self.job.digests)
            except VerifyError:
                plan.remove(self.job.path, current)  # wrong bytes: no later run may build on them
                raise
        plan.remove(self.job.path, current)
        _stamp(self.job.path, current.last_modified)
        mtime_ns = self.job.path.stat().st_mtime_ns
        return _Outcome("downloaded", size, tuple(digests.items()), current.etag, current.last_modified, mtime_ns)

    def _begin(self, current: Plan) -> None:
        """Record the plan beside its parts where resuming could pay; otherwise clear what an earlier run left.

        A sidecar costs a new file, and creating files is most of a small file's cost. A file no larger than
        one minimal segment is quicker fetched again than resumed, and one without ranges cannot be resumed.
        """
        if (save := self._saver(current)) is not None:
            save(current)
        else:
            plan.remove(self.job.path, current)

    def _saver(self, current: Plan) -> Callable[[Plan], None] | None:
        """How to record this file's plan, if it is worth a sidecar (and so may be split while it runs)."""
        if current.ranged and (current.size or 0) > self.job.settings.min_segment_size:
            return lambda changed: plan.save(self.job.path, changed)
        return None

    def _probe(self) -> tuple[net.Head, net.Body, tuple[str, ...]]:
        """The first request, to the first source that answers; the sources after it may serve segments."""
        sources = (self.job.url, *self.job.mirrors)
        for i, source in enumerate(sources):
            try:
                head, body = self.transfer.probe(
                    source, self._conditional_headers() if i == 0 else {}, self._first_end()
                )
            except (TransientError, PermanentError) as exc:
                if i == len(sources) - 1:
                    raise
                self.notes.append(f"{redact_url(source)} failed ({exc}); trying the next mirror")
                continue
            return head, body, sources[i + 1 :]
        raise AssertionError("unreachable: the last source raises")

    def _first_end(self) -> int:
        """The last byte the probe asks for: the first segment's when the manifest gives the size, else that of
        one minimal segment. An open-ended probe would make the server push the whole file into a connection
        that is dropped once the first segment is read: megabytes sent for nothing.
        """
        settings = self.job.settings
        if self.job.size:
            end = plan.split(self.job.size, settings.segments, settings.min_segment_size)[0].end
            assert end is not None  # a known size splits into closed ranges
            return end - 1
        return settings.min_segment_size - 1

    def _check_room(self, current: Plan, have: int) -> None:
        """Refuse a file larger than max_size, or one the disk cannot hold, before writing any of it."""
        size = current.size
        if size is None:
            return  # learned only at the end: the writes themselves will say if the disk fills
        limit = self.job.settings.max_size
        if limit is not None and size > limit:
            raise PermanentError(f"too large: the server offers {format_size(size)}, max_size is {format_size(limit)}")
        # Several parts are concatenated into a new file, so for a moment they and the copy coexist.
        needed = size - have + (size if len(current.segments) > 1 else 0)
        free = shutil.disk_usage(self.job.path.parent).free
        if needed > free:
            raise LocalError(f"not enough space: needs {format_size(needed)}, {format_size(free)} free")

    def _conditional_headers(self) -> dict[str, str]:
        c = self.condition
        if c is None:
            return {}
        return {"If-None-Match": c.etag} if c.etag else {"If-Modified-Since": c.last_modified or ""}

    def _not_modified(self, head: net.Head) -> _Outcome:
        c = self.condition
        assert c is not None
        self.notes.append("not modified on the server (304)")
        etag, modified = head.etag or c.etag, head.last_modified or c.last_modified
        return _Outcome("skipped", c.size, c.digests, etag, modified, c.mtime_ns)

    def _plan(self, head: net.Head) -> Plan:
        if head.content_encoding and head.content_encoding.lower() != "identity":
            self.notes.append(f"server sent Content-Encoding: {head.content_encoding}; stored as received")
        if self.job.size is not None and head.total is not None and head.total != self.job.size:
            raise VerifyError(f"size mismatch: manifest says {self.job.size} bytes, server has {head.total}")
        ranged = head.ranged and head.total is not None
        settings = self.job.settings
        segments = (
            plan.split(head.total, settings.segments, settings.min_segment_size)
            if ranged and head.total is not None
            else plan.single(head.total)
        )
        return Plan(self.job.url, head.url, head.total, head.etag, head.last_modified, ranged, segments)


def _stamp(path: os.PathLike[str], last_modified: str | None) -> None:
    """Give the file the server's Last-Modified as its mtime, as ``wget -N`` and ``curl -R`` do."""
    if not last_modified:
        return
    try:
        when = email.utils.parsedate_to_datetime(last_modified)
    except (TypeError, ValueError):
        return
    os.utime(path, ns=(time.time_ns(), int(when.timestamp()) * 1_000_000_000))
