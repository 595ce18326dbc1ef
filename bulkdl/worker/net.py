"""HTTP for one worker process: the only module that imports urllib3.

Each worker process owns one PoolManager, created after the process starts and shared by all its segment
threads and every file it handles, so connections stay alive across files. Every request asks for a byte
range and raw bytes (``Accept-Encoding: identity``, read without decoding): ranges and digests refer to the
bytes the server stores. urllib3's own retries are off except for redirects; the caller's segment loop
decides what to retry, because only it knows how many bytes already arrived.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import logging
import queue
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    InsecureRequestWarning,
    LocationParseError,
    LocationValueError,
    MaxRetryError,
    NameResolutionError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)
from urllib3.response import HTTPResponse
from urllib3.util import Url, parse_url

from ..errors import HOST_UNREACHABLE, PROTOCOL, TIMEOUT, TLS

if TYPE_CHECKING:  # a protocol urllib3 declares for type checkers only
    from urllib3._base_connection import BaseHTTPConnection

from ..credentials import CREDENTIAL_HEADERS
from ..errors import FetchError, PermanentError, TransientError
from . import deadline, heads, limits
from .heads import Head, retry_after, validator

__all__ = [
    "CHUNK",
    "Body",
    "Head",
    "Tls",
    "close_idle",
    "request",
    "retry_after",
    "same_origin",
    "start",
    "stop",
    "validator",
]

CHUNK = 256 * 1024
MAX_REDIRECTS = 10
_IDLE_GRACE = 0.2  # seconds a pooled connection must have been idle before another thread may take its permit
# ... before a thread of its own worker that waits for a permit to its host closes it. Not 0: between two
# small files a thread's connection is idle for some microseconds, and a big file's extra segment waiting for
# a permit closed it at once, so the next small file connected anew (MIXED on loopback, 8 connections: 202-245
# connections for 200 files, 105-145 of them used once; 163-171 and 52-66 with 20 ms)
_REUSE_GRACE = 0.02

_max_connections = 8
_clients: dict[tuple[str | None, str | None, bool], urllib3.PoolManager] = {}
_clients_lock = threading.Lock()


def start(max_connections: int) -> None:
    """Size this process's connection pools (idle connections kept per host); call once per process.

    The pools never block: how many sockets may be open is the run's budget (limits.py), which a connection
    waits for as it connects. A pool that is full when a connection comes back closes it, which urllib3
    logs as a warning meant for a developer: not for the summary's reader.
    """
    global _max_connections
    stop()
    _max_connections = max(1, max_connections)
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)


def stop() -> None:
    """Close every pooled connection of this process (the next request opens new pools)."""
    with _clients_lock:
        clients = list(_clients.values())
        _clients.clear()
    for client in clients:
        client.clear()


@dataclass(frozen=True, slots=True)
class Tls:
    ca_bundle: str | None = None  # None: the system's trust store
    verify: bool = True


def _client(url: str, tls: Tls) -> urllib3.PoolManager:
    """The pool for this URL's route. Normally there is one per process: direct, system CAs, verified."""
    parts = urlsplit(url)  # its hostname, not urllib3's: NO_PROXY=::1 names no "[::1]", and no "xn--" form
    proxy = _proxy_for(parts.scheme, parts.hostname or "")
    key = (proxy, tls.ca_bundle, tls.verify)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = _new_client(proxy, tls)
        return client


def _new_client(proxy: str | None, tls: Tls) -> urllib3.PoolManager:
    options: dict[str, object] = {"num_pools": 16, "maxsize": _max_connections, "block": False}
    if tls.verify:
        options |= {"cert_reqs": "CERT_REQUIRED", "ca_certs": tls.ca_bundle}
    else:
        options["cert_reqs"] = "CERT_NONE"
        urllib3.disable_warnings(InsecureRequestWarning)  # the summary says it once per file instead
    if proxy is not None:
        client: urllib3.PoolManager = urllib3.ProxyManager(proxy, **options)  # type: ignore[arg-type]
    else:
        client = urllib3.PoolManager(**options)  # type: ignore[arg-type]
    client.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
    return client


class _HeadTimeout(http.client.HTTPException):
    """The response head did not arrive in time; urllib3 wraps it in a ProtocolError, as any HTTPException."""


def _watched(conn: HTTPConnection, getresponse: Callable[[], HTTPResponse]) -> HTTPResponse:
    """``getresponse()`` with a deadline on the whole response head, not just on each recv.

    The deadline is the request's read timeout (the manifest's ``timeout``), which urllib3 has just set on
    the connection. When it passes, the watchdog shuts the socket down and http.client stops reading; a
    head cut short may even parse, so what counts is whether the deadline fired, not how reading ended.
    """
    seconds = conn.timeout
    watch = deadline.watch(conn.sock, seconds) if isinstance(seconds, int | float) and seconds > 0 else None
    if watch is None:
        return getresponse()
    try:
        response = getresponse()
    except BaseException:
        if deadline.cancel(watch):
            raise _HeadTimeout from None
        raise
    if deadline.cancel(watch):
        response.close()
        raise _HeadTimeout
    return response


class _Permitted(HTTPConnection):
    """A connection that holds a permit of the run's budget (limits.py) for as long as its socket is open,
    and tells the budget whether the host answered."""

    _permit: tuple[limits.Shared, str] | None = None
    _answering = False  # inside getresponse()
    _outlived: tuple[limits.Shared, str] | None = None  # the permit of a socket the answer's body still reads

    def connect(self) -> None:
        shared = limits.current()
        if shared is None:  # outside a pool's worker (tests, verify): nothing to count
            super().connect()
            return
        key = limits.host_key(self.host, self.port)
        self._give_back()  # a connection object reconnecting after a failure holds none twice
        # While it waits, an idle connection of this process to the same host may be what holds the permit:
        # closed soon, not after the grace the janitor gives other workers' connections (0.2 s a file).
        shared.acquire(key, limits.stop_flag(), lambda: close_idle(key.__eq__, grace=_REUSE_GRACE))
        self._permit = (shared, key)
        try:
            super().connect()
        except (NewConnectionError, ConnectTimeoutError) as exc:  # NameResolutionError is one of them
            shared.failed(key, _strerror(exc))
            self._give_back()
            raise
        except BaseException:
            self._give_back()
            raise
        shared.connected(key)

    def getresponse(self) -> HTTPResponse:  # type: ignore[override]  # as urllib3 itself declares it
        self._answering = True
        try:
            response = _watched(self, super().getresponse)
        except BaseException:
            _release(self._take_outlived())
            raise
        finally:
            self._answering = False
        permit = self._take_outlived()
        if permit is not None:
            response.bulkdl_permit = permit  # type: ignore[attr-defined]  # ours, released with the body
        if (held := self._permit or permit) is not None:
            held[0].connected(held[1])  # an answer, on any connection, says the host is up
        return response

    def close(self) -> None:
        if self._answering and self._permit is not None:
            # http.client closes a connection whose answer says it will close as soon as the head is read;
            # the socket lives on in the answer's body, and its permit with it (net._release_body).
            self._outlived, self._permit = self._permit, None
        try:
            super().close()
        finally:
            self._give_back()

    def _take_outlived(self) -> tuple[limits.Shared, str] | None:
        permit, self._outlived = self._outlived, None
        return permit

    def _give_back(self) -> None:
        permit, self._permit = self._permit, None
        _release(permit)


def _release(permit: tuple[limits.Shared, str] | None) -> None:
    if permit is not None:
        permit[0].release(permit[1])


def _release_body(response: urllib3.BaseHTTPResponse) -> None:
    """Give back the permit of a closing connection once its answer is done with: its socket is gone."""
    _release(getattr(response, "bulkdl_permit", None))
    response.bulkdl_permit = None  # type: ignore[attr-defined]


class _HTTPSConnection(_Permitted, HTTPSConnection):
    """Permitted, for HTTPS."""


class _Stamped(HTTPConnectionPool):
    """Notes when each connection came back, so that only one idle for a while is taken for another thread:
    one between two files of its own worker is about to be used again."""

    def _put_conn(self, conn: BaseHTTPConnection | None) -> None:
        if conn is not None:
            conn.idle_since = time.monotonic()  # type: ignore[attr-defined]  # our own attribute, on our classes
        super()._put_conn(conn)


class _HTTPPool(_Stamped):
    ConnectionCls = _Permitted


class _HTTPSPool(_Stamped, HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


def _key(conn: HTTPConnection) -> str:
    return limits.host_key(conn.host, conn.port)


def close_idle(surplus: Callable[[str], bool], grace: float = _IDLE_GRACE) -> None:
    """Close every idle pooled connection whose host ``surplus`` names: another thread, maybe in another
    worker, waits for the permit it holds. The pool gets an empty slot back, which makes a new connection
    when next needed."""
    with _clients_lock:
        clients = list(_clients.values())
    for client in clients:
        for key in client.pools.keys():  # noqa: SIM118  (it cannot be iterated: keys() copies under its lock)
            pool = client.pools.get(key)
            idle: queue.LifoQueue[HTTPConnection | None] | None = getattr(pool, "pool", None)
            if idle is None:
                continue
            taken = []
            with contextlib.suppress(queue.Empty):
                while True:
                    taken.append(idle.get(block=False))
            for conn in taken:
                quiet = time.monotonic() - getattr(conn, "idle_since", 0.0)
                if conn is not None and conn.sock is not None and quiet >= grace and surplus(_key(conn)):
                    conn.close()
                    conn = None
                current = getattr(pool, "pool", None)  # None once evicted: nobody would close what went back
                try:
                    if id(current) != id(idle):  # (by identity, without narrowing idle to what current is)
                        raise queue.Full
                    idle.put(conn, block=False)
                except queue.Full:  # a connection came back meanwhile and took the slot
                    if conn is not None:
                        conn.close()


@functools.lru_cache(maxsize=256)
def _proxy_for(scheme: str, host: str) -> str | None:
    """HTTP_PROXY / HTTPS_PROXY / NO_PROXY, as curl and wget read them."""
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(scheme)
    if not proxy or urllib.request.proxy_bypass_environment(host, proxies):  # type: ignore[attr-defined]  # not in typeshed
        return None
    return proxy


class Body:
    """A streamed response body; closing it returns the connection to the pool only when it is reusable."""

    def __init__(self, response: urllib3.BaseHTTPResponse) -> None:
        self._response = response

    def read(self, amount: int) -> bytes:
        """Up to ``amount`` bytes, as soon as any have arrived (b"" at the end of the body)."""
        shared = limits.current()
        try:
            if shared is None:
                return self._response.read1(amount, decode_content=False)
            data = self._response.read1(shared.read_size(amount), decode_content=False)
            shared.pace(len(data), limits.stop_flag())
            return data
        except SSLError as exc:
            # Past the handshake a TLS error is a broken stream (a bad record, a cut mid-record), not a
            # certificate that another attempt cannot cure: resume it like a reset.
            raise TransientError(f"connection broken: TLS: {exc}") from None
        except HTTPError as exc:
            raise _transport_error(exc) from None

    def close(self) -> None:
        # Unread bytes would poison the next request on this connection: drop it, keep the pool slot. A body
        # with nothing left (a 304, a range read to its end) leaves the connection reusable: dropping it cost
        # a re-run a new connection per file (a round trip, and on HTTPS a handshake, each).
        if not self._response.closed:
            if self._response.length_remaining == 0:
                # Read the nothing that is left: http.client refuses the connection's next request
                # (ResponseNotReady: Request-sent) while the previous answer is still open, so every request
                # after a 304 on a kept connection failed, and was sent again on a new one.
                self._response.drain_conn()
            else:
                self._response.close()
        self._response.release_conn()
        _release_body(self._response)

    def __enter__(self) -> Body:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def request(
    url: str,
    headers: dict[str, str],
    *,
    first: int = 0,
    last: int | None = None,
    if_range: str | None = None,
    timeout: float = 30.0,
    tls: Tls = Tls(),
) -> tuple[Head, Body]:
    """GET ``bytes=first-last`` of ``url``, following redirects; raise FetchError unless the answer is usable.

    Redirects are followed here rather than by urllib3, so that every hop is checked: http(s) only, at most
    MAX_REDIRECTS, and credentials dropped as soon as the origin changes.
    """
    send = {**headers, "Accept-Encoding": "identity", "Range": f"bytes={first}-{'' if last is None else last}"}
    if if_range:
        send["If-Range"] = if_range
    for _ in range(MAX_REDIRECTS + 1):
        response = _get(url, send, timeout, tls)
        location = response.get_redirect_location()
        if not location:
            return _describe_or_close(response, url), Body(response)
        response.drain_conn()
        response.release_conn()
        _release_body(response)
        target = urljoin(url, location)
        scheme = urlsplit(target).scheme.lower()
        if scheme not in ("http", "https"):
            raise PermanentError(f"redirected to {scheme}:, which is not http or https")
        if not same_origin(target, url):
            send = {k: v for k, v in send.items() if k.lower() not in CREDENTIAL_HEADERS}
        url = target
    raise PermanentError(f"more than {MAX_REDIRECTS} redirects")


def _get(url: str, headers: dict[str, str], timeout: float, tls: Tls) -> urllib3.BaseHTTPResponse:
    # No retries and no redirects inside urllib3: the caller judges statuses, Retry-After and broken
    # connections, because only it knows how many bytes already arrived.
    options: dict[str, Any] = {
        "headers": headers,
        "preload_content": False,
        "decode_content": False,
        "retries": False,
        "redirect": False,
        "timeout": urllib3.Timeout(connect=timeout, read=timeout),
    }
    try:
        parsed = _parsed(url)
        client = _client(url, tls)
        if isinstance(client, urllib3.ProxyManager):  # which adds its own headers and the absolute form
            return client.request("GET", url, **options)
        # What PoolManager.urlopen does without a redirect to follow, minus parsing the URL twice again: a
        # tenth of a small file's worker CPU went to parse_url (a re-run of 20,000 files, profiled).
        pool = client.connection_from_host(parsed.host, port=parsed.port, scheme=parsed.scheme)
        return pool.urlopen("GET", parsed.request_uri, assert_same_host=False, **options)
    except (HTTPError, LocationValueError, LocationParseError) as exc:
        raise _transport_error(exc) from None


def _describe_or_close(response: urllib3.BaseHTTPResponse, url: str) -> Head:
    try:
        return heads.parse(response.status, response.reason or "", response.headers, url, _host(url))
    except BaseException:
        response.close()
        response.release_conn()
        _release_body(response)
        raise


def _transport_error(exc: Exception) -> FetchError:
    reason = exc.reason if isinstance(exc, MaxRetryError) and exc.reason is not None else exc
    if isinstance(reason, NameResolutionError):
        return TransientError(f"cannot resolve host {reason.conn.host}", code=HOST_UNREACHABLE)
    if isinstance(reason, NewConnectionError):
        return TransientError(
            f"cannot connect to {reason.conn.host}:{reason.conn.port}: {_strerror(reason)}", code=HOST_UNREACHABLE
        )
    if isinstance(reason, ConnectTimeoutError):  # after NewConnectionError, which is a subclass of it
        conn: Any = reason.args[0] if reason.args else None
        where = f" to {conn.host}:{conn.port}" if hasattr(conn, "host") and hasattr(conn, "port") else ""
        return TransientError(f"timed out connecting{where}", code=TIMEOUT)
    if isinstance(reason, ReadTimeoutError | TimeoutError):
        return TransientError("timed out waiting for the server", code=TIMEOUT)
    if isinstance(reason, SSLError):
        return PermanentError(f"TLS failed: {reason}", code=TLS)
    if isinstance(reason, ProtocolError) and isinstance(reason.args[-1], _HeadTimeout):
        return TransientError("timed out waiting for the response headers", code=TIMEOUT)
    if isinstance(reason, ProtocolError) and _too_large(reason.args[-1]):
        return TransientError(f"response head too large: {reason.args[-1]}", code=PROTOCOL)
    if isinstance(reason, ProtocolError):
        return TransientError(f"connection broken: {_strerror(reason)}")
    if isinstance(reason, LocationValueError | LocationParseError):
        return PermanentError(f"bad URL or redirect target: {reason}")
    return TransientError(f"{type(reason).__name__}: {reason}")


def _too_large(exc: object) -> bool:
    """http.client's bounds on a head (a line of 64 KiB, 100 headers): what keeps endless headers finite."""
    return isinstance(exc, http.client.LineTooLong) or (
        isinstance(exc, http.client.HTTPException) and str(exc).startswith("got more than")
    )


def _strerror(exc: BaseException) -> str:
    """The innermost OS-level reason, which is what a user can act on ("Connection refused")."""
    for _ in range(8):
        wrapped = exc.args[-1] if exc.args and isinstance(exc.args[-1], BaseException) else None
        inner = wrapped or exc.__cause__ or exc.__context__
        if inner is None:
            break
        exc = inner
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


@functools.lru_cache(maxsize=1024)
def _parsed(url: str) -> Url:
    """urllib3's parse of ``url``, once for the several looks a file's request takes at it (a few files at
    once per thread: the cache holds the ones in flight)."""
    return parse_url(url)


def same_origin(a: str, b: str) -> bool:
    pa, pb = _parsed(a), _parsed(b)
    return (pa.scheme, pa.host, pa.port) == (pb.scheme, pb.host, pb.port)


def _host(url: str) -> str:
    return _parsed(url).host or url
