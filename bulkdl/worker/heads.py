"""What a response's status and headers say about the file: the part of HTTP that needs no socket.

Every number bulkdl reads from a server is read here, and only as ASCII digits no larger than a file offset
can be. Python's own readers are too lenient for input from the network: ``str.isdigit`` accepts ``²``
(which ``int`` then refuses), ``int`` and ``\\d`` accept ``٣``, and ``10**30`` parses fine but fits no file.
A length or range that cannot be read, or that contradicts itself, makes the answer unusable (worth another
attempt, like a garbled one); only an absent one is unknown. Nothing here raises anything but FetchError.
"""

from __future__ import annotations

import datetime
import email.utils
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import PROTOCOL, FetchError, PermanentError, TransientError, http_code
from ..sizes import MAX_SIZE

MAX_OFFSET = MAX_SIZE  # beyond the largest file offset a number describes no file
_NUMBER = re.compile(r"[0-9]{1,19}")  # 19 digits hold every number up to MAX_OFFSET, and a few above it
_DELAY = re.compile(r"[0-9]+")  # Retry-After's delta-seconds: only its size is irrelevant (it is capped)
_CONTENT_RANGE = re.compile(r"bytes[ \t]+([0-9]+)-([0-9]+)/([0-9]+|\*)", re.IGNORECASE | re.ASCII)
_UNSATISFIED_RANGE = re.compile(r"bytes[ \t]+\*/([0-9]+)", re.IGNORECASE | re.ASCII)
_RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
GONE = frozenset({404, 410})  # the server has no such file (410: and says it never will again)
_MAX_NS = 2**63 - 1  # an mtime in nanoseconds, as os.utime and SQLite's INTEGER hold it
_MAX_SHOWN = 80  # characters of server text a message repeats
_MONTHS = {
    m: n for n, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)
}
# IMF-fixdate; a year below 1000 is left to email.utils, which reads 0099 as 1999
_FIXDATE = re.compile(
    r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), ([0-9]{2}) (" + "|".join(_MONTHS) + r") ([1-9][0-9]{3})"
    r" ([0-9]{2}):([0-9]{2}):([0-9]{2}) GMT"
)


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


def parse(status: int, reason: str, headers: Mapping[str, str], url: str, host: str) -> Head:
    """The Head of a 200, 206, 304 (or 416 for an empty file); raise FetchError for any other answer."""
    if status == 304:  # a conditional GET: the copy we have is current
        return _head(headers, url, status=304, start=0, length=0, total=None)
    if status == 416:  # bytes=0- of an empty file is unsatisfiable; the server still tells the size
        match = _UNSATISFIED_RANGE.fullmatch(headers.get("Content-Range", "").strip())
        if match and number(match.group(1)) == 0:
            return _head(headers, url, status=206, start=0, length=0, total=0)
    if status not in (200, 206):
        raise status_error(status, reason, headers.get("Retry-After"))
    length = content_length(headers.get("Content-Length"), host)
    if status == 200:
        return _head(headers, url, status=200, start=0, length=length, total=length)
    span = content_range(headers.get("Content-Range"))
    if span is None:
        raise TransientError(f"206 response without a usable Content-Range from {host}", code=PROTOCOL)
    start, end, total = span
    return _head(headers, url, status=206, start=start, length=end - start + 1, total=total)


def content_range(value: str | None) -> tuple[int, int, int | None] | None:
    """``bytes START-END/TOTAL`` (TOTAL may be ``*``) as numbers, or None when unreadable or contradictory."""
    match = _CONTENT_RANGE.fullmatch((value or "").strip())
    if match is None:
        return None
    start, end = number(match.group(1)), number(match.group(2))
    total = None if match.group(3) == "*" else number(match.group(3))
    if start is None or end is None or end < start:
        return None
    if match.group(3) != "*" and (total is None or end >= total):
        return None  # a range past the end of the file it belongs to: one of the two numbers is false
    return start, end, total


def content_length(value: str | None, host: str) -> int | None:
    """The body's length; None when not stated. One that cannot be read makes the answer unusable, because
    urllib3 and http.client read it more leniently than this (``٣`` is 3 to them, ``10**30`` a length to
    wait for): taking it as unknown here would let the body end somewhere else than bulkdl thinks.
    """
    if value is None:
        return None
    lengths = {number(item) for item in value.split(",")}  # "5, 5": a repeated header, folded (RFC 9110 §8.6)
    if len(lengths) != 1 or None in lengths:
        raise TransientError(f"unusable Content-Length {_shown(value)} from {host}", code=PROTOCOL)
    return lengths.pop()


def number(value: str | None) -> int | None:
    """A byte count or offset: ASCII digits, at most MAX_OFFSET; None for anything else (unknown)."""
    if value is None:
        return None
    text = value.strip(" \t")
    if not _NUMBER.fullmatch(text):
        return None
    n = int(text)
    return n if n <= MAX_OFFSET else None


def status_error(status: int, reason: str, retry_after_header: str | None) -> FetchError:
    """5xx, 408, 425 and 429 are worth another attempt, after Retry-After if given; other statuses are not."""
    message = f"HTTP {status} {_printable(reason)}".strip()
    if status in _RETRY_STATUSES or status >= 500:
        return TransientError(message, retry_after=retry_after(retry_after_header), code=http_code(status))
    return PermanentError(message, status)


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date; None when absent or bad."""
    if value is None:
        return None
    value = value.strip(" \t")
    if _DELAY.fullmatch(value):
        return float(value)  # float("9" * 400) is inf, never an error; the caller caps it
    when = _date(value)
    return None if when is None else max(0.0, when - time.time())


def mtime_ns(last_modified: str | None) -> int | None:
    """Last-Modified as a file mtime in nanoseconds; None when absent, unreadable, or beyond what an mtime
    (and the state database's 64-bit integers) can hold: past the year 2262, or before 1677.
    """
    when = None if last_modified is None else _date(last_modified)
    if when is None:
        return None
    ns = int(when) * 1_000_000_000
    return ns if -_MAX_NS <= ns <= _MAX_NS else None


def _date(value: str) -> float | None:
    """An HTTP date as a POSIX timestamp; None for anything else."""
    try:
        if (fixed := _FIXDATE.fullmatch(value)) is not None:
            # RFC 9110's preferred form, what servers send, in one match: email.utils' general reader was a
            # twentieth of a small file's CPU (a profile of 20,000 first downloads). Same result, same refusals.
            day, month, year, hour, minute, second = fixed.groups()
            fields = (int(year), _MONTHS[month], int(day), int(hour), int(minute), int(second))
            return datetime.datetime(*fields, tzinfo=datetime.timezone.utc).timestamp()
        when = email.utils.parsedate_to_datetime(value)
        # "-0000" (RFC 5322: UTC, zone unknown) parses as a naive datetime, which timestamp() would read as
        # this machine's local time. HTTP dates are always UTC.
        return (when if when.tzinfo else when.replace(tzinfo=datetime.timezone.utc)).timestamp()
    except (TypeError, ValueError, OverflowError, IndexError):  # not a date, or one no clock can reach
        return None


def _printable(text: str) -> str:
    """Server text made safe for a one-line message: short, and without control characters."""
    shown = "".join(ch if ch.isprintable() else "?" for ch in text[:_MAX_SHOWN])
    return shown + "..." if len(text) > _MAX_SHOWN else shown


def _shown(value: str) -> str:
    return repr(_printable(value))


def _head(headers: Mapping[str, str], url: str, **fields: int | None) -> Head:
    return Head(
        url=url,
        etag=headers.get("ETag"),
        last_modified=headers.get("Last-Modified"),
        content_encoding=headers.get("Content-Encoding"),
        **fields,  # type: ignore[arg-type]
    )
