"""Plain YAML data to checked values: every problem is collected with where it stands, none raised.

A problem names a *path* into the document (``("files", 4321, "sha256")``), or a line the parser gave;
paths become lines only when the problems are reported, with one more read of the text (yamldoc.lines),
so a valid manifest never pays for marks. The key tables say what each value must be; the converters check
one value each and raise ValueError with a message a user can act on.
"""

from __future__ import annotations

import datetime
import difflib
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, TypeVar
from urllib.parse import urljoin, urlsplit, urlunsplit

from ..credentials import missing_variables
from ..errors import ManifestError
from ..paths import PLAIN_URL, unencoded
from ..sizes import _UNITS as SIZE_UNITS
from ..sizes import parse_size
from .prune import Cap
from .scalars import Invalid
from .yamldoc import BadKey, Document

_MAX_SHOWN = 300  # characters of a key or message repeated from the file
_MAX_SEGMENTS = 64
_SPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f]")  # \s is exactly str.isspace()
Where = tuple[Any, ...]  # a path into the document: mapping keys and list indices
Json = dict[str, Any]


def label(path: Where) -> str:
    """How a message names a place: ``files[3].sha256``."""
    text = ""
    for step in path:
        text += f"[{step}]" if isinstance(step, int) else f".{step}" if text else str(step)
    return text


@dataclass
class Problems:
    source: str
    # (a line, or the path whose line it is), key, message, a path whose line the message ends with, and the
    # column, which only a syntax error knows
    found: list[tuple[int | Where, str, str, Where | None, int | None]] = field(default_factory=list)

    def add(self, path: Where, message: str, key: str | None = None, see: Where | None = None) -> None:
        self.found.append((path, label(path) if key is None else key, message, see, None))

    def at(self, line: int, key: str, message: str, column: int | None = None) -> None:
        self.found.append((line, key, message, None, column))

    def error(self, locate: Callable[[], Callable[[Where], int]]) -> ManifestError:
        """Every problem in file order, one line each; ``locate`` is asked for lines only when a path needs one."""
        line_of = locate() if any(not isinstance(p[0], int) or p[3] for p in self.found) else _no_paths
        shown = []
        for where, key, message, see, column in self.found:
            line = where if isinstance(where, int) else line_of(where)
            text = message if see is None else f"{message} (line {line_of(see)})"
            # Keys and values come from the file: escape what is not printable, so one problem stays one line.
            place = line if column is None else f"{line}:{column}"  # file:LINE:COL, as compilers say
            shown.append((line, f"{self.source}:{place}: {_printable(key)}: {_printable(text)}"))
        return ManifestError("\n".join(text for _, text in sorted(shown, key=lambda p: p[0])))


def _no_paths(path: Where) -> int:
    raise AssertionError(path)


def _printable(text: str) -> str:
    # Short too: a message may quote a value, and aliases can make one long value appear in every entry.
    shown = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text[:_MAX_SHOWN])
    return shown + "..." if len(text) > _MAX_SHOWN else shown


Convert = Callable[[Any], Any]
_C = TypeVar("_C", bound=Convert)
# Each converter's value as JSON Schema says it (parent/schema_json.py): beside the check, so they agree.
JSON_OF: dict[Convert, Json] = {}


def described(json: Json) -> Callable[[_C], _C]:
    def register(convert: _C) -> _C:
        JSON_OF[convert] = json
        return convert

    return register


def unknown_key(key: str, known_keys: Iterable[str]) -> str:
    """The message for an unknown key: the nearest known one when a typo is likely, else all of them."""
    choices = list(known_keys)
    near = difflib.get_close_matches(key.lower(), choices, n=1)
    return f"unknown key; did you mean {near[0]}?" if near else f"unknown key (expected one of {', '.join(choices)})"


def top_key(key: str) -> str:
    """The message for an unknown top-level key, which may be one that belongs lower down, or a typo of one."""
    if key in SETTING_KEYS or key == "headers":
        return "not a top-level key; write it under defaults: or in an entry"
    if key in ENTRY_KEYS:
        return "not a top-level key; write it in an entry of files:"
    if not difflib.get_close_matches(key.lower(), TOP_KEYS, n=1):
        lower = difflib.get_close_matches(key.lower(), [*SETTING_KEYS, *ENTRY_KEYS], n=1)
        if lower:
            return f"unknown key; did you mean {lower[0]}? (under defaults: or in an entry)"
    return unknown_key(key, sorted(TOP_KEYS))


def _as_yaml_read_it(value: Any) -> str | None:
    """Why a value that should be text is not: YAML reads an unquoted ``2024``, ``yes`` or ``2024-01-01`` as a
    number, a boolean or a date before bulkdl sees it. None for other values (``key:`` with nothing is no slip)."""
    if isinstance(value, bool):
        kind, shown = "the boolean", str(value).lower()
    elif isinstance(value, int | float | datetime.date):
        kind, shown = "the date" if isinstance(value, datetime.date) else "the number", str(value)
    else:
        return None
    return f"expected text, but YAML read the unquoted value as {kind} {shown}: quote it"


def whole(minimum: int, maximum: int | None = None, what: str = "") -> Convert:
    @described({"type": "integer", "minimum": minimum, **({} if maximum is None else {"maximum": maximum})})
    def convert(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"expected a whole number of at least {minimum}, got {value!r}")
        if maximum is not None and value > maximum:
            raise ValueError(f"at most {maximum} {what}, got {value}")
        return value

    return convert


positive_int = whole(1)


def _any_case(word: str) -> str:
    return "".join(f"[{ch.lower()}{ch.upper()}]" for ch in word)


_SIZE_TEXT = r"^\s*[0-9]+(?:\.[0-9]+)?\s*(?:" + "|".join(_any_case(unit) for unit in SIZE_UNITS if unit) + r")?\s*$"
described({"oneOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": _SIZE_TEXT}]})(parse_size)


@described({"type": "boolean"})
def flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


@described({"oneOf": [{"type": "integer", "minimum": 1}, {"type": "string", "pattern": _SIZE_TEXT}]})
def positive_size(value: Any) -> int:
    n = parse_size(value)
    if n < 1:
        raise ValueError("must be at least 1 byte")
    return n


@described({"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 86400})
def seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 86400:
        raise ValueError(f"expected seconds between 0 and 86400, got {value!r}")
    return float(value)


_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


@described({"type": "string", "pattern": r"^\s*(?=\S)(?:[0-9]+h)?(?:[0-9]+m)?(?:[0-9]+s)?\s*$"})
def duration(value: Any) -> float:
    """A time budget in seconds, written with units as rclone's and systemd's are: ``90s``, ``30m``, ``2h``,
    ``1h30m``. A bare number is refused: whether 90 means seconds or minutes should not be a guess."""
    match = _DURATION.fullmatch(value.strip()) if isinstance(value, str) and value.strip() else None
    if match is None:
        raise ValueError(f"expected a duration such as 90s, 30m, 2h or 1h30m, got {value!r}")
    hours, minutes, secs = (int(group or 0) for group in match.groups())
    total = hours * 3600 + minutes * 60 + secs
    if total < 1:
        raise ValueError("must be at least 1s")
    return float(total)


@described({"type": "string", "minLength": 1})
def non_empty_text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(_as_yaml_read_it(value) or f"expected a non-empty string, got {value!r}")
    return value


_SCHEDULER = r"^[A-Za-z][A-Za-z0-9+.-]*://[^\s/]+$"


@described({"type": "string", "pattern": _SCHEDULER})
def scheduler(value: Any) -> str:
    """A Dask scheduler's address, as ``dask scheduler`` prints it: ``tcp://HOST:8786`` (tls://, ws://...)."""
    text = non_empty_text(value).strip()
    if not re.fullmatch(_SCHEDULER, text):
        raise ValueError(f"expected a Dask scheduler address such as tcp://HOST:8786, got {value!r}")
    return text


# What a URL may hold as JSON Schema says it: no whitespace, no "#", no "%" that starts no escape.
_URL_TEXT = r"^(?:[^\s#%]|%[0-9A-Fa-f]{2})+$"


@described({"type": "string", "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://[^/?#@\\s]", "allOf": [{"pattern": _URL_TEXT}]})
def http_url(value: Any) -> str:
    url = non_empty_text(value)
    if PLAIN_URL.fullmatch(url):
        return url
    unencoded(url.strip(" "))  # a space at either end is no part of a name: the whitespace message below says it
    if _SPACE_OR_CONTROL.search(url):
        raise ValueError("URL contains whitespace or control characters")
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError(f"only http and https URLs are supported, got {parts.scheme or 'no'} scheme")
    if not parts.hostname:
        raise ValueError("URL has no host")
    return url


@described(
    {
        "oneOf": [
            {"type": "integer", "minimum": 0},
            {"type": "string", "pattern": r"^\s*(?:[0-9]+|(?:[0-9]+\.?[0-9]*|\.[0-9]+)\s*%)\s*$"},
        ]
    }
)
def max_delete(value: Any) -> Cap:
    """A count of files (``500``) or a share of those the state knows (``10%``)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return Cap(count=value)
    text = value.strip() if isinstance(value, str) else ""
    if text.isascii() and text.isdigit():
        return Cap(count=int(text))
    number = text[:-1].strip()
    if text.endswith("%") and number.isascii() and number.replace(".", "", 1).isdigit():
        percent = Fraction(number)
        if percent <= 100:
            return Cap(percent=percent)
    raise ValueError(f"expected a count of files like 500 or a share like 10% (at most 100%), got {value!r}")


@described(JSON_OF[http_url])
def base_url(value: Any) -> str:
    """The top-level ``base_url``: a directory, so ``https://h/pub`` means ``https://h/pub/`` (urljoin alone
    would resolve ``a.iso`` against it to ``https://h/a.iso``, dropping ``pub``, which nobody writing a base
    means)."""
    parts = urlsplit(http_url(value))
    return urlunsplit(parts._replace(path=parts.path if parts.path.endswith("/") else parts.path + "/"))


def entry_url(base: str | None) -> Convert:
    """An entry's ``url``: absolute, or relative to ``base`` by RFC 3986's rules (urljoin): ``a/b.iso`` and
    ``../b.iso`` below or beside it, ``/b.iso`` from its host's root."""

    def convert(value: Any) -> str:
        if value.__class__ is str and PLAIN_URL.fullmatch(value):  # nearly every entry's
            return value
        url = non_empty_text(value)
        unencoded(url.strip(" "))  # as written: the message's URL is then one the user can paste back
        if base is not None:
            return http_url(urljoin(base, url))
        if not urlsplit(url).scheme:
            raise ValueError("a relative URL needs a base_url: at the top of the manifest")
        return http_url(url)

    return convert


# With a base_url an entry's url may be relative, which JSON Schema cannot tell from the top: http(s) or no
# scheme at all ("a:b.iso" would be one: RFC 3986 writes "./a:b.iso"), encoded.
described(
    {
        "type": "string",
        "pattern": "^(?:[Hh][Tt][Tt][Pp][Ss]?://|(?![A-Za-z][A-Za-z0-9+.-]*:))",
        "allOf": [{"pattern": _URL_TEXT}],
    }
)(entry_url)


@described({"const": 1})
def version(value: Any) -> int:
    """The manifest format's version: the number 1, the first line of every example and of every manifest
    bulkdl writes. ``"1"`` is refused, saying what to write: one spelling keeps the schema and diffs simple."""
    if value == 1 and value.__class__ is int:
        return 1
    if isinstance(value, str) and value.strip() == "1":
        raise ValueError('write version: 1 without quotes: a number, not the text "1"')
    if isinstance(value, int) and not isinstance(value, bool) and value > 1:
        raise ValueError(f"only version 1 is supported, got {value}; this bulkdl reads version: 1 manifests")
    raise ValueError(f"expected version: 1, got {value!r}")


DIGEST_HEX_LENGTHS = {"md5": 32, "sha1": 40, "sha256": 64, "sha512": 128, "blake2b": 128}


def hex_digest(algorithm: str) -> Convert:
    length = DIGEST_HEX_LENGTHS[algorithm]
    digits = re.compile(f"[0-9a-f]{{{length}}}")

    @described({"type": "string", "pattern": f"^\\s*[0-9A-Fa-f]{{{length}}}\\s*$"})
    def convert(value: Any) -> str:
        if value.__class__ is str and digits.fullmatch(value):  # as nearly every manifest writes it
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):  # 64 decimal digits read as a number
            raise ValueError(
                f"YAML read the unquoted digest as the number {value!r} (all its hex digits are decimal ones); "
                f'quote it: {algorithm}: "..."'
            )
        hex_text = non_empty_text(value).strip().lower()
        if not digits.fullmatch(hex_text):
            raise ValueError(f"expected {length} hex digits for {algorithm}, got {value!r}")
        return hex_text

    return convert


@described({"type": ["string", "number"], "pattern": "^[^\r\n]*$"})
def header_value(value: Any) -> str:
    text = str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value
    if not isinstance(text, str) or "\r" in text or "\n" in text:
        raise ValueError("header values must be single-line strings")
    missing = missing_variables(text)
    if missing:
        raise ValueError(f"environment variable {', '.join(missing)} is not set")
    return text


# The manifest's keys and what each value must be.
SETTING_KEYS: dict[str, Convert] = {
    "segments": whole(1, _MAX_SEGMENTS, "segments per file"),
    "min_segment_size": positive_size,
    "chunk_size": positive_size,
    "retries": whole(0),
    "timeout": seconds,
    "min_speed": parse_size,
    "stall_time": seconds,
    "max_retry_after": seconds,
    "max_size": positive_size,
}
ENTRY_KEYS: dict[str, Convert] = {
    "url": http_url,
    "path": non_empty_text,
    "size": parse_size,
    **{name: hex_digest(name) for name in DIGEST_HEX_LENGTHS},
    "insecure": flag,
    "mirrors": http_url,  # each item of the list
}
# The run's budget (values.Budget): what all files share.
BUDGET_KEYS: dict[str, Convert] = {
    "connections": whole(1, 1024, "connections"),
    "max_connections_per_host": whole(1, 1024, "connections"),
    "limit_rate": positive_size,
}
TOP_KEYS = {"version", "dest", "workers", "defaults", "files", "ca_bundle", *BUDGET_KEYS, "revalidate"}
# Prune (parent/prune.py): off unless asked for.
PRUNE_KEYS: dict[str, Convert] = {"prune": flag, "max_delete": max_delete, "backup_dir": non_empty_text}
TOP_KEYS |= PRUNE_KEYS.keys()
TOP_KEYS |= {"base_url", "checksums_file"}
TOP_KEYS |= {"max_duration", "trace"}  # the run's time budget; the trace file downstream mirrors read
TOP_KEYS |= {"scheduler"}  # a Dask scheduler to run the files on (bulkdl/cluster/)
# The other top-level values: what parent/manifest.py checks each with, for the JSON Schema.
TOP_VALUES: dict[str, Convert] = {
    "version": version,
    "dest": non_empty_text,
    "workers": positive_int,
    "ca_bundle": non_empty_text,
    "revalidate": flag,
    "base_url": base_url,
    "checksums_file": non_empty_text,
    "max_duration": duration,
    "trace": non_empty_text,
    "scheduler": scheduler,
}
MISSING_VERSION = "missing; write version: 1 as the manifest's first line (the format this bulkdl reads)"


def merge_headers(headers: dict[str, str]) -> tuple[tuple[str, str], ...]:
    by_lower: dict[str, tuple[str, str]] = {}
    for name, value in headers.items():
        by_lower[name.lower()] = (name, value)
    return tuple(by_lower.values())


class Reader:
    """Walks the data, converting scalars and recording problems instead of raising."""

    def __init__(self, document: Document, problems: Problems) -> None:
        self._bad_keys = document.bad_keys
        self.problems = problems

    def items(self, value: Any, path: Where) -> Iterable[tuple[str, Any]]:
        if value.__class__ is not dict:
            self.problems.add(path, "expected a mapping of key: value")
            return ()
        bad = self._bad_keys.get(id(value)) if self._bad_keys else None
        return value.items() if bad is None else self._as_written(value, bad[1], path)

    def _as_written(self, mapping: dict[Any, Any], bad: list[BadKey], path: Where) -> Iterator[tuple[str, Any]]:
        """The usable pairs of a mapping, each bad key reported where it stands among them."""
        waiting = iter(bad)
        nxt = next(waiting, None)
        for index, (key, value) in enumerate([*mapping.items(), (None, None)]):
            while nxt is not None and nxt.before <= index:
                shown = label((*path, nxt.key)) if nxt.key is not None else label(path) or "manifest"
                self.problems.at(nxt.line, shown, nxt.problem)
                nxt = next(waiting, None)
            if key.__class__ is str:
                yield key, value

    def scalar(self, value: Any, path: Where, convert: Convert) -> Any:
        if value.__class__ is list or value.__class__ is dict:
            self.problems.add(path, "expected a single value, not a list or mapping")
            return None
        if value.__class__ is Invalid:
            self.problems.add(path, value.message)
            return None
        try:
            return convert(value)
        except ValueError as exc:
            self.problems.add(path, str(exc))
            return None

    def headers(self, value: Any, path: Where) -> dict[str, str]:
        headers: dict[str, str] = {}
        for name, item in self.items(value, path):
            checked = self.scalar(item, (*path, name), header_value)
            if any(ch in name for ch in ":\r\n") or not name.strip() or name != name.strip():
                self.problems.add((*path, name), "not a valid header name")
            elif checked is not None:
                headers[name] = checked
        return headers
