"""Checksum files in the coreutils format, both ways: lines out for ``sha256sum -c``, entries in from upstream.

Read: GNU untagged lines (``HEX  NAME``, or ``HEX *NAME`` for binary mode), tagged/BSD lines
(``SHA256 (NAME) = HEX``, as ``sha256sum --tag`` and BSD ``sha256`` print), blank lines and ``#`` comments;
an untagged line's algorithm is told by its digest's length (128 hex digits: SHA-512, unless the file is a
BLAKE2 one by its name, as ``B2SUMS``). Names come back as written: making them safe below a destination is
the caller's job (paths.check_relpath).

Coreutils' escaping rule, both ways: a name holding a backslash, a newline or a carriage return is written
with a ``\\`` before the line and those characters as ``\\\\``, ``\\n`` and ``\\r`` (md5sum.c's
print_filename; coreutils 9 added CR). Lines end at ``\\n`` alone, so a name may hold any other character;
a raw CR at a line's end is a Windows line ending, since a name's own CR is always escaped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import ManifestError
from .parent.schema import DIGEST_HEX_LENGTHS

_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r"}
_UNESCAPES = {"\\": "\\", "n": "\n", "r": "\r"}
_NEEDS_ESCAPE = re.compile(r"[\\\n\r]")
_ESCAPE = re.compile(r"\\(.?)", re.DOTALL)
# What each tool prints as its tag: sha256sum --tag "SHA256", b2sum --tag "BLAKE2b" (512 bits) or "BLAKE2b-512".
_TAGS = {
    "MD5": "md5",
    "SHA1": "sha1",
    "SHA256": "sha256",
    "SHA512": "sha512",
    "BLAKE2b": "blake2b",
    "BLAKE2b-512": "blake2b",
}
_BY_TAG = {tag.upper(): algorithm for tag, algorithm in _TAGS.items()}
_TAGGED = re.compile(r"(\\?)([A-Za-z0-9]+(?:-[0-9]+)?) ?\((.*)\) *= *([0-9A-Fa-f]+)")
_UNTAGGED = re.compile(r"(\\?)([0-9A-Fa-f]+) ([ *])(.*)", re.DOTALL)
_BY_LENGTH = {length: algorithm for algorithm, length in DIGEST_HEX_LENGTHS.items()}
_BLAKE2_FILE = re.compile(r"b2|blake2", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Sum:
    line: int
    algorithm: str  # a key of schema.DIGEST_HEX_LENGTHS
    hex: str  # lower case
    name: str  # unescaped, as written: "./" prefixes and all


def format_line(hex_digest: str, name: str) -> str:
    """One ``sha256sum`` line for ``name`` (text mode, as GNU prints by default), ``\\n`` included."""
    if name == "-":  # sha256sum -c reads a line naming "-" from standard input
        name = "./-"
    if _NEEDS_ESCAPE.search(name):
        return f"\\{hex_digest}  {_NEEDS_ESCAPE.sub(lambda m: _ESCAPES[m.group()], name)}\n"
    return f"{hex_digest}  {name}\n"


def parse(text: str, source: str) -> list[Sum]:
    """Every entry of the checksum file ``source`` holding ``text``; raise ManifestError with one
    ``source:LINE: what`` line for each line that cannot be read."""
    untagged_128 = "blake2b" if _BLAKE2_FILE.search(source.rpartition("/")[2]) else "sha512"
    sums, problems = [], []
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw.removesuffix("\r")
        if not line.strip() or line.startswith("#"):
            continue
        try:
            sums.append(_entry(number, line, untagged_128))
        except ValueError as exc:
            problems.append(f"{source}:{number}: {exc}")
    if problems:
        raise ManifestError("\n".join(problems))
    return sums


def _entry(number: int, line: str, untagged_128: str) -> Sum:
    stripped = line.lstrip(" \t")
    tagged = _TAGGED.fullmatch(stripped)
    escaped, algorithm, hex_digest, name = _tagged(tagged) if tagged else _untagged(stripped, untagged_128)
    if len(hex_digest) != DIGEST_HEX_LENGTHS[algorithm]:
        raise ValueError(f"expected {DIGEST_HEX_LENGTHS[algorithm]} hex digits for {algorithm}, got {len(hex_digest)}")
    if not name:
        raise ValueError("the line names no file")
    return Sum(number, algorithm, hex_digest.lower(), _unescape(name) if escaped else name)


def _tagged(match: re.Match[str]) -> tuple[str, str, str, str]:
    escaped, tag, name, hex_digest = match.groups()
    algorithm = _BY_TAG.get(tag.upper())
    if algorithm is None:
        raise ValueError(f"{tag} checksums are not supported (only {', '.join(_TAGS)})")
    return escaped, algorithm, hex_digest, name


def _untagged(line: str, untagged_128: str) -> tuple[str, str, str, str]:
    match = _UNTAGGED.fullmatch(line)
    if match is None:
        raise ValueError('not a checksum line: expected "HEX  NAME" or "SHA256 (NAME) = HEX"')
    escaped, hex_digest, _, name = match.groups()
    algorithm = untagged_128 if len(hex_digest) == 128 else _BY_LENGTH.get(len(hex_digest))
    if algorithm is None:
        raise ValueError(f"a digest of {len(hex_digest)} hex digits is of no algorithm bulkdl knows")
    return escaped, algorithm, hex_digest, name


def _unescape(name: str) -> str:
    def one(match: re.Match[str]) -> str:
        if match.group(1) not in _UNESCAPES:
            raise ValueError("a name escaped with a leading backslash may hold only \\\\, \\n and \\r")
        return _UNESCAPES[match.group(1)]

    return _ESCAPE.sub(one, name)
