"""The benchmark's seeded data sets, written once into nginx's root, with their SHA-256."""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass
from pathlib import Path

KiB, MiB, GiB = 1024, 1024**2, 1024**3
SEED = 20261124


@dataclass(frozen=True)
class DataSet:
    name: str
    files: tuple[tuple[str, int, str], ...]  # (path below the web root, size, sha256)
    tree: bool = False  # bulkdl keeps the path below the data set's directory (pool/ab/x.deb); else the name

    def local(self, rel: str, tool: str) -> str:
        """Where ``tool`` puts ``rel`` in its output directory: peers flatten names, bulkdl keeps a tree."""
        return rel.split("/", 1)[1] if self.tree and tool == "bulkdl" else rel.rsplit("/", 1)[1]

    @property
    def payload(self) -> int:
        return sum(size for _, size, _ in self.files)


def _write(root: Path, rel: str, size: int, rng: random.Random) -> tuple[str, int, str]:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with open(path, "wb") as out:
        left = size
        while left:
            block = rng.randbytes(min(left, 8 * MiB))
            out.write(block)
            digest.update(block)
            left -= len(block)
    return rel, size, digest.hexdigest()


def generate(root: Path, scale: float = 1.0) -> dict[str, DataSet]:
    """BIG (one 1 GiB file), MANY (2,000 files of 16 KiB), MIXED (200 files, log-uniform 4 KiB to 64 MiB)."""
    rng = random.Random(SEED)
    big = DataSet("BIG", (_write(root, "big/big.bin", int(GiB * scale), rng),))
    many = DataSet("MANY", tuple(_write(root, f"many/f{i:04d}.bin", 16 * KiB, rng) for i in range(int(2000 * scale))))
    sizes = [int(math.exp(rng.uniform(math.log(4 * KiB), math.log(64 * MiB)))) for _ in range(int(200 * scale))]
    mixed = DataSet("MIXED", tuple(_write(root, f"mixed/m{i:03d}.bin", n, rng) for i, n in enumerate(sizes)))
    return {d.name: d for d in (big, many, mixed)}
