"""HTTP for one worker process: the only module that imports urllib3.

Each worker process owns one PoolManager, created after the process starts and shared by all its segment
threads and every file it handles, so connections stay alive across files. Every request asks for a byte
range and raw bytes (``Accept-Encoding: identity``, read without decoding): ranges and digests refer to the
bytes the server stores. urllib3's own retries are off except for redirects; the caller's segment loop
decides what to retry, because only it knows how many bytes already arrived.
"""

from __future__ import annotations

import email.utils
import functools
import re
import threading
import time
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import urllib3
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
from urllib3.util import parse_url

from .credentials import CREDENTIAL_HEADERS
from .errors import FetchError, PermanentError, TransientError

CHUNK = 256 * 1024
MAX_REDIRECTS = 10
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", re.IGNORECASE)
_UNSATISFIED_RANGE = re.compile(r"bytes\s+\*/(\d+)", re.IGNORECASE)
_RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})

_max_connections = 8
_clients: dict[tuple[str | None, str | None, bool], urllib3.PoolManager] = {}
_clients_lock = threading.Lock()


def start(max_connections: int) -> None:
    """Size this process's connection pools; call once per process, before any request."""
    global _max_connections
    _max_connections = max(1, max_connections)
    _clients.clear()


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
        return urllib3.ProxyManager(proxy, **options)  # type: ignore[arg-type]
    return urllib3.PoolManager(**options)  # type: ignore[arg-type]


@functools.lru_cache(maxsize=256)
def _proxy_for(scheme: str, host: str) -> str | None:
    """HTTP_PROXY / HTTPS_PROXY / NO_PROXY, as curl and wget read them."""
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(scheme)
    if not proxy or urllib.request.proxy_bypass_environment(host, proxies):  # type: ignore[attr-defined]  # not in typeshed
        return None
    return proxy


@dataclass(frozen=True, slots=True)
class Head:
    """What one response says about the file and about the bytes in its body."""

    status: int
    url: str  # after redirects
    start: int  # offset of the body's first byte in the file
    length: int | None  # bytes the body promises, when stated
    total: int | None  # the whole file's size, when stated
    etag: str | None
    last_modified: str | None
    content_encoding: str | None

    @property
    def ranged(self) -> bool:
        return self.status == 206


def validator(etag: str | None, last_modified: str | None) -> str | None:
    """What If-Range may carry: a strong ETag, else Last-Modified (RFC 9110 §13.1.5)."""
    if etag and not etag.startswith("W/"):
        return etag
    return last_modified


class Body:
    """A streamed response body; closing it returns the connection to the pool only when it is reusable."""

    def __init__(self, response: urllib3.BaseHTTPResponse) -> None:
        self._response = response

    def read(self, amount: int) -> bytes:
        """Up to ``amount`` bytes, as soon as any have arrived (b"" at the end of the body)."""
        try:
            return self._response.read1(amount, decode_content=False)
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
        )
    except (HTTPError, LocationValueError, LocationParseError) as exc:
        raise _transport_error(exc) from None


def _describe_or_close(response: urllib3.BaseHTTPResponse, url: str) -> Head:
    try:
        return _head(response, url)
    except BaseException:
        response.close()
        response.release_conn()
        raise


def _head(response: urllib3.BaseHTTPResponse, url: str) -> Head:
    status = response.status
    if status == 304:  # a conditional GET: the copy we have is current
        return _describe(response, url, status=304, start=0, length=0, total=None)
    if status == 416:  # bytes=0- of an empty file is unsatisfiable; the server still tells the size
        match = _UNSATISFIED_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
        if match and int(match.group(1)) == 0:
            return _describe(response, url, status=206, start=0, length=0, total=0)
    if status not in (200, 206):
        raise _status_error(response)
    length = _int_header(response.headers.get("Content-Length"))
    if status == 200:
        return _describe(response, url, status=200, start=0, length=length, total=length)
    match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
    if match is None:
        raise TransientError(f"206 response without a usable Content-Range from {_host(url)}")
    start, end, total = int(match.group(1)), int(match.group(2)), match.group(3)
    return _describe(response, url, status=206, start=start, length=end - start + 1, total=_int_header(total))


def _describe(response: urllib3.BaseHTTPResponse, url: str, **fields: int | None) -> Head:
    h = response.headers
    return Head(
        url=url,
        etag=h.get("ETag"),
        last_modified=h.get("Last-Modified"),
        content_encoding=h.get("Content-Encoding"),
        **fields,  # type: ignore[arg-type]
    )


def _int_header(value: str | None) -> int | None:
    """A non-negative integer, or None: an unparseable or negative length means unknown."""
    if value is None or not value.strip().isdigit():
        return None
    return int(value)


def _status_error(response: urllib3.BaseHTTPResponse) -> FetchError:
    status = response.status
    reason = f"HTTP {status} {response.reason or ''}".strip()
    if status in _RETRY_STATUSES or status >= 500:
        return TransientError(reason, retry_after=retry_after(response.headers.get("Retry-After")))
    return PermanentError(reason)


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
    if isinstance(reason, ProtocolError):
        return TransientError(f"connection broken: {_strerror(reason)}")
    if isinstance(reason, LocationValueError | LocationParseError):
        return PermanentError(f"bad URL or redirect target: {reason}")
    return TransientError(f"{type(reason).__name__}: {reason}")


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


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date; None when absent or bad."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
