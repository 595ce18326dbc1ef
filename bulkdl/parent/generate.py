"""Manifests made from what upstream publishes: ``bulkdl manifest from-sums`` and ``from-urls``.

A checksum file (``SHA256SUMS``, ``sha256sum --tag`` output, ``B2SUMS``...) gives each file's name and digest;
its files are fetched from ``--base-url`` and land under the same names below dest. A URL list gives one URL a
line; a file keeps its URL's tree below ``--base-url``, or its last segment without one. Either way each name
is checked as a manifest's would be (nothing absolute, no ``..``, no clash) and every problem is reported at
once, ``FILE:LINE: what``. The text is YAML that ``bulkdl check`` accepts: a header comment saying where it
came from and when (``SOURCE_DATE_EPOCH``, when set, for output that is the same on every run), then
``version``, ``dest``, ``base_url`` and one entry per file, in the input's order.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote, unquote, urlsplit

from .. import sums
from ..errors import ManifestError
from ..paths import check_relpath, name_from_url
from . import claims, schema

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class _Entry:
    line: int
    name: str  # below dest, normalised
    url: str  # relative to base_url when there is one
    digests: tuple[tuple[str, str], ...] = ()


def from_sums(source: Path, base_url: str, dest: str | None) -> str:
    """The manifest for the checksum file ``source``, its files below ``base_url``."""
    listed = [(s.line, s) for s in sums.parse(_read(source), str(source))]
    entries = _checked(str(source), listed, _from_sum, f"{source} lists no file")
    return _render("from-sums", source, entries, dest, schema.base_url(base_url))


def _from_sum(line: int, listed: sums.Sum) -> _Entry:
    name = check_relpath(listed.name)
    # Quoted whole: a space, "#", "?", "%" or a non-ASCII letter is part of the name, never URL syntax.
    return _Entry(line, name, quote(name, safe="/"), ((listed.algorithm, listed.hex),))


def from_urls(source: Path, base_url: str | None, dest: str | None = None) -> str:
    """The manifest for the URL list ``source``: one URL a line, blank lines and ``#`` comments ignored."""
    base = None if base_url is None else schema.base_url(base_url)
    lines = [(n, line.strip()) for n, line in enumerate(_read(source).split("\n"), 1)]
    urls = [(n, url) for n, url in lines if url and not url.startswith("#")]
    # Without --base-url each name is its URL's last segment: a tree of a.iso in several directories clashes.
    hint = "" if base is not None else "; --base-url URL keeps the path below it instead of the last segment"
    entries = _checked(str(source), urls, functools.partial(_from_url, base), f"{source} lists no URL", hint)
    return _render("from-urls", source, entries, dest, base)


def _from_url(base: str | None, line: int, url: str) -> _Entry:
    schema.http_url(url)
    if base is None:
        return _Entry(line, check_relpath(name_from_url(url)), url)
    if not url.startswith(base):
        raise ValueError(f"{url} is not below --base-url {base}")
    relative = url[len(base) :]
    name = check_relpath(unquote(urlsplit(relative).path))
    # "a:b.iso" alone would read as a URL of scheme "a": RFC 3986 (4.2) puts "./" before such a reference.
    return _Entry(line, name, "./" + relative if urlsplit(relative).scheme else relative)


def _checked(
    source: str, items: list[tuple[int, _T]], make: Callable[[int, _T], _Entry], empty: str, hint: str = ""
) -> list[_Entry]:
    """The entry ``make`` makes of each (line, item), or ManifestError naming each line that makes none or
    claims a name twice."""
    entries, problems = [], []
    taken = claims.Claims()
    for line, item in items:
        try:
            entry = make(line, item)
        except ValueError as exc:
            problems.append(f"{source}:{line}: {exc}")
            continue
        clash = taken.clash(entry.name, line)
        if clash is not None:
            what = "is listed twice" if clash[0] == entry.name else f"clashes with {clash[0]!r}"
            problems.append(f"{source}:{line}: {entry.name!r} {what} (line {clash[1]}){hint}")
        entries.append(entry)
    if problems:
        raise ManifestError("\n".join(problems))
    if not entries:
        raise ManifestError(f"{source}:1: {empty}")
    return entries


def _read(source: Path) -> str:
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise ManifestError(f"{source}:1: cannot read: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ManifestError(f"{source}:{line}: not UTF-8 text; a manifest's names must be") from None


def _render(command: str, source: Path, entries: list[_Entry], dest: str | None, base: str | None) -> str:
    out = [
        f"# A bulkdl manifest made by `bulkdl manifest {command}` from {quoted(str(source))}",
        f"# on {_now():%Y-%m-%d %H:%M:%S} UTC: {len(entries)} files. Check it with `bulkdl check`, fetch with"
        " `bulkdl run`.",
        "version: 1",
        f"dest: {quoted(dest or '.')}  # a relative dest is below this manifest's directory",
    ]
    if base is not None:
        out.append(f"base_url: {quoted(base)}  # each relative url is resolved against it")
    out.append("files:")
    for entry in entries:
        # A name in the URL's tree needs no path: the manifest derives the URL's last segment by itself.
        first = f"  - path: {quoted(entry.name)}\n    url: " if "/" in entry.name else "  - url: "
        out.append(first + quoted(entry.url))
        # Quoted: a digest of decimal digits alone (3 in 10 million MD5s) would be read as a number.
        out.extend(f"    {algorithm}: {quoted(hex_digest)}" for algorithm, hex_digest in entry.digests)
    return "\n".join(out) + "\n"


def _now() -> datetime:
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "")
    return datetime.fromtimestamp(int(epoch), timezone.utc) if epoch.isdigit() else datetime.now(timezone.utc)


def quoted(text: str) -> str:
    """``text`` as a YAML double-quoted scalar: printable characters as they are, the others escaped, so that
    no character of a name can end the line or be folded by the parser (YAML 1.1 reads U+2028 as a break)."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif " " <= ch <= "~" or (ch >= "\xa0" and ch.isprintable()):
            out.append(ch)
        else:
            out.append(f"\\u{ord(ch):04x}" if ord(ch) < 0x10000 else f"\\U{ord(ch):08x}")
    return '"' + "".join(out) + '"'
