"""HTTP for one worker process: the only module that imports urllib3.

Each worker process owns one PoolManager, created after the process starts and shared by all its segment
threads and every file it handles, so connections stay alive across files. Every request asks for a byte
range and raw bytes (``Accept-Encoding: identity``, read without decoding): ranges and digests refer to the
bytes the server stores. urllib3's own retries are off except for redirects; the caller's segment loop
decides what to retry, because only it knows how many bytes already arrived.
"""

from __future__ import annotations

import functools
import http.client
import threading
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    EmptyPoolError,
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
from urllib3.util import parse_url

from ..credentials import CREDENTIAL_HEADERS
from ..errors import FetchError, PermanentError, TransientError
from . import deadline, heads
from .heads import Head, retry_after, validator

__all__ = ["CHUNK", "Body", "Head", "Tls", "request", "retry_after", "same_origin", "start", "stop", "validator"]

CHUNK = 256 * 1024
MAX_REDIRECTS = 10

_max_connections = 8
_clients: dict[tuple[str | None, str | None, bool], urllib3.PoolManager] = {}
_clients_lock = threading.Lock()


def start(max_connections: int) -> None:
    """Size this process's connection pools; call once per process, before any request."""
    global _max_connections
    stop()
    _max_connections = max(1, max_connections)


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
    parts = urlsplit(url)
    proxy = _proxy_for(parts.scheme, parts.hostname or "")
    key = (proxy, tls.ca_bundle, tls.verify)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = _new_client(proxy, tls)
        return client


def _new_client(proxy: str | None, tls: Tls) -> urllib3.PoolManager:
    options: dict[str, object] = {"num_pools": 16, "maxsize": _max_connections, "block": True}
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


class _HTTPConnection(HTTPConnection):
    def getresponse(self) -> HTTPResponse:  # type: ignore[override]  # as urllib3 itself declares it
        return _watched(self, super().getresponse)


class _HTTPSConnection(HTTPSConnection):
    def getresponse(self) -> HTTPResponse:  # type: ignore[override]  # as urllib3 itself declares it
        return _watched(self, super().getresponse)


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


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
        try:
            return self._response.read1(amount, decode_content=False)
        except SSLError as exc:
            # Past the handshake a TLS error is a broken stream (a bad record, a cut mid-record), not a
            # certificate that another attempt cannot cure: resume it like a reset.
            raise TransientError(f"connection broken: TLS: {exc}") from None
        except HTTPError as exc:
            raise _transport_error(exc) from None

    def close(self) -> None:
        if not self._response.closed:
            # Unread bytes would poison the next request on this connection: drop it, keep the pool slot.
            self._response.close()
        self._response.release_conn()

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
        target = urljoin(url, location)
        scheme = urlsplit(target).scheme.lower()
        if scheme not in ("http", "https"):
            raise PermanentError(f"redirected to {scheme}:, which is not http or https")
        if not same_origin(target, url):
            send = {k: v for k, v in send.items() if k.lower() not in CREDENTIAL_HEADERS}
        url = target
    raise PermanentError(f"more than {MAX_REDIRECTS} redirects")


def _get(url: str, headers: dict[str, str], timeout: float, tls: Tls) -> urllib3.BaseHTTPResponse:
    try:
        # No retries and no redirects inside urllib3: the caller judges statuses, Retry-After and broken
        # connections, because only it knows how many bytes already arrived.
        return _client(url, tls).request(
            "GET",
            url,
            headers=headers,
            preload_content=False,
            decode_content=False,
            retries=False,
            redirect=False,
            timeout=urllib3.Timeout(connect=timeout, read=timeout),
            # The pools block when all their connections are out: a connection never released (a bug)
            # would otherwise make every later request wait for ever, silently.
            pool_timeout=timeout,
        )
    except EmptyPoolError as exc:
        where = f"{exc.pool.host}:{exc.pool.port}"
        raise TransientError(f"no free connection to {where} in {timeout:g} s: all {_max_connections} in use") from None
    except (HTTPError, LocationValueError, LocationParseError) as exc:
        raise _transport_error(exc) from None


def _describe_or_close(response: urllib3.BaseHTTPResponse, url: str) -> Head:
    try:
        return heads.parse(response.status, response.reason or "", response.headers, url, _host(url))
    except BaseException:
        response.close()
        response.release_conn()
        raise


def _transport_error(exc: Exception) -> FetchError:
    reason = exc.reason if isinstance(exc, MaxRetryError) and exc.reason is not None else exc
    if isinstance(reason, NameResolutionError):
        return TransientError(f"cannot resolve host {reason.conn.host}")
    if isinstance(reason, NewConnectionError):
        return TransientError(f"cannot connect to {reason.conn.host}:{reason.conn.port}: {_strerror(reason)}")
    if isinstance(reason, ConnectTimeoutError):  # after NewConnectionError, which is a subclass of it
        conn: Any = reason.args[0] if reason.args else None
        where = f" to {conn.host}:{conn.port}" if hasattr(conn, "host") and hasattr(conn, "port") else ""
        return TransientError(f"timed out connecting{where}")
    if isinstance(reason, ReadTimeoutError | TimeoutError):
        return TransientError("timed out waiting for the server")
    if isinstance(reason, SSLError):
        return PermanentError(f"TLS failed: {reason}")
    if isinstance(reason, ProtocolError) and isinstance(reason.args[-1], _HeadTimeout):
        return TransientError("timed out waiting for the response headers")
    if isinstance(reason, ProtocolError) and _too_large(reason.args[-1]):
        return TransientError(f"response head too large: {reason.args[-1]}")
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


def same_origin(a: str, b: str) -> bool:
    pa, pb = parse_url(a), parse_url(b)
    return (pa.scheme, pa.host, pa.port) == (pb.scheme, pb.host, pb.port)


def _host(url: str) -> str:
    return parse_url(url).host or url
