"""Response header fields parsed without the email package, for the heads every server sends.

http.client hands each response head to ``email.parser``, a general MIME parser: in a profile of a re-run of
20,000 small files (nginx on loopback, conditional GETs) it was a fifth of each worker's CPU, the largest single
cost of a request. A head whose every line is a plain ``Name: value`` gives the same HTTPMessage when its
fields are set directly; any other head (a folded line, a line without a colon, a name with a space, bytes cut
short, a multipart/ or message/ Content-Type, whose body the email parser reads on) goes to the email parser
exactly as before, so its defects and what urllib3 makes of them do not change.
"""

from __future__ import annotations

import email.parser
import http.client
import re
from typing import BinaryIO

# What email.feedparser reads as one whole field (a name of printable ASCII but ':', then its value), with
# compat32's treatment of the value: blanks and tabs after the colon dropped, the rest kept to the line end.
_FIELD = re.compile(r"([!-9;-~]+):[ \t]*([^\r\n]*)\r?\n")
# A type whose body the email parser goes on to read as parts or as a message (defects, a sub-message);
# matched loosely, anywhere in the value: a head it sends to the email parser for nothing only costs time
_PARSED_BODY = re.compile(r"multipart|message", re.IGNORECASE)
_ENDS = (b"\r\n", b"\n")
_stdlib = http.client.parse_headers


def parse_headers(
    fp: BinaryIO, _class: type[http.client.HTTPMessage] = http.client.HTTPMessage
) -> http.client.HTTPMessage:
    """``http.client.parse_headers``, with its bounds (a line of 64 KiB, 100 fields), in one pass of a regex."""
    lines: list[bytes] = http.client._read_headers(fp)  # type: ignore[attr-defined]  # the bounds, as they are
    if lines[-1] in _ENDS:
        fields = []
        for line in lines[:-1]:
            match = _FIELD.fullmatch(line.decode("iso-8859-1"))
            if match is None or (match[1].lower() == "content-type" and _PARSED_BODY.search(match[2])):
                break
            fields.append((match[1], match[2]))
        else:
            message = _class()
            message._headers = fields  # type: ignore[attr-defined]  # what the parser fills, one field at a time
            message.set_payload("")  # as the parser leaves a head with no body after it
            return message
    return email.parser.Parser(_class=_class).parsestr(b"".join(lines).decode("iso-8859-1"))


def install() -> None:
    """Make http.client (and so urllib3) parse heads here: HTTPResponse.begin looks the function up by name."""
    http.client.parse_headers = parse_headers  # type: ignore[assignment]  # the same signature, typed


def uninstall() -> None:
    http.client.parse_headers = _stdlib
