"""Turning finished parts into the final file, or refusing to.

The parts are read once, in order: each buffer feeds every requested hash and (for several parts) the
temp file. Size and digests are checked before anything is renamed, so the final path only ever holds
verified bytes. A file fetched as one part is hashed in place and renamed; it needs no copy.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from . import durable
from .errors import VerifyError
from .plan import Plan, part_path

BUFFER = 1024 * 1024


def _new_hash(algorithm: str) -> hashlib._Hash:
    return hashlib.new(algorithm)


def _pump(sources: Iterable[Path], hashes: list[hashlib._Hash], out: BinaryIO | None) -> int:
    """Read every source in order into all ``hashes`` (and ``out``); return the byte count."""
    buffer = bytearray(BUFFER)
    view = memoryview(buffer)
    total = 0
    for source in sources:
        with open(source, "rb") as f:
            while n := f.readinto(buffer):
                chunk = view[:n]
                for h in hashes:
                    h.update(chunk)
                if out is not None:
                    out.write(chunk)
                total += n
    return total


def hash_file(path: Path, algorithms: Iterable[str] = ("sha256",)) -> dict[str, str]:
    """Hex digests of the file at ``path``, one pass for all algorithms."""
    hashes = {a: _new_hash(a) for a in algorithms}
    _pump([path], list(hashes.values()), None)
    return {a: h.hexdigest() for a, h in hashes.items()}


def assemble(
    final: Path, plan: Plan, expected_size: int | None, digests: tuple[tuple[str, str], ...]
) -> tuple[int, dict[str, str]]:
    """Concatenate the plan's parts into ``final`` after checking them; return its size and hex digests.

    Raises VerifyError (the final path untouched, parts removed: they hold wrong bytes) on a mismatch.
    """
    hashes = {"sha256": _new_hash("sha256"), **{a: _new_hash(a) for a, _ in digests if a != "sha256"}}
    parts = [part_path(final, s.index) for s in plan.segments]
    if len(parts) == 1:
        size = _pump(parts, list(hashes.values()), None)
        _verify(size, plan, expected_size, hashes, digests)
        with open(parts[0], "rb+") as f:
            os.fsync(f.fileno())
        os.replace(parts[0], final)
        durable.fsync_dir(final.parent)
    else:
        with durable.replacing(final) as out:
            size = _pump(parts, list(hashes.values()), out)
            _verify(size, plan, expected_size, hashes, digests)
        for part in parts:
            part.unlink()
    return size, {algorithm: h.hexdigest() for algorithm, h in hashes.items()}


def _verify(
    size: int,
    plan: Plan,
    expected_size: int | None,
    hashes: dict[str, hashlib._Hash],
    digests: tuple[tuple[str, str], ...],
) -> None:
    for wanted in (plan.size, expected_size):
        if wanted is not None and size != wanted:
            raise VerifyError(f"size mismatch: got {size} of {wanted} bytes")
    for algorithm, expected in digests:
        got = hashes[algorithm].hexdigest()
        if got != expected:
            raise VerifyError(f"{algorithm} mismatch: expected {expected}, got {got}")
