"""The machine's own ceilings and the cost of bulkdl's assembly steps, for the table's context."""

from __future__ import annotations

import hashlib
import os
import shutil
import statistics
import subprocess
import time
from pathlib import Path

from .data import DataSet, MiB
from .targets import Ceiling

CAP, CAP_CONNECTIONS = 20 * MiB, 16  # nginx limit_rate 20m per connection; BIG's 16 connections


def ceilings(data: dict[str, DataSet], root: Path, work: Path) -> list[str]:
    lines = []
    for name in ("BIG", "MIXED"):
        files = [root / rel for rel, _, _ in data[name].files]
        subprocess.run(["cat", *map(str, files)], stdout=subprocess.DEVNULL, check=True)  # warm the cache
        started = time.perf_counter()
        subprocess.run(["cat", *map(str, files)], stdout=subprocess.DEVNULL, check=True)
        read = time.perf_counter() - started
        target = work / f"copy-{name}"
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir()
        started = time.perf_counter()
        subprocess.run(["cp", *map(str, files), str(target)], check=True)
        subprocess.run(["sync", "-f", str(target)], check=True)
        copy = time.perf_counter() - started
        mib = data[name].payload / 1024**2
        lines.append(f"| {name} | {read:.2f} s ({mib / read:.0f} MiB/s) | {copy:.2f} s ({mib / copy:.0f} MiB/s) |")
    return lines


def steps(big: Path, work: Path) -> list[str]:
    """What assembling costs per GiB on this machine: a SHA-256 pass, a copy (two ways), an fsync.

    bulkdl does these while the parts download (assemble.py); they bound what is left after the last byte.
    """
    gib = big.stat().st_size / 1024**3
    timings = []
    started = time.perf_counter()
    digest = hashlib.sha256()
    with open(big, "rb") as f:
        while block := f.read(1024**2):
            digest.update(block)
    timings.append(("SHA-256 of data in page cache", time.perf_counter() - started))
    copy = work / "step-copy.bin"
    started = time.perf_counter()
    with open(big, "rb") as src, open(copy, "wb") as out:
        shutil.copyfileobj(src, out, 1024**2)
    timings.append(("copy through user space into a new file (1 MiB buffers)", time.perf_counter() - started))
    copy.unlink()
    started = time.perf_counter()
    with open(big, "rb") as src, open(copy, "wb") as out:
        while os.copy_file_range(src.fileno(), out.fileno(), 1024**3):
            pass
    timings.append(
        ("os.copy_file_range into a new file (the kernel copies; bulkdl's way)", time.perf_counter() - started)
    )
    started = time.perf_counter()
    with open(copy, "rb+") as f:
        os.fsync(f.fileno())
    timings.append(("fsync of that file", time.perf_counter() - started))
    copy.unlink()
    return [f"| {what} | {seconds / gib:.2f} s/GiB |" for what, seconds in timings]


def big_capped(payload: int, work: Path, rounds: int) -> Ceiling:
    """The link ideal by arithmetic, and the median of ``rounds`` runs of dd writing as many bytes with fsync."""
    seconds = []
    target = work / "dd-fsync.bin"
    for _ in range(rounds):
        started = time.perf_counter()
        subprocess.run(
            ["dd", "if=/dev/zero", f"of={target}", "bs=1M", f"count={payload}", "iflag=count_bytes", "conv=fsync"],
            check=True,
            stderr=subprocess.DEVNULL,
        )
        seconds.append(time.perf_counter() - started)
        target.unlink()
    return Ceiling(payload, payload / (CAP * CAP_CONNECTIONS), statistics.median(seconds))


def first_byte(url: str, tries: int = 5) -> float:
    """Median seconds to the first byte of one request (curl), to check the WAN server's delay is in effect."""
    seconds = []
    for _ in range(tries):
        done = subprocess.run(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{time_starttransfer}", url], capture_output=True, check=True
        )
        seconds.append(float(done.stdout))
    return statistics.median(seconds)
