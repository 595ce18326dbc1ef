"""headlines.parse_headers gives what http.client's own gives, for any head, and skips the email parser for
the plain ones every server sends."""

from __future__ import annotations

import email.message
import email.parser
import http.client
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bulkdl.worker import headlines

NGINX_304 = (
    b"Server: nginx/1.22.1\r\nDate: Thu, 03 Dec 2026 09:00:00 GMT\r\nLast-Modified: Wed, 02 Dec 2026 10:00:00 GMT\r\n"
    b'Connection: keep-alive\r\nETag: "6571a2c0-5e6"\r\n\r\n'
)


def _state(message: email.message.Message) -> object:
    """Everything of a message, as values: its fields, defects, payload (a sub-message too), what urllib3 asks."""
    state: dict[str, object] = dict(vars(message))
    state["defects"] = [(type(d), str(d)) for d in message.defects]
    payload = message.get_payload()
    if isinstance(payload, list):
        state["_payload"] = [_state(part) for part in payload]
    return state, message.items(), message.get_all("etag"), message.is_multipart()


def _both(head: bytes) -> tuple[object, object]:
    """What each parser makes of ``head`` (the lines after the status line), as a value or the exception."""
    made = []
    for parse in (headlines.parse_headers, headlines._stdlib):
        try:
            message = parse(io.BytesIO(head + b"rest of the stream"))
        except http.client.HTTPException as exc:
            made.append((type(exc), str(exc)))
            continue
        made.append(_state(message))
    return made[0], made[1]


def test_a_plain_head_is_parsed_without_the_email_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the email parser was used for a plain head")

    monkeypatch.setattr(email.parser, "Parser", refuse)
    message = headlines.parse_headers(io.BytesIO(NGINX_304))
    assert message["etag"] == '"6571a2c0-5e6"'
    assert message.items()[0] == ("Server", "nginx/1.22.1")


def test_a_plain_head_is_what_http_client_makes_of_it() -> None:
    ours, theirs = _both(NGINX_304)
    assert ours == theirs


@pytest.mark.parametrize(
    "head",
    [
        b"X-Folded: one\r\n  two\r\nETag: x\r\n\r\n",  # obs-fold: a continuation line
        b"No colon here\r\nETag: x\r\n\r\n",  # a defect, and the rest is payload
        b"Bad Name: v\r\n\r\n",
        b": no name\r\n\r\n",
        b"ETag: a\rb\r\n\r\n",  # a bare CR, which the email parser takes for a line end
        b"ETag: x\r\nContent-Length: 5\r\n",  # the stream ends inside the head
        b"ETag:\r\nX-Tabs:\t\t v \t\r\n\n",
        b"From nobody\r\nETag: x\r\n\r\n",
        b"Location:http://h:8080/a:b\r\n\r\n",  # the name ends at the first colon
        b"Caf\xe9: v\r\nETag: x\r\n\r\n",  # a name outside ASCII: no field at all for the email parser
        # types whose body the email parser reads on: defects of a multipart without a boundary, a sub-message
        b"Content-Type: multipart/byteranges; boundary=THIS\r\nContent-Length: 100\r\n\r\n",
        b"Content-Type: multipart/mixed\r\n\r\n",
        b"content-type: Message/rfc822\r\nContent-Length: 5\r\n\r\n",
        b"Content-Type: message/delivery-status\r\n\r\n",
        b"Content-Type:\x0cmultipart/mixed\r\n\r\n",  # str.strip() takes a form feed for a blank
        b"X-Latin: caf\xe9\r\n\r\n",
        b"X: 1\r\n" * 101 + b"\r\n",  # more than http.client allows
        b"X: " + b"a" * 70_000 + b"\r\n\r\n",
    ],
)
def test_an_odd_head_is_what_http_client_makes_of_it(head: bytes) -> None:
    ours, theirs = _both(head)
    assert ours == theirs


_LINE = st.one_of(
    st.binary(max_size=40),
    st.tuples(
        st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=0, max_size=12),
        st.sampled_from([":", ": ", ":\t", " :", ""]),
        st.binary(max_size=30),
        st.sampled_from([b"\r\n", b"\n", b"\r", b""]),
    ).map(lambda t: t[0].encode() + t[1].encode() + t[2] + t[3]),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_LINE, max_size=8), st.sampled_from([b"\r\n", b"\n", b""]))
def test_any_head_is_what_http_client_makes_of_it(lines: list[bytes], end: bytes) -> None:
    head = b"".join(line if line.endswith(b"\n") else line + b"\r\n" for line in lines) + end
    ours, theirs = _both(head)
    assert ours == theirs


def test_install_puts_it_where_http_client_looks_it_up() -> None:
    try:
        headlines.install()
        assert http.client.parse_headers is headlines.parse_headers
    finally:
        headlines.uninstall()
    assert http.client.parse_headers is headlines._stdlib
