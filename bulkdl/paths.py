"""Destination names: what a manifest may ask bulkdl to write, checked before anything is written.

A name is a relative POSIX path below ``dest``. Names come only from the manifest or from the URL path,
never from the server, so this is the one gate between user input and the file system.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

# Names bulkdl itself writes beside a destination; a manifest name must not collide with them.
RESERVED = re.compile(r"(\.part\d+|\.bulkdl|\.bulkdl-tmp)$|^\.bulkdl$")


def check_relpath(raw: str) -> str:
    """Return ``raw`` normalised (``a//./b`` → ``a/b``), or raise ValueError saying why it is unsafe."""
    if not raw:
        raise ValueError("path is empty")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in raw):
        raise ValueError("path contains NUL or control characters")
    if "\\" in raw:
        raise ValueError("path contains a backslash; use / between directories")
    if raw.startswith("/") or re.match(r"[A-Za-z]:", raw):
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
    return "/".join(parts)


def name_from_url(url: str) -> str:
    """The last segment of the URL path, percent-decoded; raise ValueError when there is none."""
    segment = urlsplit(url).path.rsplit("/", 1)[-1]
    name = unquote(segment)
    if not name:
        raise ValueError("the URL path ends in '/', so no file name can be derived from it; give a path")
    if "/" in name:
        raise ValueError(f"the URL's file name decodes to {name!r}, which contains '/'; give a path")
    return name
