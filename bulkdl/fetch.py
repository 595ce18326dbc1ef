"""One file inside a worker process: probe → plan → segment threads → assemble. Always returns a result.

The probe is the first ranged GET (``bytes=0-``): a 206 proves range support and tells the size, and its
connection goes on reading the first segment while threads fetch the others. Each segment streams into its
own part file; the part's length is the segment's progress, so every retry resumes from the byte reached.
"""

from __future__ import annotations

import random
import sys
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO, Protocol, TypeVar

from . import net, plan
from .assemble import assemble
from .errors import FetchError, LocalError, RangeNotHonoured, RemoteChanged, TransientError, VerifyError
from .manifest import Job
from .plan import Plan, Segment

_T = TypeVar("_T")
MAX_RETRY_AFTER = 60.0
_BACKOFF_BASE = 0.5
_BACKOFF_CAP = 30.0
_TICK_SECONDS = 0.1


# A progress tick: (job index, bytes since the last tick, file size if known).
Send = Callable[[int, int, int | None], None]


class StopFlag(Protocol):
    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


@dataclass(frozen=True, slots=True)
class FileResult:
    index: int
    name: str
    url: str
    status: str  # "downloaded", "failed" or "interrupted"
    size: int | None
    transferred: int  # body bytes received in this run
    sha256: str | None
    elapsed: float
    error: str | None = None
    notes: tuple[str, ...] = ()


class Meter:
    """Counts one file's received bytes; passes them on at most every 0.1 s (threads share it)."""

    def __init__(self, index: int, send: Send | None) -> None:
        self._index = index
        self._send = send
        self._lock = threading.Lock()
        self._unsent = 0
        self._last = time.monotonic()
        self.total = 0
        self.size: int | None = None  # the file's size once the probe tells it

    def add(self, n: int) -> None:
        with self._lock:
            self.total += n
            self._unsent += n
            now = time.monotonic()
            if now - self._last >= _TICK_SECONDS:
                self._flush(now)

    def flush(self) -> None:
        with self._lock:
            self._flush(time.monotonic())

    def _flush(self, now: float) -> None:
        if self._send is not None and self._unsent:
            self._send(self._index, self._unsent, self.size)
        self._unsent = 0
        self._last = now


class _Cancelled(Exception):
    """The run is stopping, or a sibling segment failed: leave the part as it is."""


def fetch_file(job: Job, stop: StopFlag, send: Send | None = None) -> FileResult:
    """Download ``job`` into place; never raises."""
    started = time.monotonic()
    meter = Meter(job.index, send)
    download = _Download(job, stop, meter)
    status, size, digest, error = "failed", None, None, None
    try:
        size, digest = download.run()
        status = "downloaded"
    except _Cancelled:
        status = "interrupted"
    except FetchError as exc:
        error = str(exc)
    except OSError as exc:
        error = str(LocalError(f"{exc.strerror or exc}: {exc.filename or job.path}"))
    except Exception as exc:  # a bug: the batch goes on, the user gets the traceback on stderr
        traceback.print_exc(file=sys.stderr)
        error = f"internal error: {type(exc).__name__}: {exc}"
    meter.flush()
    return FileResult(
        index=job.index,
        name=job.name,
        url=job.url,
        status=status,
        size=size,
        transferred=meter.total,
        sha256=digest,
        elapsed=time.monotonic() - started,
        error=error,
        notes=tuple(download.notes),
    )


class _Download:
    def __init__(self, job: Job, stop: StopFlag, meter: Meter) -> None:
        self.job = job
        self.stop = stop
        self.meter = meter
        self.abort = threading.Event()  # set when one segment fails, so its siblings stop early
        self.notes: list[str] = []
        self.headers = dict(job.settings.headers)

    def run(self) -> tuple[int, str]:
        self.job.path.parent.mkdir(parents=True, exist_ok=True)
        plan.remove(self.job.path, None)
        try:
            return self._attempt()
        except RemoteChanged:
            self.notes.append("remote file changed during download; started over")
        plan.remove(self.job.path, None)
        try:
            return self._attempt()
        except RemoteChanged as exc:
            raise RemoteChanged(f"remote file changed during download ({exc})") from None

    def _attempt(self) -> tuple[int, str]:
        self.abort.clear()
        head, body = self._retry(lambda: self._open(None, 0), lambda: 0)
        try:
            current = self._plan(head)
        except BaseException:
            body.close()
            raise
        plan.save(self.job.path, current)
        self.meter.size = current.size
        try:
            self._fetch_segments(current, body)
        except RangeNotHonoured as exc:
            self.notes.append(f"{exc}; downloaded as one stream")
            plan.remove(self.job.path, current)
            current = replace(current, ranged=False, segments=plan.single(current.size))
            plan.save(self.job.path, current)
            self._fetch_segments(current, None)
        try:
            result = assemble(self.job.path, current, self.job.size, self.job.digests)
        except VerifyError:
            plan.remove(self.job.path, current)  # wrong bytes: no later run may build on them
            raise
        plan.remove(self.job.path, current)
        return result

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
        return Plan(head.url, head.total, head.etag, head.last_modified, ranged, segments)

    def _fetch_segments(self, current: Plan, probe: net.Body | None) -> None:
        segments = current.segments
        if not segments:
            if probe is not None:
                probe.close()
            return
        with ThreadPoolExecutor(max_workers=max(1, len(segments) - 1)) as threads:
            others = [threads.submit(self._segment, current, s, None) for s in segments[1:]]
            errors: list[BaseException] = []
            try:
                self._segment(current, segments[0], probe)
            except BaseException as exc:
                errors.append(exc)
            errors += [e for e in (f.exception() for f in others) if e is not None]
        if errors:
            # The first real failure explains the others, which were only cancelled because of it.
            raise next((e for e in errors if not isinstance(e, _Cancelled)), errors[0])

    def _segment(self, current: Plan, segment: Segment, probe: net.Body | None) -> None:
        part = plan.part_path(self.job.path, segment.index)
        handed = [probe] if probe is not None else []  # the probe's body serves the first attempt only
        try:
            self._retry(
                lambda: self._segment_attempt(current, segment, part, handed.pop() if handed else None),
                lambda: _size(part),
            )
        except BaseException:
            self.abort.set()
            raise
        finally:
            for body in handed:
                body.close()

    def _segment_attempt(self, current: Plan, segment: Segment, part: Path, body: net.Body | None) -> None:
        have = _size(part)
        if segment.length is not None and have >= segment.length:
            return
        if body is None:
            last = None if segment.end is None else segment.end - 1
            head, body = self._open(current, segment.start + have, last)
            if head.start < segment.start + have:  # a whole body from a server without ranges: start over
                with open(part, "wb"):
                    have = 0
        with body, open(part, "ab") as out:
            self._stream(body, out, segment, have)

    def _open(self, current: Plan | None, first: int, last: int | None = None) -> tuple[net.Head, net.Body]:
        url, if_range = (
            (self.job.url, None)
            if current is None
            else (current.url, net.validator(current.etag, current.last_modified))
        )
        head, body = net.request(
            url, self.headers, first=first, last=last, if_range=if_range, timeout=self.job.settings.timeout
        )
        try:
            _check(current, first, head)
        except BaseException:
            body.close()
            raise
        return head, body

    def _stream(self, body: net.Body, out: BinaryIO, segment: Segment, have: int) -> None:
        remaining = None if segment.length is None else segment.length - have
        while remaining is None or remaining > 0:
            if self.stop.is_set() or self.abort.is_set():
                raise _Cancelled
            data = body.read(net.CHUNK if remaining is None else min(net.CHUNK, remaining))
            if not data:
                break
            out.write(data)
            self.meter.add(len(data))
            if remaining is not None:
                remaining -= len(data)
        if remaining:
            assert segment.length is not None
            raise TransientError(f"connection closed after {segment.length - remaining} of {segment.length} bytes")

    def _retry(self, attempt: Callable[[], _T], position: Callable[[], int]) -> _T:
        """Run ``attempt`` until it succeeds; transient failures retry with backoff, the budget reset by progress."""
        failures, mark = 0, position()
        while True:
            if self.stop.is_set() or self.abort.is_set():
                raise _Cancelled
            try:
                return attempt()
            except TransientError as exc:
                if position() > mark:
                    failures, mark = 0, position()
                failures += 1
                if failures > self.job.settings.retries:
                    raise TransientError(f"{exc} (gave up after {failures} attempts)") from None
                if self.stop.wait(_backoff(failures, exc.retry_after)):
                    raise _Cancelled from None


def _check(current: Plan | None, first: int, head: net.Head) -> None:
    """Accept a response only if its bytes belong exactly where the part continues."""
    if current is not None and (changed := _changed(current, head)):
        raise RemoteChanged(changed)
    if head.ranged and head.start != first:
        raise RangeNotHonoured(f"asked for bytes {first}- and got bytes {head.start}-")
    if not head.ranged and first > 0 and (current is None or current.ranged):
        raise RangeNotHonoured("server ignored Range")


def _changed(current: Plan, head: net.Head) -> str | None:
    if head.total is not None and current.size is not None and head.total != current.size:
        return f"size changed from {current.size} to {head.total} bytes"
    if current.etag and head.etag and head.etag != current.etag:
        return f"ETag changed from {current.etag} to {head.etag}"
    if current.last_modified and head.last_modified and head.last_modified != current.last_modified:
        return f"Last-Modified changed from {current.last_modified} to {head.last_modified}"
    return None


def _backoff(failures: int, retry_after: float | None) -> float:
    """Exponential backoff with full jitter; a server's Retry-After wins, within reason."""
    if retry_after is not None:
        return min(retry_after, MAX_RETRY_AFTER)
    return random.uniform(0, min(_BACKOFF_CAP, _BACKOFF_BASE * 2 ** (failures - 1)))


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
