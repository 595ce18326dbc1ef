"""Hashing a file already on disk: verify's work, and a digest the manifest added since a file was fetched.

Shared by both sides of the process boundary; a download hashes its parts as they arrive instead (assemble).
"""

from __future__ import annotations

import functools
import hashlib
import io
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hashlib import _Hash

BUFFER = 1024 * 1024


@functools.cache
def constructor(algorithm: str) -> Callable[[], _Hash]:
    """hashlib's own constructor for ``algorithm``: hashlib.new looks the name up at every call, and a small
    file's hashes are made anew for each attempt (a profile of 20,000 small downloads: 1% of worker CPU)."""
    if algorithm in hashlib.algorithms_guaranteed:
        named: Callable[[], _Hash] = getattr(hashlib, algorithm)
        return named
    return functools.partial(hashlib.new, algorithm)


def hash_file(path: Path, algorithms: Iterable[str] = ("sha256",)) -> dict[str, str]:
    """Hex digests of the file at ``path``, one pass for all algorithms."""
    with open(path, "rb") as f:
        return hash_open(f, algorithms)


def hash_open(
    f: io.BufferedReader, algorithms: Iterable[str], between: Callable[[], None] = lambda: None
) -> dict[str, str]:
    """Hex digests of what is left to read of ``f``, keyed by the names asked for (not hashlib's own, which
    may spell one otherwise); ``between`` runs after each buffer, and may raise to stop."""
    wanted = list(dict.fromkeys(algorithms))
    hashes = [constructor(a)() for a in wanted]
    buffer = bytearray(BUFFER)
    while n := f.readinto(buffer):
        for h in hashes:
            h.update(memoryview(buffer)[:n])
        between()
    return {a: h.hexdigest() for a, h in zip(wanted, hashes, strict=True)}
