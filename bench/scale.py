"""SCALE: 20,000 small files in a package-pool tree, and the figures only it reports.

Besides the common table: the bulkdl parent's own peak RSS (VmHWM, read by bench/hwm.py just before it exits:
the parent alone, not its forkserver or workers), the lines bulkdl printed on each re-run (stdout to a file,
not a terminal), ``bulkdl.parent.manifest.load`` on a 100,000-entry manifest (in a fresh interpreter, imports
untimed, median of rounds), and a run of 2,000 of the files under a real pseudo-terminal (120 x 40, TERM=xterm)
with the progress display against ``--no-progress`` (median of rounds each, alternating which goes first).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import pty
import random
import statistics
import struct
import subprocess
import sys
import termios
import threading
from collections.abc import Callable
from pathlib import Path

from tests.nginx import NginxServer

from . import measure
from .data import SEED, DataSet
from .tools import command

NAME = "SCALE"
DIRECTORIES = 256  # pool/00 … pool/ff
MANIFEST_ENTRIES = 100_000
INTERACTIVE_FILES = 2_000
Median = Callable[[str, str], float | None]  # (scenario, tool) → median wall seconds, None if not measured


def _entries(count: int, rng: random.Random) -> list[tuple[str, int]]:
    """Names like a Debian pool: scale/pool/<2 hex>/<package>_<version>_amd64.deb, ~1.3 KiB each."""
    return [
        (f"scale/pool/{(i * 37) % DIRECTORIES:02x}/pkg{i:06d}_1.{i % 7}-{i % 3}_amd64.deb", rng.randint(1150, 1510))
        for i in range(count)
    ]


def generate(root: Path, count: int) -> DataSet:
    """Each file: its name, then a slice of one seeded random blob (no per-file randbytes); distinct bytes each."""
    rng = random.Random(SEED + 1)
    blob = rng.randbytes(4 * 1024**2)
    files = []
    for rel, size in _entries(count, rng):
        head = f"{rel}\n".encode()
        start = rng.randrange(len(blob) - size)
        body = head + blob[start : start + size - len(head)]
        path = root / rel
        if not path.parent.is_dir():
            path.parent.mkdir(parents=True)
        path.write_bytes(body)
        files.append((rel, size, hashlib.sha256(body).hexdigest()))
    return DataSet(NAME, tuple(files), tree=True)


def own_peak(argv: list[str], peak_file: Path) -> list[str]:
    """bulkdl's command line, run through bench.hwm so the parent records its own VmHWM."""
    assert argv[1:3] == ["-m", "bulkdl"], argv
    return [argv[0], "-m", "bench.hwm", str(peak_file), *argv[3:]]


def manifest_load(work: Path, rounds: int, env: dict[str, str]) -> float:
    """Median seconds of manifest.load on a generated manifest of 100,000 entries with digests."""
    rng = random.Random(SEED + 2)
    fake = tuple((rel, size, f"{rng.getrandbits(256):064x}") for rel, size in _entries(MANIFEST_ENTRIES, rng))
    out = work / "manifest-100k"
    out.mkdir(exist_ok=True)
    argv = command("bulkdl", DataSet(NAME, fake, tree=True), "http://127.0.0.1:9", out, False, True)
    source = argv[4]  # python -m bulkdl run MANIFEST --no-progress
    code = (
        "import sys, time; from pathlib import Path; from bulkdl.parent import manifest; "
        "t = time.perf_counter(); m = manifest.load(Path(sys.argv[1])); "
        "print(time.perf_counter() - t, len(m.jobs))"
    )
    seconds = []
    for _ in range(rounds):
        done = subprocess.run([sys.executable, "-c", code, source], capture_output=True, text=True, env=env)
        if done.returncode != 0:
            raise RuntimeError(f"manifest.load failed: {done.stderr[-2000:]}")
        took, jobs = done.stdout.split()
        assert int(jobs) == MANIFEST_ENTRIES, jobs
        seconds.append(float(took))
    return statistics.median(seconds)


def _under_pty(argv: list[str], work: Path, env: dict[str, str]) -> tuple[measure.Sample, int]:
    """The run, and how many bytes it wrote to the terminal."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))

    written = [0]

    def drain() -> None:  # a terminal nobody reads blocks its writer
        try:
            while chunk := os.read(master, 65536):
                written[0] += len(chunk)
        except OSError:  # EIO: every slave end is closed
            pass

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        sample = measure.run(argv, work, {**env, "COLUMNS": "120", "LINES": "40", "TERM": "xterm"}, tty=slave)
    finally:
        os.close(slave)
        reader.join(timeout=10)
        os.close(master)
    return sample, written[0]


def interactive(data: DataSet, nginx: NginxServer, work: Path, rounds: int, env: dict[str, str]) -> dict[str, float]:
    """Median wall seconds of 2,000 SCALE files under a pty, with progress and with --no-progress; and
    ``files``, ``progress bytes``, ``no-progress bytes``: what was run and the most it wrote to the terminal."""
    subset = DataSet(NAME, data.files[:INTERACTIVE_FILES], tree=True)
    walls: dict[str, list[float]] = {"progress": [], "no-progress": []}
    written = dict.fromkeys(walls, 0)
    for round_ in range(rounds):
        for mode in sorted(walls, reverse=round_ % 2 == 1):
            out = work / "pty-out"
            subprocess.run(["rm", "-rf", str(out)], check=True)
            out.mkdir()
            argv = command("bulkdl", subset, nginx.base_url, out, False)
            if mode == "progress":
                argv.remove("--no-progress")
            sample, wrote = _under_pty(argv, work, env)
            walls[mode].append(sample.wall)
            written[mode] = max(written[mode], wrote)
            print(f"  round {round_ + 1} SCALE under a pty     {mode:<11} {walls[mode][-1]:7.2f} s", flush=True)
    medians = {mode: statistics.median(w) for mode, w in walls.items()}
    return {**medians, "files": len(subset.files), **{f"{m} bytes": n for m, n in written.items()}}


def _target(what: str, figure: float | None, limit: float | None, unit: str, shown_limit: str) -> str:
    if figure is None or limit is None:
        return f"target: {what} not measured vs {shown_limit}"
    verdict = "met" if figure <= limit else "missed"
    shown = f"{figure:.0f}" if unit == " lines" else f"{figure:.2f}"
    return f"target: {what} {shown}{unit} vs {shown_limit} → {verdict} ({figure / limit:.2f}x)"


def targets(median: Median, peaks: list[int], lines: list[int], load: float, pty_: dict[str, float]) -> list[str]:
    wget2 = median("SCALE re-run", "wget2")
    with_digests, without = median("SCALE re-run, digests", "bulkdl"), median("SCALE re-run", "bulkdl")
    shown = f"{wget2:.2f} s" if wget2 is not None else "?"
    peak = max(peaks) / 1024**2 if peaks else None
    progress, plain = pty_.get("progress"), pty_.get("no-progress")
    return [
        _target("re-run with digests", with_digests, wget2 and 0.5 * wget2, " s", f"0.5 x wget2 -N re-run ({shown})"),
        _target("re-run without digests", without, wget2, " s", f"1.0 x wget2 -N re-run ({shown})"),
        _target("re-run output", max(lines) if lines else None, 40, " lines", "40 lines"),
        _target("bulkdl parent peak RSS", peak, 256, " MiB", "256 MiB"),
        _target(f"manifest.load of {MANIFEST_ENTRIES:,} entries", load, 2.0, " s", "2 s"),
        _target("interactive with progress", progress, plain and 1.1 * plain, " s", "1.1 x --no-progress"),
    ]


def figures(peaks: dict[str, list[int]], lines: dict[str, list[int]], load: float, pty_: dict[str, float]) -> list[str]:
    rows = ["| figure | value |", "|---|---|"]
    rows += [f"| bulkdl parent peak RSS (VmHWM), {s} | {max(p) / 1024**2:.0f} MiB |" for s, p in peaks.items() if p]
    rows += [f"| lines bulkdl printed, {s} | {', '.join(map(str, n))} |" for s, n in lines.items() if n]
    rows.append(f"| manifest.load, {MANIFEST_ENTRIES:,} entries with sha256, median | {load:.2f} s |")
    if pty_:
        ratio = pty_["progress"] / pty_["no-progress"]
        rows.append(
            f"| {pty_['files']:,.0f} files under a pty: progress / --no-progress, medians | "
            f"{pty_['progress']:.2f} s / {pty_['no-progress']:.2f} s ({ratio:.2f}x) |"
        )
        rows.append(
            f"| bytes written to the terminal: progress / --no-progress | "
            f"{pty_['progress bytes']:,.0f} / {pty_['no-progress bytes']:,.0f} |"
        )
    return rows
