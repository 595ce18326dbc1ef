"""Moving a plan's bytes: one thread per segment, each appending to its part, retrying from where it is.

A part's length is its segment's progress, so an attempt always asks for ``bytes=<start+len>-<end>`` with
If-Range, and a response is accepted only when its bytes belong exactly there (accept.py). The parts
themselves belong to parts.Parts; this module only hands it bytes. Any failure in one segment thread halts
its siblings: every wait (backoff, steal, the read loop) watches the file's Halt.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from types import TracebackType

from ..credentials import CREDENTIAL_HEADERS, redact_url
from ..errors import (
    TOO_LARGE,
    FetchError,
    PartsUnchecked,
    PermanentError,
    RangeNotHonoured,
    RemoteChanged,
    TransientError,
)
from ..sizes import format_size
from ..values import Settings
from . import accept, events, net, plan
from . import ramp as ramp_timing
from .assemble import Assembly
from .board import Board
from .events import Tell, silent
from .meter import Meter
from .parts import Parts
from .plan import Plan, Segment
from .ramp import Lanes, Ramp
from .retry import Cancelled, Halt, RetryPolicy, SpeedGuard, StopFlag, retrying

_STEER_POLL = 0.05  # seconds between a ramp's looks at its file: done, stopped, a narrower width in effect


class Handoff:
    """The probe's body on its way to the first segment's thread: exactly one holder at a time, and
    whoever holds it last closes it, so its connection goes back to the pool on every path."""

    def __init__(self, head: net.Head, body: net.Body) -> None:
        self.head = head
        self._body: net.Body | None = body

    def take(self) -> tuple[int, net.Body] | None:
        """The body and the offset of its first byte in the file, to the first caller only."""
        body, self._body = self._body, None
        return None if body is None else (self.head.start, body)

    def __enter__(self) -> Handoff:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if (given := self.take()) is not None:
            given[1].close()


class Transfer:
    """Fetches the segments of one file's plan into its parts."""

    def __init__(
        self, url: str, settings: Settings, stop: StopFlag, meter: Meter, parts: Parts, tell: Tell = silent
    ) -> None:
        self.url = url  # the manifest's; once planned, requests go to the plan's URL (after redirects)
        self.headers = dict(settings.headers)
        self.settings = settings
        self.policy = RetryPolicy(settings.retries, settings.max_retry_after)
        self.tls = net.Tls(settings.ca_bundle, not settings.insecure)
        self.stop = stop
        self.meter = meter
        self.parts = parts
        self.retried: list[str] = []  # why attempts were retried, for the summary (appends are thread-safe)
        self.dropped: dict[str, str] = {}  # sources given up on for this file, and why
        self._mirrors: dict[str, Plan] = {}  # each mirror's plan as its first answer described it
        self._lock = threading.Lock()
        self._feed: Callable[[int, memoryview], None] | None = None  # the assembly's, for a file it does not follow
        self.tell = tell  # the file's events for the run's log (events.py): retries, resumes, steals
        self._asked: dict[int, str] = {}  # segment index → the source its latest attempt asked, for a retry's event

    def probe(self, source: str, extra: dict[str, str], last: int) -> tuple[net.Head, net.Body]:
        """The first request for a file (bytes 0 to ``last``), retried; it may carry conditional headers."""
        return self._asked_again(None, 0, last, extra, source)

    def _asked_again(
        self, current: Plan | None, first: int, last: int, extra: dict[str, str], url: str
    ) -> tuple[net.Head, net.Body]:
        """``_open``, retried as a request that has no bytes of its own to resume from."""
        return retrying(
            lambda: self._open(current, first, last, extra, url),
            lambda: 0,
            self.policy,
            Halt(self.stop),
            self.retried,
            events.retries(self.tell, lambda: url),
        )

    def confirm(self, current: Plan) -> None:
        """Ask for the file's last byte under If-Range, retried, and read only that: parts that already hold
        every byte are the server's current version before they are installed (RemoteChanged if not).

        Without it a run killed between a file's last byte and its install, then a change upstream, had the
        next run install the old bytes with no request at all, and report them downloaded.
        """
        assert current.size, "only a file with every byte in its parts is confirmed"
        last = current.size - 1
        try:
            _, body = self._asked_again(current, last, last, {}, current.url)
        except RangeNotHonoured as exc:  # a whole body, with no validator to say it changed: nothing vouches
            raise PartsUnchecked(str(exc)) from None
        body.close()

    def run(self, current: Plan, probe: Handoff | None, assembly: Assembly) -> Plan:
        """Fetch every segment; the probe's body, if any, serves the first. Return the plan as it ended.

        At most ``segments`` threads take the segments in file order; a chunked file starts on all of them and
        narrows while fewer keep its rate (ramp.py). Threads that find none left steal work from the
        others when the parts are recorded in a sidecar. The assembly follows the parts while they download,
        or, for a small file, is fed its bytes as they are written.
        """
        if not current.segments:
            return current
        halt = Halt(self.stop)
        self._mirrors.clear()  # a new plan (a restart, a fallback) learns each mirror's version again
        split = self._split if self.parts.recorded else None  # a split is recorded before it is used
        settings = self.settings
        chunk = plan.chunk_length(current.size, settings.segments, settings.min_segment_size, settings.chunk_size)
        # A chunk is split only while half of what it has left is a worthwhile request of its own.
        board = Board(current.segments, settings.min_segment_size if chunk is None else chunk // 4, split)
        limit = max(1, min(settings.segments, len(current.segments)))
        lanes = Lanes(limit) if chunk is not None and limit > 1 else None  # one connection: nothing to steer
        first = current.segments[0].index
        errors: list[BaseException] = []
        # A small file is over before a follower thread would have started: its bytes are hashed as written.
        follows = current.size is None or current.size > settings.min_segment_size
        self._feed = None if follows else assembly.feed
        if follows:
            assembly.follow(board.segments)
        mine = functools.partial(self._work, current, board, halt, (first, probe), None, 0)
        try:
            if lanes is None and limit == 1:  # no pool to start and shut down: 2% of a small file's worker CPU
                errors += _caught(mine)
            else:
                with ThreadPoolExecutor(max_workers=limit) as threads:

                    def work(n: int) -> Future[None]:
                        return threads.submit(self._work, current, board, halt, (first, probe), lanes, n)

                    if lanes is None:  # the calling thread is one of them
                        others = [work(n) for n in range(1, limit)]
                        errors += _caught(mine)
                    else:
                        others = [work(n) for n in range(limit)]
                        _steer(lanes, limit, (board, halt, self.tell), others)
                    errors += [e for e in (f.exception() for f in others) if e is not None]
        finally:
            assembly.pause()
        if errors:
            # The first real failure explains the others, which were only cancelled because of it.
            raise next((e for e in errors if not isinstance(e, Cancelled)), errors[0])
        return replace(current, segments=board.segments())

    def _work(
        self,
        current: Plan,
        board: Board,
        halt: Halt,
        probe: tuple[int, Handoff | None],
        lanes: Lanes | None,
        n: int,
    ) -> None:
        """Thread ``n``: the next segment nobody took, then halves of whatever range has the most left, while
        worth it; each one only while its lane is open (ramp.py)."""
        first, handoff = probe
        try:
            for take in (board.next, functools.partial(board.steal, halt.wait)):
                while (segment := _taken(take, lanes, n)) is not None:
                    try:
                        self._segment(current, board, halt, segment, handoff if segment.index == first else None)
                    finally:
                        if lanes is not None:
                            lanes.leave(n)
        except BaseException:
            halt.abort()  # whatever it was, the siblings stop instead of waiting on this thread's range
            raise

    def _segment(self, current: Plan, board: Board, halt: Halt, segment: Segment, probe: Handoff | None) -> None:
        index = segment.index

        def attempt() -> None:
            given = probe.take() if probe else None
            have = self.parts.length(index)
            if given is None and have and (segment.length is None or have < segment.length):
                self.tell("resume", segment=index, offset=segment.start + have)  # a sidecar's part, or a broken body
            self._attempt(current, board, halt, index, given)

        retrying(
            attempt,
            lambda: self.parts.length(index),
            self.policy,
            halt,
            self.retried,
            events.retries(self.tell, lambda: self._asked.get(index, current.url)),
        )

    def _split(self, new: Segment, table: tuple[Segment, ...]) -> None:
        """Record a steal (parts.py), then tell the log which range was cut."""
        self.parts.split(new, table)
        victim = next((s.index for s in table if s.end == new.start), None)
        self.tell("steal", segment=new.index, start=new.start, end=new.end, victim=victim)

    def _attempt(self, current: Plan, board: Board, halt: Halt, index: int, given: tuple[int, net.Body] | None) -> None:
        """Fill the part from ``body``, then from new requests, until its segment is complete.

        An answer may end short of the segment yet whole (the probe asks only for the start of the file): the
        next request, on the same kept-alive connection, asks for the rest. Whatever body this holds is
        closed on the way out, however it leaves.
        """
        start, body = given if given is not None else (0, None)
        try:
            while True:
                have = self.parts.length(index)
                segment = board.start(index, have)
                if segment.length is not None and have >= segment.length:
                    return
                source = self._asked[index] = self._source(current, segment)
                try:
                    if body is None:
                        last = None if segment.end is None else segment.end - 1
                        head, body = self._open(current, segment.start + have, last, {}, source)
                        start = head.start
                    if start < segment.start + self.parts.length(index):  # a whole body, from a server without ranges
                        self.parts.empty(index)
                        board.start(index, 0)
                    got = self._stream(body, board, halt, index, start)
                except (TransientError, PermanentError, RangeNotHonoured) as exc:
                    self._drop(current, source, exc)
                finally:
                    if body is not None:
                        body.close()
                        body = None
                if segment.end is None:
                    return  # a length learned only at the end: the body's end is the file's
                if not got and board.left(index):
                    raise TransientError(f"answer ended {board.left(index)} bytes short of its range")
        finally:
            if body is not None:
                body.close()

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
        raise TransientError(f"{redact_url(source)} dropped: {exc}", code=exc.code) from None

    def _open(
        self, current: Plan | None, first: int, last: int | None, extra: dict[str, str], url: str
    ) -> tuple[net.Head, net.Body]:
        # Validators belong to one server: the primary is asked If-Range with the plan's, each mirror with
        # its own from its first answer, so that no source can switch versions under its earlier bytes.
        seen = None if current is None else current if url == current.url else self._mirrors.get(url)
        if_range = None if seen is None else net.validator(seen.etag, seen.last_modified)
        headers = {**self._headers_for(url), **extra}
        head, body = net.request(
            url, headers, first=first, last=last, if_range=if_range, timeout=self.settings.timeout, tls=self.tls
        )
        try:
            if current is not None and url != current.url:
                accept.check_mirror(current, first, head)
                # Two answers of one mirror disagree: whichever came first, some of its bytes may be in the
                # parts already. The file starts over without that mirror.
                known = replace(current, etag=head.etag, last_modified=head.last_modified)
                if change := accept.changed(self._mirrors.setdefault(url, known), head):
                    with self._lock:
                        self.dropped[url] = f"it changed during the download ({change})"
                    raise RemoteChanged(f"mirror {redact_url(url)} changed: {change}")
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

    def _stream(self, body: net.Body, board: Board, halt: Halt, index: int, start: int) -> int:
        """Append the body, whose first byte is byte ``start`` of the file, as far as it belongs to the segment;
        return how many bytes. urllib3 raises on a body shorter than its Content-Length."""
        guard = SpeedGuard(self.settings.min_speed, self.settings.stall_time)
        limit = self.settings.max_size if board.left(index) is None else None  # a known size was checked before
        done = 0
        while (left := board.left(index)) != 0:  # the end may move closer while we read: a steal
            halt.check()
            data = body.read(net.CHUNK if left is None else min(net.CHUNK, left))
            if not data:
                break
            n = board.claim(index, len(data))
            view = memoryview(data)[:n]
            self.parts.append(index, start + done, view)
            if self._feed is not None:
                self._feed(start + done, view)
            self.meter.add(n)
            guard.add(n)
            done += n
            if limit is not None and self.parts.length(index) > limit:
                raise PermanentError(
                    f"too large: more than max_size ({format_size(limit)}) and still coming", code=TOO_LARGE
                )
        return done


def _caught(call: Callable[[], None]) -> list[BaseException]:
    """What ``call`` raised, as a list of none or one."""
    try:
        call()
    except BaseException as exc:
        return [exc]
    return []


def _taken(take: Callable[[], Segment | None], lanes: Lanes | None, n: int) -> Segment | None:
    """The next segment from ``take`` for thread ``n``, holding a lane while it works on it; None when there
    is none, or the thread is above the ramp's final width."""
    if lanes is not None and not lanes.enter(n):
        return None
    segment = take()
    if segment is None and lanes is not None:
        lanes.leave(n)
    return segment


def _steer(lanes: Lanes, limit: int, file: tuple[Board, Halt, Tell], threads: list[Future[None]]) -> None:
    """Narrow the lanes as a ramp over ``limit`` connections says, while chunks are left to hand out and the
    file runs; then the width is final."""
    ramp = Ramp(limit)
    try:
        _narrow(ramp, lanes, file, threads)
    except BaseException:
        file[1].abort()  # the threads stop now, not after fetching the whole file
        raise
    finally:
        lanes.end(ramp.kept)


def _narrow(ramp: Ramp, lanes: Lanes, file: tuple[Board, Halt, Tell], threads: list[Future[None]]) -> None:
    board, halt, tell = file

    def running() -> bool:
        return bool(board.pending()) and not halt.is_set() and not all(f.done() for f in threads)

    if not _waited(ramp_timing.SETTLE, running, threads):
        return
    while running():
        if not lanes.narrowed(_STEER_POLL):  # a thread above the width still finishes its chunk
            continue
        ramp.begin(time.monotonic(), board.received())
        if not _waited(ramp_timing.WINDOW, running, threads):
            return
        was = ramp.width
        going_on = ramp.step(time.monotonic(), board.received())
        if ramp.width != was:
            lanes.resize(ramp.width)
            tell("ramp", connections=ramp.width, measured=round(ramp.rate))
        if not going_on:
            return


def _waited(seconds: float, running: Callable[[], bool], threads: list[Future[None]]) -> bool:
    """Wait ``seconds`` while ``running()``, and say whether it still is: a file done sooner is not kept
    waiting for its ramp."""
    deadline = time.monotonic() + seconds
    while running():
        left = deadline - time.monotonic()
        if left <= 0:
            return True
        futures.wait(threads, timeout=min(left, _STEER_POLL))
    return False
