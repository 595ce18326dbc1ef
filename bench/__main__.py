"""``python -m bench``: run every scenario for every tool, alternating, and write docs/performance.md.

python -m bench [--rounds 3] [--only BIG,MANY] [--scale 1.0] [--out docs/performance.md]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.nginx import NginxServer

from . import measure
from .data import DataSet, generate
from .tools import TOOLS, available, command

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Scenario:
    name: str
    data: str  # data set
    capped: bool
    rerun: bool = False
    digests: bool = False  # bulkdl's manifest carries the digests (a re-run then needs no request)

    def skip(self, tool: str) -> str | None:
        if tool == "curl" and self.data == "BIG" and self.capped:
            return "one connection at 20 MiB/s: ~51 s by arithmetic"
        if self.digests and tool != "bulkdl":
            return "only bulkdl can use digests to skip"
        return None


SCENARIOS = [
    Scenario("BIG unthrottled", "BIG", False),
    Scenario("BIG capped", "BIG", True),
    Scenario("MANY unthrottled", "MANY", False),
    Scenario("MANY capped", "MANY", True),
    Scenario("MIXED unthrottled", "MIXED", False),
    Scenario("MIXED capped", "MIXED", True),
    Scenario("RERUN MANY, digests", "MANY", False, rerun=True, digests=True),
    Scenario("RERUN MANY", "MANY", False, rerun=True),
    Scenario("RERUN MIXED", "MIXED", False, rerun=True),
]


@dataclass
class Cell:
    samples: list[measure.Sample] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)


def _verify(data: DataSet, out: Path) -> None:
    for rel, size, sha in data.files:
        path = out / rel.rsplit("/", 1)[1]
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(8 * 1024**2):
                digest.update(block)
        if path.stat().st_size != size or digest.hexdigest() != sha:
            raise RuntimeError(f"{path}: wrong bytes")


def _once(tool: str, scenario: Scenario, data: DataSet, nginx: NginxServer, work: Path) -> tuple[measure.Sample, int]:
    base = nginx.capped_url if scenario.capped else nginx.base_url
    out = work / f"{tool}-out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if scenario.rerun:  # a finished mirror first, by the same tool, unmeasured
        measure.run(command(tool, data, base, out, False, scenario.digests), work, env)
    nginx.clear_log()
    sample = measure.run(command(tool, data, base, out, scenario.rerun, scenario.digests), work, env)
    sent = sum(r.sent for r in nginx.requests())
    _verify(data, out)
    return sample, sent


def _ceilings(data: dict[str, DataSet], root: Path, work: Path) -> list[str]:
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


def _steps(big: Path, work: Path) -> list[str]:
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


def _table(results: dict[tuple[str, str], Cell], data: dict[str, DataSet], scenarios: list[Scenario]) -> list[str]:
    rows = [
        "| scenario | tool | wall s, median (min-max) | CPU s | peak RSS MiB | rate | sent ÷ payload | wall ÷ bulkdl |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for scenario in scenarios:
        d = data[scenario.data]
        ours = results.get((scenario.name, "bulkdl"))
        base = statistics.median(s.wall for s in ours.samples) if ours and ours.samples else None
        for tool in TOOLS:
            cell = results.get((scenario.name, tool))
            if cell is None or not cell.samples:
                reason = scenario.skip(tool) or ("not installed" if not available(tool) else "no sample")
                rows.append(f"| {scenario.name} | {tool} | not run: {reason} | | | | | |")
                continue
            walls = [s.wall for s in cell.samples]
            wall = statistics.median(walls)
            rate = f"{len(d.files) / wall:,.0f} files/s" if len(d.files) > 1 else f"{d.payload / 1e6 / wall:,.0f} MB/s"
            cpu = statistics.median(s.cpu for s in cell.samples)
            rss = max(s.peak_rss for s in cell.samples) / 1024**2
            sent = statistics.median(cell.sent) / d.payload
            ratio = f"{wall / base:.2f}" if base else "-"
            rows.append(
                f"| {scenario.name} | {tool} | {wall:.2f} ({min(walls):.2f}-{max(walls):.2f}) | {cpu:.2f} | {rss:.0f} "
                f"| {rate} | {sent:.3f} | {ratio} |"
            )
    return rows


def _machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "?",
    )
    versions = []
    for tool, flag in (("aria2c", "--version"), ("curl", "--version"), ("wget2", "--version"), ("nginx", "-v")):
        if shutil.which(tool) or tool == "nginx":
            done = subprocess.run([shutil.which(tool) or "/usr/sbin/nginx", flag], capture_output=True, text=True)
            versions.append((done.stdout or done.stderr).splitlines()[0].strip())
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    return (
        f"{os.cpu_count()} cores ({model}), {memory:.0f} GiB, Linux {platform.release()}, "
        f"Python {platform.python_version()}; {'; '.join(versions)}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="", help="comma-separated scenario name prefixes")
    parser.add_argument("--scale", type=float, default=1.0, help="shrink the data sets for a quick look")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "performance.md")
    args = parser.parse_args()
    scenarios = [s for s in SCENARIOS if not args.only or any(s.name.startswith(p) for p in args.only.split(","))]
    missing = [t for t in TOOLS if not available(t)]
    if missing:
        print(f"bench: not installed, left out: {', '.join(missing)} (apt-get install nginx-light aria2 curl wget2)")
    measure.become_subreaper()
    with tempfile.TemporaryDirectory(prefix="bulkdl-bench-") as tmp:
        work = Path(tmp)
        nginx = NginxServer(work / "nginx", capped_rate="20m")
        try:
            print("bench: generating data …", flush=True)
            data = generate(nginx.root, args.scale)
            results: dict[tuple[str, str], Cell] = {}
            for round_ in range(args.rounds):
                order = TOOLS[round_ % len(TOOLS) :] + TOOLS[: round_ % len(TOOLS)]  # alternate who goes first
                for scenario in scenarios:
                    for tool in order:
                        if not available(tool) or scenario.skip(tool):
                            continue
                        sample, sent = _once(tool, scenario, data[scenario.data], nginx, work)
                        cell = results.setdefault((scenario.name, tool), Cell())
                        cell.samples.append(sample)
                        cell.sent.append(sent)
                        print(f"  round {round_ + 1} {scenario.name:<22} {tool:<7} {sample.wall:7.2f} s", flush=True)
            table = _table(results, data, scenarios)
            ceilings = _ceilings(data, nginx.root, work)
            steps = _steps(nginx.root / data["BIG"].files[0][0], work)
        finally:
            nginx.close()
    print("\n".join(table))
    _write_doc(args.out, table, ceilings, steps, args)
    return 0


def _write_doc(path: Path, table: list[str], ceilings: list[str], steps: list[str], args: argparse.Namespace) -> None:
    marker = "<!-- bench:results -->"
    text = path.read_text() if path.exists() else f"# Performance\n\n{marker}\n{marker}\n"
    head, _, rest = text.partition(marker)
    _, _, tail = rest.partition(marker)
    results = [
        f"Measured {time.strftime('%Y-%m-%d')} by `make bench` ({args.rounds} rounds, scale {args.scale}) on "
        f"{_machine()}.",
        "",
        *table,
        "",
        "Ceilings on the same machine (page cache, no network):",
        "",
        "| data | read from page cache | copy into a fresh directory + sync |",
        "|---|---|---|",
        *ceilings,
        "",
        "What the assembly steps cost here:",
        "",
        "| step | cost |",
        "|---|---|",
        *steps,
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{head}{marker}\n" + "\n".join(results) + f"\n{marker}{tail}")


if __name__ == "__main__":
    sys.exit(main())
