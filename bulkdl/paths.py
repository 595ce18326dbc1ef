"""Destination names and the URLs they come from: what a manifest may ask bulkdl to fetch and write, checked
before anything is written.

A name is a relative POSIX path below ``dest``. Names come only from the manifest or from the URL path,
never from the server, so this is the one gate between user input and the file system. What a name cannot
say, the disk can: a directory below dest that is a symlink leading out of it, which ``outside`` finds.
A URL's name part is checked too, for what a file name holds but a URL must percent-encode.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from urllib.parse import unquote, urlsplit

# Names bulkdl itself writes beside a destination; a manifest name must not collide with them.
RESERVED = re.compile(r"(\.part\d+|\.bulkdl|\.bulkdl-tmp)$|^\.bulkdl$")
NAME_MAX = 255  # bytes in one path component on Linux file systems (ext4, xfs, btrfs, tmpfs)
# The longest name bulkdl writes beside a file is the sidecar's temp, ".<name>.bulkdl.bulkdl-tmp": 19 bytes
# more (".<name>.bulkdl-tmp" adds 12, "<name>.bulkdl" 7, "<name>.part<K>" 5 and the digits of K).
BESIDE = len(".") + len(".bulkdl") + len(".bulkdl-tmp")
# An http(s) URL that leaves urlsplit nothing to decide: no userinfo, query, fragment, brackets, spaces,
# non-ASCII or "%" that starts no escape, and a path. Nearly every manifest URL is one, and each check of it
# has a shortcut (100,000 URLs: urlsplit alone is 0.3 s).
_URL_CHAR = r"[\x21\x22\x24\x26-\x3e\x40-\x7e]"  # printable ASCII but space, "#", "%" and "?"
# Unrolled ("a*(%XXa*)*", not "(a|%XX)*"): twice as fast, and no backtracking blow-up on a long miss.
PLAIN_URL = re.compile(rf"https?://[A-Za-z0-9.-]+(?::[0-9]*)?/{_URL_CHAR}*(?:%[0-9A-Fa-f]{{2}}{_URL_CHAR}*)*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DRIVE = re.compile(r"[A-Za-z]:")
# A name check_relpath would give back unchanged, seen in one match (100,000 names: 0.2 s step by step): short
# ASCII components of a few safe characters, none "" or "." or "..", none ending as a name bulkdl writes.
_COMPONENT = r"(?!\.\.?(?:/|$))[A-Za-z0-9_.+~=,@-]+"
_NORMAL_NAME = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_RESERVED_IN = re.compile(r"(?:\.part[0-9]+|\.bulkdl|\.bulkdl-tmp)(?:/|$)")


_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


def unencoded(url: str) -> None:
    """Refuse what a file name holds but a URL cannot: a raw space, a ``#`` (a fragment is never sent to the
    server, so ``a#1.iso`` would fetch ``a``) or a ``%`` that starts no escape. The message gives the URL
    percent-encoded, as curl and wget need it too."""
    fixed = _BAD_PERCENT.sub("%25", url).replace(" ", "%20").replace("#", "%23")
    what = [what for ch, what in ((" ", "a space"), ("#", "'#'")) if ch in url]
    if _BAD_PERCENT.search(url):
        what.append("a '%' that starts no %XX escape")
    if what:
        raise ValueError(
            f"URL contains {' and '.join(what)}; if that is part of the file name, percent-encode it: {fixed}"
        )


def query_in_name(url: str) -> None:
    """Refuse a ``?`` that is probably part of a file name: what follows it holds no ``=``, as a query's
    ``key=value`` pairs do (``a.iso?token=1`` stays a query). The URL's last segment names the file, so
    ``what?.iso`` would ask the server for ``what`` and save it under that name. An entry with a ``path:`` is
    not asked: its author chose the name, and the query goes to the server as written."""
    head, mark, query = url.partition("?")
    if mark and query and "=" not in query.partition("#")[0]:
        raise ValueError(
            f"'?' starts a query string, so the file would be {head.rsplit('/', 1)[-1]!r}: if '?' is part of "
            f"its name write it as %3F ({head}%3F{query}); if it starts a query, name the file with path:"
        )


def check_relpath(raw: str) -> str:
    """Return ``raw`` normalised (``a//./b`` → ``a/b``), or raise ValueError saying why it is unsafe."""
    if len(raw) <= NAME_MAX - BESIDE and _NORMAL_NAME.fullmatch(raw) and not _RESERVED_IN.search(raw):
        return raw  # ASCII, so each component's bytes are its characters: the lengths hold too
    return _normalised(raw)


def _normalised(raw: str) -> str:
    """check_relpath step by step, for any name."""
    if not raw:
        raise ValueError("path is empty")
    if _CONTROL.search(raw):  # one regular expression, not a Python step per character: 100,000 names a run
        raise ValueError("path contains NUL or control characters")
    if "\\" in raw:
        raise ValueError("path contains a backslash; use / between directories")
    if raw.startswith("/") or _DRIVE.match(raw):
        raise ValueError("path must be relative to dest, not absolute")
    parts = [part for part in raw.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise ValueError("path must not contain '..'; it would escape dest")
    if not parts:
        raise ValueError("path names no file")
    if raw.endswith("/"):
        raise ValueError("path names a directory, not a file")
    for part in parts:
        if RESERVED.search(part):
            raise ValueError(f"{part!r} collides with the names bulkdl uses for partial files")
    _check_lengths(parts)
    return "/".join(parts)


def _check_lengths(parts: list[str]) -> None:
    """Refuse now what the file system would refuse mid-run: a component longer than NAME_MAX bytes."""
    try:
        sizes = [len(part.encode("utf-8")) for part in parts]
    except UnicodeEncodeError:  # a lone surrogate, which YAML's "\ud800" escape can make
        raise ValueError("path contains a character that is not valid Unicode text") from None
    for size in sizes[:-1]:
        if size > NAME_MAX:
            raise ValueError(f"directory name too long: {size} bytes, at most {NAME_MAX}")
    if sizes[-1] > NAME_MAX - BESIDE:
        raise ValueError(
            f"file name too long: {sizes[-1]} bytes, at most {NAME_MAX - BESIDE} "
            f"(bulkdl adds up to {BESIDE} bytes beside it for partial files)"
        )


def name_from_url(url: str) -> str:
    """The last segment of the URL path, percent-decoded; raise ValueError when there is none."""
    segment = (url if PLAIN_URL.fullmatch(url) else urlsplit(url).path).rsplit("/", 1)[-1]
    name = unquote(segment)
    if not name:
        raise ValueError("the URL path ends in '/', so no file name can be derived from it; give a path")
    if "/" in name:
        raise ValueError(f"the URL's file name decodes to {name!r}, which contains '/'; give a path")
    return name


def outside(dest: Path, directory: Path) -> str | None:
    """Why writing into ``directory`` would leave ``dest`` through a symlink; None when it stays inside.

    ``dest`` itself may be a symlink: the user chose it. Below it, each component that exists costs one
    lstat, and one that is a symlink must resolve to somewhere inside dest. Components that do not exist
    yet are fine: bulkdl creates them as real directories. Call it just before creating the directory.
    """
    try:
        below = directory.relative_to(dest)
    except ValueError:
        return f"{directory} is not inside dest {dest}"
    root = dest.resolve()
    current = dest
    for part in below.parts:
        current = current / part
        try:
            if not stat.S_ISLNK(os.lstat(current).st_mode):
                continue
        except OSError:  # missing (created as a real directory), or a reason mkdir will tell the user
            return None
        try:
            target = current.resolve()
        except (OSError, RuntimeError):  # a symlink loop (RuntimeError before Python 3.13)
            return f"{current} is a symlink that does not resolve; bulkdl does not write through it"
        if not target.is_relative_to(root):
            return f"{current} is a symlink to {target}, outside dest; bulkdl does not write through it"
    return None
