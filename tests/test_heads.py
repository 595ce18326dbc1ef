"""Reading numbers from response headers: ASCII digits within a file's reach, or unknown; never a traceback."""

from __future__ import annotations

import datetime
import email.utils
import time

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bulkdl.errors import FetchError, PermanentError, TransientError
from bulkdl.worker import heads

URL = "http://h/f"
HUGE = str(10**30)


def _parse(status: int, **headers: str) -> heads.Head:
    return heads.parse(status, "Reason", {k.replace("_", "-"): v for k, v in headers.items()}, URL, "h")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("123", 123),
        (" 42\t", 42),
        ("007", 7),
        (str(heads.MAX_OFFSET), heads.MAX_OFFSET),
        (str(heads.MAX_OFFSET + 1), None),
        (HUGE, None),
        ("9" * 5000, None),  # int() would refuse it (more than 4300 digits) with a ValueError
        ("-1", None),
        ("+1", None),
        ("1_000", None),
        ("1e3", None),
        ("²", None),  # str.isdigit() says yes, int() says no
        ("\u0661\u0662\u0663", None),  # Arabic-Indic 123: int() and \d accept them
        ("\uff11\uff12", None),  # fullwidth 12
        ("", None),
        ("12 34", None),
        (None, None),
    ],
)
def test_numbers_are_ascii_digits_within_a_files_reach(text: str | None, expected: int | None) -> None:
    assert heads.number(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("bytes 0-99/100", (0, 99, 100)),
        ("bytes 5-5/6", (5, 5, 6)),
        ("bytes 0-99/*", (0, 99, None)),
        ("BYTES  10-19/20", (10, 19, 20)),
        ("bytes 9-0/100", None),  # end before start
        ("bytes 0-100/100", None),  # end at or past the stated total
        ("bytes 0-99/50", None),
        (f"bytes 0-{HUGE}/*", None),
        (f"bytes {HUGE}-{HUGE}/*", None),
        (f"bytes 0-9/{HUGE}", None),
        ("bytes -1-9/10", None),
        ("bytes \u0660-\u0669/\u0661\u0660", None),
        ("bytes 0-9/1\u0660", None),
        ("bytes ?-?/?", None),
        ("bytes */100", None),
        ("", None),
        (None, None),
    ],
)
def test_content_range(text: str | None, expected: tuple[int, int, int | None] | None) -> None:
    assert heads.content_range(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0.0),
        ("1", 1.0),
        (" 120 ", 120.0),
        (HUGE, 1e30),  # huge is fine: the caller caps it at max_retry_after
        ("9" * 400, float("inf")),
        ("-1", None),
        ("1.5", None),
        ("²", None),  # str.isdigit() accepted it, then float() raised
        ("٣", None),
        ("soon", None),
        ("", None),
        ("Mon, 32 Foo 99999 99:99:99 GMT", None),
        ("01 Jan 99999999999999999999 00:00:00 GMT", None),  # a year no C long holds: OverflowError
        (None, None),
    ],
)
def test_retry_after(text: str | None, expected: float | None) -> None:
    assert heads.retry_after(text) == expected


def test_retry_after_as_a_date() -> None:
    soon = email.utils.formatdate(time.time() + 100, usegmt=True)
    assert 98 <= (heads.retry_after(soon) or 0) <= 100
    assert heads.retry_after("Mon, 01 Jan 2001 00:00:00 GMT") == 0.0, "a date past is no wait"


@pytest.mark.parametrize(
    "length", ["-1", HUGE, "٣", "²", "3, 4", "three", "", str(heads.MAX_OFFSET + 1)], ids=lambda v: v[:8]
)
def test_a_content_length_that_cannot_be_read_makes_the_answer_unusable(length: str) -> None:
    # urllib3 frames the body by its own, more lenient reading of the header ("٣" is 3 bytes to it).
    with pytest.raises(TransientError, match=r"^unusable Content-Length '.*' from h$"):
        _parse(200, Content_Length=length)


@pytest.mark.parametrize(("length", "expected"), [("12", 12), ("12, 12", 12), (None, None)])
def test_content_length(length: str | None, expected: int | None) -> None:
    head = _parse(200) if length is None else _parse(200, Content_Length=length)
    assert (head.length, head.total) == (expected, expected)


@pytest.mark.parametrize(
    "content_range",
    ["bytes 9-0/100", "bytes 0-100/100", f"bytes 0-{HUGE}/*", "bytes \u0660-\u0669/\u0661\u0660", "bytes ?-?/?"],
)
def test_a_206_with_an_unusable_content_range_is_worth_another_attempt(content_range: str) -> None:
    with pytest.raises(TransientError, match=r"^206 response without a usable Content-Range from h$"):
        _parse(206, Content_Range=content_range, Content_Length="10")


def test_a_206_says_where_its_bytes_go() -> None:
    head = _parse(206, Content_Range="bytes 10-19/30", ETag='"e"')
    assert (head.start, head.length, head.total, head.etag, head.ranged) == (10, 10, 30, '"e"', True)


@pytest.mark.parametrize(
    ("status", "retry_after", "error", "wait"),
    [
        (429, "1", TransientError, 1.0),
        (408, "2", TransientError, 2.0),
        (503, "²", TransientError, None),
        (503, "-5", TransientError, None),
        (502, HUGE, TransientError, 1e30),
        (404, "1", PermanentError, None),
    ],
)
def test_status_errors(status: int, retry_after: str, error: type[FetchError], wait: float | None) -> None:
    with pytest.raises(error) as caught:
        _parse(status, Retry_After=retry_after)
    assert str(caught.value) == f"HTTP {status} Reason"
    assert getattr(caught.value, "retry_after", None) == wait


def test_a_reason_phrase_stays_one_short_line() -> None:
    with pytest.raises(TransientError) as caught:
        heads.parse(503, "Busy\rX-Evil: 1" + "!" * 500, {}, URL, "h")
    assert str(caught.value) == "HTTP 503 Busy?X-Evil: 1" + "!" * 66 + "..."


_numbers = st.one_of(
    st.integers(min_value=-(10**40), max_value=10**40).map(str),
    st.text(alphabet="0123456789\u0660\u0661\u0663\u00b2\uff11-+ *", max_size=22),
)
_header_text = st.one_of(
    st.text(max_size=30),
    _numbers,
    st.builds("bytes {}-{}/{}".format, _numbers, _numbers, _numbers),
    st.builds("bytes */{}".format, _numbers),
    st.builds("Mon, 01 Jan {} 00:00:00 GMT".format, _numbers),
)


@given(
    status=st.sampled_from([200, 206, 304, 404, 408, 416, 429, 500, 503, 599, 0, 1000]),
    headers=st.dictionaries(
        st.sampled_from(["Content-Length", "Content-Range", "Retry-After", "ETag"]), _header_text, max_size=4
    ),
)
def test_parsing_a_head_raises_only_fetch_errors(status: int, headers: dict[str, str]) -> None:
    try:
        head = heads.parse(status, "Reason", headers, URL, "h")
    except FetchError:
        return
    for value in (head.start, head.length, head.total):
        assert value is None or 0 <= value <= heads.MAX_OFFSET + 1
    if head.ranged and head.total is not None and head.length is not None:
        assert head.start + head.length <= head.total


@given(_header_text)
def test_retry_after_never_raises(value: str) -> None:
    wait = heads.retry_after(value)
    assert wait is None or wait >= 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Tue, 14 Nov 2023 22:13:20 GMT", 1_700_000_000 * 10**9),
        ("Thu, 01 Jan 1970 00:00:00 GMT", 0),
        ("Fri, 31 Dec 9999 23:59:59 GMT", None),  # os.utime takes it; SQLite's INTEGER did not (exit 70)
        ("Mon, 01 Jan 99999999999999999999 00:00:00 GMT", None),  # OverflowError in the worker
        ("Fri, 11 Apr 2262 23:47:17 GMT", None),  # past the last second whose nanoseconds an int64 holds
        ("Fri, 11 Apr 2262 23:47:16 GMT", 9_223_372_036 * 10**9),
        ("yesterday", None),
        (None, None),
    ],
)
def test_mtime_ns(text: str | None, expected: int | None) -> None:
    assert heads.mtime_ns(text) == expected


@given(_header_text)
def test_mtime_ns_never_raises(value: str) -> None:
    ns = heads.mtime_ns(value)
    assert ns is None or abs(ns) < 2**63


def test_a_date_in_zone_minus_0000_is_utc_whatever_the_local_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        utc = heads.mtime_ns("Mon, 01 Jan 2024 00:00:00 GMT")
        assert utc == 1_704_067_200 * 1_000_000_000
        assert heads.mtime_ns("Mon, 01 Jan 2024 00:00:00 -0000") == utc
    finally:
        monkeypatch.undo()
        time.tzset()


def _by_email_utils(value: str) -> float | None:
    try:
        when = email.utils.parsedate_to_datetime(value)
        return (when if when.tzinfo else when.replace(tzinfo=datetime.timezone.utc)).timestamp()
    except (TypeError, ValueError, OverflowError, IndexError):
        return None


_FIXDATE_LIKE = st.builds(
    "{}, {:02d} {} {:04d} {:02d}:{:02d}:{:02d} {}".format,
    st.sampled_from(["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun", "Xyz"]),
    st.integers(0, 40),
    st.sampled_from(["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec", "jan", "Foo"]),
    st.integers(0, 9999),
    st.integers(0, 25),
    st.integers(0, 61),
    st.integers(0, 61),
    st.sampled_from(["GMT", "UTC", "+0100", "-0000", "gmt"]),
)


@settings(max_examples=600)
@given(st.one_of(_FIXDATE_LIKE, _header_text))
@example("Tue, 14 Nov 2023 23:59:60 GMT")  # a leap second: refused
@example("Tue, 14 Nov 2023 24:00:00 GMT")
@example("Sat, 31 Feb 2024 00:00:00 GMT")
@example("Thu, 29 Feb 1900 00:00:00 GMT")  # not a leap year
@example("Tue, 29 Feb 2000 00:00:00 GMT")  # a leap year
@example("Sun, 01 Jan 0999 00:00:00 GMT")
@example("Sun, 01 Jan 0099 00:00:00 GMT")  # 1999, for email.utils
def test_a_date_reads_as_email_utils_reads_it(value: str) -> None:
    """The fast reader of IMF-fixdate gives email.utils' answer, including its refusals (31 Feb, 24:00)."""
    assert heads._date(value) == _by_email_utils(value)


def test_the_fixdate_form_is_read_without_email_utils(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(email.utils, "parsedate_to_datetime", None)  # calling it would raise TypeError: None
    assert heads.mtime_ns("Tue, 14 Nov 2023 22:13:20 GMT") == 1_700_000_000 * 10**9
