"""A threaded HTTP/1.1 server for tests and the demo: real sockets, Range, validators, switchable faults.

Each path maps to a Resource whose fields are the fault switches, so a test says what a path does and
then reads the request log to see what the client asked for. ``/gen/<size>/<name>`` serves ``size``
deterministic bytes for any name (the demo's manifest picks its own files that way).
"""

from __future__ import annotations

import contextlib
import email.utils
import functools
import hashlib
import itertools
import random
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SLOW_RATE = 16 * 1024 * 1024  # bytes per second per connection for slow=True, as nginx's limit_rate 16m
_STALL_SECONDS = 20.0
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_GEN = re.compile(r"/gen/(\d+)/[^/]+")
_CHUNK = 64 * 1024


def content(name: str, size: int) -> bytes:
    """Deterministic, incompressible bytes for ``name``: the same on every machine and Python."""
    return hashlib.shake_256(name.encode()).digest(size)


def wire(value: str) -> str:
    """``value`` as a header: Latin-1 as it is (send_header's encoding), anything else as its UTF-8 bytes.

    Servers put whatever bytes they like in a header, and http.client reads them back as Latin-1: "²" arrives
    as "²", while "\u0663" (Arabic-Indic 3) arrives as the two characters of its UTF-8 encoding.
    """
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode().decode("latin-1")
    return value


@functools.lru_cache(maxsize=4)  # a request for a range of a big file is not 20 ms of SHA-1 over all of it
def etag_of(data: bytes) -> str:
    return '"' + hashlib.sha1(data).hexdigest()[:16] + '"'


@dataclass
class Resource:
    data: bytes
    etag: str | None = None  # None: derived from the data
    last_modified: float = 1_700_000_000.0
    ranges: bool = True  # False: ignore Range, always 200 with the whole body
    status: int | None = None  # answer every request with this status and no body
    fail_first: int = 0  # answer the next K requests with fail_status (counts down)
    fail_status: int = 503  # what those K requests get: 503, 429, 408, ...
    retry_after: str | None = None  # Retry-After header sent with those failures
    drop_after: int | None = None  # close the connection after sending this many body bytes (once per request)
    drops: int = 1_000_000  # how many requests the drop applies to (counts down)
    drop_garbage: bool = False  # drop by writing bytes that are no TLS record to the raw socket, then closing
    delay: float = 0.0  # seconds to wait before answering each request
    rate: int | None = None  # bytes per second per response
    rated: int = 1_000_000  # how many requests the rate applies to (counts down)
    link: int | None = None  # bytes per second shared by all answers of this resource at once: one link's worth
    stall_after: int | None = None  # send this many body bytes, then hang (a server that promised more)
    stalls: int = 1_000_000  # how many requests the stall applies to (counts down)
    honour_ranges: int | None = None  # answer this many requests' Range, then send 200 and the whole body
    max_range: int | None = None  # answer a range with at most this many bytes, as CDNs that cap ranges
    hollow_after: int | None = None  # a range starting past this offset: its Content-Range, but no body at all
    shift_range: int = 0  # answer bytes=X- (X > 0) with bytes from X+shift, and say so in Content-Range
    extra_bytes: int = 0  # send this many bytes more than Content-Length promises
    new_etag_each: bool = False  # a different ETag on every response, as a file being rewritten
    anonymous: bool = False  # send neither ETag nor Last-Modified, as many dynamic servers
    next_data: bytes | None = None  # after switch_after responses, serve this instead (a new version)
    switch_after: int = 0
    chunked: bool = False  # no Content-Length, Transfer-Encoding: chunked, no ranges
    close_delimited: bool = False  # no Content-Length, body ends when the connection closes, no ranges
    http10: bool = False  # answer as HTTP/1.0, closing after every answer; with close_delimited, ranges still work
    content_encoding: str | None = None
    headers: dict[str, str] = field(default_factory=dict)  # more response headers
    redirect_to: str | None = None  # answer 302 with this Location
    garble_content_range: bool = False  # send 206 with a Content-Range nobody can parse
    unknown_total: bool = False  # Content-Range "bytes a-b/*": the complete length unstated (RFC 9110 §14.4)
    fail_at: dict[int, tuple[int, str | None]] = field(default_factory=dict)  # range start → (status, Retry-After)
    content_range: str | None = None  # send 206 with this Content-Range instead of the true one
    content_length: str | None = None  # send this Content-Length instead of the true one (same body)
    slow_at: int | None = None  # an answer starting at this offset trickles at slow_rate (one slow segment)
    slow_rate: int = 256 * 1024
    trickle_headers: float | None = None  # send the status line and headers one byte per this many seconds
    endless_headers: str | None = None  # "many" header lines, one "long" line, or "continue" (100s) without end

    def validators(self) -> tuple[str, str]:
        etag = f'"{random.getrandbits(64):x}"' if self.new_etag_each else self.etag or etag_of(self.data)
        return etag, email.utils.formatdate(self.last_modified, usegmt=True)


@dataclass(frozen=True)
class _Turn:
    """What one request gets, decided atomically from the resource's counters."""

    resource: Resource
    fail: bool
    drop_after: int | None
    stall_after: int | None
    rate: int | None
    ranges: bool
    link: _Link | None = None

    def starting_at(self, offset: int) -> _Turn:
        return replace(self, rate=self.resource.slow_rate) if offset == self.resource.slow_at else self


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    range: str | None
    if_range: str | None
    status: int
    sent: int  # body bytes actually written
    conn: int  # connection serial: equal for requests on one kept-alive connection
    headers: dict[str, str] = field(default_factory=dict)
    logged: float = field(default_factory=time.time)  # wall clock: tests compare it with HTTP dates
    began: float = 0.0  # monotonic: when its head had been read (with ``ended``, which requests overlapped)
    ended: float = field(default_factory=time.monotonic)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out at once, not 40 ms apart on a delayed ACK
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.conn_id = next(self.server.conn_ids)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def handle(self) -> None:
        # A client that drops a connection with unread bytes resets it: a hang-up, not an error.
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            super().handle()

    def do_GET(self) -> None:
        self.server.busy(self.path.split("?", 1)[0], +1)
        try:
            self._serve(head_only=False)
        except Exception as exc:
            self.server.errors.append(exc)
            raise
        finally:
            self.server.busy(self.path.split("?", 1)[0], -1)

    def do_HEAD(self) -> None:
        self._serve(head_only=True)

    def _serve(self, head_only: bool) -> None:
        self.epoch = self.server.epoch  # what a later reset must not see in its log
        self.began = time.monotonic()
        path = self.path.split("?", 1)[0]
        turn = self.server.turn(path)
        if turn is None:
            return self._empty(path, 404)
        resource = turn.resource
        if resource.http10:  # before the status line is written; the connection closes after this answer
            self.protocol_version, self.close_connection = "HTTP/1.0", True
        if resource.delay:
            time.sleep(resource.delay)
        if self._answered_without_body(path, turn):
            return None
        etag, modified = resource.validators()
        if self._not_modified(resource, etag):
            return self._empty(path, 304, {"ETag": etag, "Last-Modified": modified})
        span = self._span(resource, etag, modified) if turn.ranges else None
        size = len(resource.data)
        headers = {} if resource.anonymous else {"ETag": etag, "Last-Modified": modified}
        headers["Accept-Ranges"] = "bytes" if resource.ranges else "none"
        headers |= resource.headers | (
            {"Content-Encoding": resource.content_encoding} if resource.content_encoding else {}
        )
        if span == "unsatisfiable":
            return self._empty(path, 416, {"Content-Range": f"bytes */{size}"})
        start, end = (0, size) if span is None else _lie_about(resource, span, size)
        if span and start in resource.fail_at:
            failure, retry_after = resource.fail_at[start]
            return self._empty(path, failure, {"Retry-After": retry_after} if retry_after else {})
        status = 206 if span else 200
        headers |= _content_range(resource, start, end, size) if span else {}
        if span and resource.hollow_after is not None and start > resource.hollow_after:
            end = start  # Content-Length: 0 under a Content-Range that promises the whole span
        body = b"" if head_only else resource.data[start:end]
        sent = self._send(status, headers, body, end - start, turn.starting_at(start))
        self.server.record(self, path, status, sent)

    def _answered_without_body(self, path: str, turn: _Turn) -> bool:
        """Answer the switches that replace the whole response: a status, a redirect, a failure, a bad head."""
        resource = turn.resource
        if resource.trickle_headers is not None or resource.endless_headers is not None:
            self._unending_head(path, resource)
        elif resource.status is not None:
            self._empty(path, resource.status, resource.headers)
        elif resource.redirect_to is not None:
            self._empty(path, 302, {"Location": resource.redirect_to})
        elif turn.fail:
            self._empty(
                path, resource.fail_status, {"Retry-After": resource.retry_after} if resource.retry_after else {}
            )
        else:
            return False
        return True

    def _not_modified(self, resource: Resource, etag: str) -> bool:
        """RFC 9110 §13.2.2: If-None-Match decides when present; otherwise If-Modified-Since."""
        if_none_match = self.headers.get("If-None-Match")
        if if_none_match is not None:
            return etag in [tag.strip() for tag in if_none_match.split(",")] or if_none_match.strip() == "*"
        since = self.headers.get("If-Modified-Since")
        if since is None:
            return False
        try:
            return resource.last_modified <= email.utils.parsedate_to_datetime(since).timestamp()
        except (TypeError, ValueError):
            return False

    def _span(self, resource: Resource, etag: str, modified: str) -> tuple[int, int] | str | None:
        """The byte range to send, None for the whole body, or "unsatisfiable"."""
        header = self.headers.get("Range")
        if not header or not resource.ranges or resource.chunked or (resource.close_delimited and not resource.http10):
            return None
        if_range = self.headers.get("If-Range")
        if if_range is not None and if_range not in (etag, modified):
            return None  # the client's copy is stale: send everything
        match = _RANGE.fullmatch(header.strip())
        if match is None or match.group(1) == match.group(2) == "":
            return None
        size = len(resource.data)
        if match.group(1) == "":  # suffix range: the last N bytes
            return (max(0, size - int(match.group(2))), size)
        start = int(match.group(1))
        end = min(size, int(match.group(2)) + 1) if match.group(2) else size
        if resource.max_range is not None:
            end = min(end, start + resource.max_range)
        return "unsatisfiable" if start >= size else (start, end)

    def _send(self, status: int, headers: dict[str, str], body: bytes, length: int, turn: _Turn | None = None) -> int:
        resource = turn.resource if turn else None
        framing = (
            "chunked"
            if resource and resource.chunked
            else "close"
            if resource and resource.close_delimited
            else "length"
        )
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, wire(value))
        if framing == "chunked":
            self.send_header("Transfer-Encoding", "chunked")
        elif framing == "close":
            if not resource or not resource.http10:  # HTTP/1.0 closes without saying so
                self.send_header("Connection", "close")
            self.close_connection = True
        else:
            stated = resource.content_length if resource else None
            self.send_header("Content-Length", str(length) if stated is None else wire(stated))
        self.end_headers()
        extra = random.Random(len(body)).randbytes(resource.extra_bytes) if resource and resource.extra_bytes else b""
        sent = self._write_body(body + extra, framing, turn)
        if resource and resource.drop_garbage and sent < len(body):
            self._garble()
        if sent < len(body) or framing == "close":
            self.close_connection = True
        return min(sent, len(body))

    def _write_body(self, body: bytes, framing: str, turn: _Turn | None) -> int:
        limit = len(body) if turn is None or turn.drop_after is None else min(turn.drop_after, len(body))
        stall = turn.stall_after if turn else None
        rate = turn.rate if turn else None
        link = turn.link if turn else None
        pace = rate or (turn.resource.link if turn else None)
        piece_size = _CHUNK if not pace else max(1024, min(_CHUNK, pace // 8))  # a trickle, not bursts
        sent = 0
        view = memoryview(body)
        started = time.monotonic()
        try:
            while sent < limit:
                n = min(piece_size, limit - sent, stall - sent if stall is not None else piece_size)
                if n <= 0:
                    self.wfile.flush()
                    time.sleep(_STALL_SECONDS)  # hold the connection open, sending nothing
                    break
                piece = view[sent : sent + n]
                self.wfile.write(b"%x\r\n%s\r\n" % (n, piece) if framing == "chunked" else piece)
                sent += n
                if link is not None:
                    link.carry(n)
                if rate and sent < limit:  # not after the last piece: the answer is over, as a log must say
                    time.sleep(max(0.0, sent / rate - (time.monotonic() - started)))
            if framing == "chunked" and sent == len(body):
                self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client hung up: normal when it has all it wanted of an open-ended range
        return sent

    def _unending_head(self, path: str, resource: Resource) -> None:
        """A head that never finishes in time: trickled byte by byte, or one that never ends at all."""
        self.server.record(self, path, 200, 0)
        self.close_connection = True
        if resource.trickle_headers is not None:
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n" + b"X-Pad: x\r\n" * 20
            pieces = [head[i : i + 1] for i in range(len(head))]
            pause = resource.trickle_headers
        else:
            lines = {"many": b"X-More: x\r\n", "long": b"x" * 1024, "continue": b"HTTP/1.1 100 Continue\r\n\r\n"}
            kind = resource.endless_headers or "many"
            start = b"" if kind == "continue" else b"HTTP/1.1 200 OK\r\n" + (b"X-Long: " if kind == "long" else b"")
            pieces = [start, *itertools.repeat(lines[kind], 100_000)]
            pause = 0.001  # a steady drip: every recv gets bytes, so no read timeout ever fires
        deadline = time.monotonic() + _STALL_SECONDS
        with contextlib.suppress(OSError):  # the client hung up: the point of the exercise
            for piece in pieces:
                if time.monotonic() > deadline:
                    break
                self.wfile.write(piece)
                self.wfile.flush()
                time.sleep(pause)

    def _garble(self) -> None:
        """Break the TLS stream mid-body: bytes on the raw socket, under the TLS layer, that no record parses."""
        with contextlib.suppress(OSError):
            self.wfile.flush()
            socket.socket.send(self.connection, b"this is not a TLS record\r\n" * 4)

    def _empty(self, path: str, status: int, headers: dict[str, str] | None = None) -> None:
        # Logged before it is sent: a client that retries at once on a new connection must not be logged first.
        self.server.record(self, path, status, 0)
        self._send(status, headers or {}, b"", 0)


class _Link:
    """A link's bytes per second, shared by every answer that goes through it: more connections, no more speed."""

    def __init__(self, rate: int) -> None:
        self._rate = rate
        self._lock = threading.Lock()
        self._free = 0.0  # when the link has carried every byte given to it so far

    def carry(self, n: int) -> None:
        """Return once the link has carried ``n`` more bytes after everything before them."""
        with self._lock:
            self._free = max(self._free, time.monotonic()) + n / self._rate  # an idle link saves up no burst
            due = self._free
        time.sleep(max(0.0, due - time.monotonic()))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, port: int) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.conn_ids = itertools.count(1)
        self.lock = threading.Lock()
        self.resources: dict[str, Resource] = {}
        self.generated: dict[str, Resource] = {}
        self.log: list[Request] = []
        self.errors: list[BaseException] = []
        self.in_flight: dict[str, int] = {}  # GETs being answered now, per path
        self.peaks: dict[str, int] = {}  # the most ever answered at once, per path
        self.links: dict[str, _Link] = {}
        # Bumped by each reset: a request a previous test's client still had in flight (a throttled body whose
        # client was killed) finishes after the reset and must not land in the next test's log.
        self.epoch = 0

    def lookup(self, path: str) -> Resource | None:
        with self.lock:
            found = self.resources.get(path) or self.generated.get(path)
            if found is None and (match := _GEN.fullmatch(path)):
                found = self.generated[path] = Resource(content(path, int(match.group(1))))
            return found

    def busy(self, path: str, change: int) -> None:
        with self.lock:
            now = self.in_flight[path] = self.in_flight.get(path, 0) + change
            self.peaks[path] = max(self.peaks.get(path, 0), now)

    def turn(self, path: str) -> _Turn | None:
        """Count this request against the resource's switches and say what it gets."""
        resource = self.lookup(path)
        if resource is None:
            return None
        with self.lock:
            fail = resource.fail_first > 0
            resource.fail_first -= fail
            drop = resource.drop_after if resource.drop_after is not None and resource.drops > 0 else None
            resource.drops -= drop is not None
            stall = resource.stall_after if resource.stall_after is not None and resource.stalls > 0 else None
            resource.stalls -= stall is not None
            rate = resource.rate if resource.rated > 0 else None
            resource.rated -= rate is not None
            ranges = resource.honour_ranges is None or resource.honour_ranges > 0
            if resource.honour_ranges is not None:
                resource.honour_ranges -= 1
            if resource.next_data is not None:
                resource.switch_after -= 1
                if resource.switch_after < 0:
                    resource.data, resource.next_data, resource.etag = resource.next_data, None, None
            link = self.links.setdefault(path, _Link(resource.link)) if resource.link else None
            return _Turn(replace(resource), fail, drop, stall, rate, ranges, link)

    def record(self, handler: _Handler, path: str, status: int, sent: int) -> None:
        entry = Request(
            method=handler.command,
            path=path,
            range=handler.headers.get("Range"),
            if_range=handler.headers.get("If-Range"),
            status=status,
            sent=sent,
            conn=handler.conn_id,
            headers=dict(handler.headers.items()),
            began=handler.began,
        )
        with self.lock:
            if handler.epoch == self.epoch:
                self.log.append(entry)


class FaultServer:
    """The server as tests and the demo use it; the same interface as tests.nginx.NginxServer."""

    kind = "builtin"

    def __init__(self, port: int = 0, tls: ssl.SSLContext | None = None) -> None:
        self._server = _Server(port)
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        host, port = self._server.server_address[:2]
        self.base_url = f"{'https' if tls else 'http'}://{host}:{port}"

    def add(self, path: str, data: bytes, *, slow: bool = False, **switches: Any) -> str:
        """Serve ``data`` at ``/path`` with the given Resource switches; return its URL."""
        path = "/" + path.lstrip("/")
        if slow:
            switches["rate"] = SLOW_RATE
        with self._server.lock:
            self._server.resources[path] = Resource(data, **switches)
        return self.base_url + path

    def add_error(self, path: str, status: int) -> str:
        return self.add(path, b"", status=status)

    def add_redirect(self, path: str, location: str) -> str:
        return self.add(path, b"", redirect_to=location)

    def change(self, path: str, **switches: Any) -> None:
        path = "/" + path.lstrip("/")
        with self._server.lock:
            self._server.resources[path] = replace(self._server.resources[path], **switches)

    def update(self, path: str, data: bytes) -> None:
        """New content at the same URL, as a mirror that published a new version: new ETag and Last-Modified."""
        self.change(path, data=data, etag=None, last_modified=time.time())

    def requests(self, path: str | None = None) -> list[Request]:
        with self._server.lock:
            return [r for r in self._server.log if path is None or r.path == "/" + path.lstrip("/")]

    def peak(self, path: str) -> int:
        """The most GETs of ``/path`` the server was ever answering at the same time."""
        with self._server.lock:
            return self._server.peaks.get("/" + path.lstrip("/"), 0)

    @property
    def errors(self) -> list[BaseException]:
        return list(self._server.errors)

    def reset(self) -> None:
        with self._server.lock:
            self._server.resources.clear()
            self._server.log.clear()
            self._server.errors.clear()
            self._server.peaks.clear()
            self._server.links.clear()
            self._server.epoch += 1

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _lie_about(resource: Resource, span: tuple[int, int], size: int) -> tuple[int, int]:
    """The span actually sent for a range: shifted when the resource lies about where its bytes start."""
    start, end = span
    if start > 0 and resource.shift_range:
        return min(size, start + resource.shift_range), min(size, end + resource.shift_range)
    return start, end


def _content_range(resource: Resource, start: int, end: int, size: int) -> dict[str, str]:
    if resource.garble_content_range:
        return {"Content-Range": "bytes ?-?/?"}
    total = "*" if resource.unknown_total else str(size)
    return {"Content-Range": resource.content_range or f"bytes {start}-{end - 1}/{total}"}
