"""Hashing a file already on disk: verify's work, and a digest the manifest added since a file was fetched.

Shared by both sides of the process boundary; a download hashes its parts as they arrive instead (assemble).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

BUFFER = 1024 * 1024


def hash_file(path: Path, algorithms: Iterable[str] = ("sha256",)) -> dict[str, str]:
    """Hex digests of the file at ``path``, one pass for all algorithms."""
    hashes = [hashlib.new(a) for a in algorithms]
    buffer = bytearray(BUFFER)
    with open(path, "rb") as f:
        while n := f.readinto(buffer):
            for h in hashes:
                h.update(memoryview(buffer)[:n])
    return {h.name: h.hexdigest() for h in hashes}
