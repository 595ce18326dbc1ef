"""Moving a plan's bytes: one thread per segment, each appending to its part file, retrying from where it is.

A part's length is its segment's progress, so an attempt always asks for ``bytes=<start+len>-<end>`` with
If-Range, and a response is accepted only when its bytes belong exactly there. Transient failures are
retried with exponential backoff and full jitter; the budget starts again whenever bytes arrived.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO, Protocol, TypeVar

from . import accept, net, plan
from .assemble import Assembly
from .board import Board
from .credentials import CREDENTIAL_HEADERS, redact_url
from .errors import FetchError, PermanentError, RangeNotHonoured, TransientError
from .manifest import Settings
from .meter import Meter
from .plan import Plan, Segment

_T = TypeVar("_T")
_BACKOFF_BASE = 0.5
_BACKOFF_CAP = 30.0


class StopFlag(Protocol):
    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


class Cancelled(Exception):
    """The run is stopping, or a sibling segment failed: the part stays as it is, resumable."""


class Transfer:
    """Fetches the segments of one file's plan into their part files."""

    def __init__(self, url: str, final: Path, settings: Settings, stop: StopFlag, meter: Meter):
        self.url = url  # the manifest's; once planned, requests go to the plan's URL (after redirects)
        self.final = final
        self.headers = dict(settings.headers)
        self.settings = settings
        self.tls = net.Tls(settings.ca_bundle, not settings.insecure)
        self.stop = stop
        self.meter = meter
        self.abort = threading.Event()  # set when one segment fails, so its siblings stop early
        self.retried: list[str] = []  # why attempts were retried, for the summary (appends are thread-safe)
        self.dropped: dict[str, str] = {}  # sources given up on for this file, and why
        self._lock = threading.Lock()
        self._assembly: Assembly | None = None  # the run's, told when a part is emptied

    def probe(self, source: str, extra: dict[str, str], last: int) -> tuple[net.Head, net.Body]:
        """The first request for a file (bytes 0 to ``last``), retried; it may carry conditional headers."""
        return self.retry(lambda: self._open(None, 0, last, extra, source), lambda: 0)

    def run(
        self,
        current: Plan,
        probe: net.Body | None,
        save: Callable[[Plan], None] | None = None,
        assembly: Assembly | None = None,
    ) -> Plan:
        """Fetch every segment; the probe's body, if any, serves the first. Return the plan as it ended.

        With ``save`` (how to record a changed plan), threads that finish early steal work from the others.
        With ``assembly``, it follows the parts while they download.
        """
        if not current.segments:
            if probe is not None:
                probe.close()
            return current
        on_change = None if save is None else (lambda segments: save(replace(current, segments=segments)))
        board = Board(current.segments, self.settings.min_segment_size, on_change, self._empty_part)
        first, *rest = current.segments
        errors: list[BaseException] = []
        self._assembly = assembly
        if assembly is not None:
            assembly.follow(board.segments)
        try:
            with ThreadPoolExecutor(max_workers=max(1, len(rest))) as threads:
                others = [threads.submit(self._work, current, board, s, None) for s in rest]
                try:
                    self._work(current, board, first, probe)
                except BaseException as exc:
                    errors.append(exc)
                errors += [e for e in (f.exception() for f in others) if e is not None]
        finally:
            self._assembly = None
            if assembly is not None:
                assembly.pause()
        self.abort.clear()  # every thread is done: a later attempt (a restart, a fallback) starts clean
        if errors:
            # The first real failure explains the others, which were only cancelled because of it.
            raise next((e for e in errors if not isinstance(e, Cancelled)), errors[0])
        return replace(current, segments=board.segments())

    def _work(self, current: Plan, board: Board, segment: Segment, probe: net.Body | None) -> None:
        """One thread: its own segment, then halves of whatever range has the most left, while worth it."""
        self._segment(current, board, segment, probe)
        while (stolen := board.steal(self.stop.wait)) is not None:
            self._segment(current, board, stolen, None)

    def _empty_part(self, segment: Segment) -> None:
        with open(plan.part_path(self.final, segment.index), "wb"):
            pass  # created empty, or emptied
        if self._assembly is not None:
            self._assembly.forget(segment)

    def _segment(self, current: Plan, board: Board, segment: Segment, probe: net.Body | None) -> None:
        part = plan.part_path(self.final, segment.index)
        handed = [probe] if probe is not None else []  # the probe's body serves the first attempt only
        try:
            self.retry(
                lambda: self._attempt(current, board, segment.index, part, handed.pop() if handed else None),
                lambda: plan.length(part),
            )
        except BaseException:
            self.abort.set()
            raise
        finally:
            for body in handed:
                body.close()

    def _attempt(self, current: Plan, board: Board, index: int, part: Path, body: net.Body | None) -> None:
        """Fill the part from ``body``, then from new requests, until its segment is complete.

        An answer may end short of the segment yet whole (the probe asks only for the start of the file): the
        next request, on the same kept-alive connection, asks for the rest.
        """
        while True:
            have = plan.length(part)
            segment = board.start(index, have)
            if segment.length is not None and have >= segment.length:
                return
            source = self._source(current, segment)
            try:
                if body is None:
                    last = None if segment.end is None else segment.end - 1
                    head, body = self._open(current, segment.start + have, last, {}, source)
                    if head.start < segment.start + have:  # a whole body from a server without ranges: start over
                        self._empty_part(segment)
                        board.start(index, 0)
                with body, open(part, "ab") as out:
                    got = self._stream(body, out, board, index)
            except (TransientError, PermanentError, RangeNotHonoured) as exc:
                self._drop(current, source, exc)
            if segment.end is None:
                return  # a length learned only at the end: the body's end is the file's
            if not got and board.left(index):
                raise TransientError(f"answer ended {board.left(index)} bytes short of its range")
            body = None

    def _source(self, current: Plan, segment: Segment) -> str:
        """Segments spread over the sources still in good standing; the primary first."""
        with self._lock:
            healthy = [s for s in (current.url, *current.mirrors) if s not in self.dropped]
        return healthy[segment.index % len(healthy)] if healthy else current.url

    def _drop(self, current: Plan, source: str, exc: FetchError) -> None:
        """Give up on ``source`` for this file if another remains, and retry elsewhere; else fail as usual."""
        primary = source == current.url
        if not current.mirrors or (primary and isinstance(exc, RangeNotHonoured)):
            raise exc  # one source only, or the whole-file fallback to one stream applies
        with self._lock:
            others = [s for s in (current.url, *current.mirrors) if s != source and s not in self.dropped]
            if not others:
                raise exc
            self.dropped[source] = str(exc)
        raise TransientError(f"{redact_url(source)} dropped: {exc}") from None

    def _open(
        self, current: Plan | None, first: int, last: int | None, extra: dict[str, str], url: str
    ) -> tuple[net.Head, net.Body]:
        # Validators belong to one server: only the primary gets If-Range; a mirror must agree on the size.
        primary = current is not None and url == current.url
        if_range = net.validator(current.etag, current.last_modified) if current is not None and primary else None
        headers = {**self._headers_for(url), **extra}
        head, body = net.request(
            url, headers, first=first, last=last, if_range=if_range, timeout=self.settings.timeout, tls=self.tls
        )
        try:
            if current is not None and not primary:
                accept.check_mirror(current, first, head)
            else:
                accept.check(current, first, head)
        except BaseException:
            body.close()
            raise
        return head, body

    def _headers_for(self, url: str) -> dict[str, str]:
        """Credentials go only to the host the manifest named, not to where it redirected us."""
        if net.same_origin(url, self.url):
            return self.headers
        return {k: v for k, v in self.headers.items() if k.lower() not in CREDENTIAL_HEADERS}

    def _stream(self, body: net.Body, out: BinaryIO, board: Board, index: int) -> int:
        """Append the body's bytes that belong to the segment; return how many. urllib3 raises on a short body."""
        guard = _SpeedGuard(self.settings.min_speed, self.settings.stall_time)
        done = 0
        while (left := board.left(index)) != 0:  # the end may move closer while we read: a steal
            if self.stop.is_set() or self.abort.is_set():
                raise Cancelled
            data = body.read(net.CHUNK if left is None else min(net.CHUNK, left))
            if not data:
                break
            n = board.claim(index, len(data))
            out.write(data if n == len(data) else data[:n])
            self.meter.add(n)
            guard.add(n)
            done += n
        return done

    def retry(self, attempt: Callable[[], _T], position: Callable[[], int]) -> _T:
        """Run ``attempt`` until it succeeds; transient failures retry with backoff, the budget reset by progress."""
        failures, mark = 0, position()
        while True:
            if self.stop.is_set() or self.abort.is_set():
                raise Cancelled
            try:
                return attempt()
            except TransientError as exc:
                if position() > mark:
                    failures, mark = 0, position()
                failures += 1
                if failures > self.settings.retries:
                    raise TransientError(f"{exc} (gave up after {failures} attempts)") from None
                self.retried.append(str(exc))
                if self.stop.wait(_backoff(failures, exc.retry_after, self.settings.max_retry_after)):
                    raise Cancelled from None


class _SpeedGuard:
    """aria2's lowest-speed-limit: a stream slower than ``min_speed`` over a whole window is given up on.

    A read timeout catches a server that sends nothing; this catches one that trickles.
    """

    def __init__(self, min_speed: int, window: float) -> None:
        self._min_speed = min_speed
        self._window = window
        self._start = time.monotonic()
        self._bytes = 0

    def add(self, n: int) -> None:
        if not self._min_speed:
            return
        self._bytes += n
        elapsed = time.monotonic() - self._start
        if elapsed < self._window:
            return
        speed = self._bytes / elapsed
        if speed < self._min_speed:
            raise TransientError(f"too slow: {speed:.0f} B/s over {elapsed:.0f} s (min_speed is {self._min_speed} B/s)")
        self._start, self._bytes = time.monotonic(), 0


def _backoff(failures: int, retry_after: float | None, cap: float) -> float:
    """Exponential backoff with full jitter; a server's Retry-After wins, up to ``cap`` seconds."""
    if retry_after is not None:
        return min(retry_after, cap)
    return random.uniform(0, min(_BACKOFF_CAP, _BACKOFF_BASE * 2 ** (failures - 1)))
