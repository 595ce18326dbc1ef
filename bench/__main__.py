"""``python -m bench``: run every scenario for every tool, alternating, and write docs/performance.md.

python -m bench [--rounds 3] [--only BIG,MANY] [--scale 1.0] [--out docs/performance.md]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.nginx import NginxServer

from . import doc, measure, scale
from .ceilings import ceilings, steps
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
        if self.data == scale.NAME and tool == "aria2c":
            return "SCALE compares curl and wget2"
        if self.data == scale.NAME and self.rerun and tool == "curl":
            return "SCALE: curl on the first run only"
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
    Scenario("SCALE first run", scale.NAME, False),
    Scenario("SCALE re-run, digests", scale.NAME, False, rerun=True, digests=True),
    Scenario("SCALE re-run", scale.NAME, False, rerun=True),
]


@dataclass
class Cell:
    samples: list[measure.Sample] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)
    peaks: list[int] = field(default_factory=list)  # SCALE, bulkdl: the parent's own VmHWM, bytes
    lines: list[int] = field(default_factory=list)  # SCALE, bulkdl: lines printed to stdout


def _verify(data: DataSet, out: Path, tool: str) -> None:
    for rel, size, sha in data.files:
        path = out / data.local(rel, tool)
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(8 * 1024**2):
                digest.update(block)
        if path.stat().st_size != size or digest.hexdigest() != sha:
            raise RuntimeError(f"{path}: wrong bytes")


def _once(tool: str, scenario: Scenario, data: DataSet, nginx: NginxServer, work: Path, cell: Cell) -> None:
    base = nginx.capped_url if scenario.capped else nginx.base_url
    out = work / f"{tool}-out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if scenario.rerun:  # a finished mirror first, by the same tool, unmeasured
        measure.run(command(tool, data, base, out, False, scenario.digests), work, env)
        _verify(data, out, tool)
    nginx.clear_log()
    argv = command(tool, data, base, out, scenario.rerun, scenario.digests)
    own = tool == "bulkdl" and data.name == scale.NAME
    peak, printed = work / "parent-hwm.txt", work / "stdout.txt"
    sample = measure.run(scale.own_peak(argv, peak) if own else argv, work, env, printed if own else None)
    cell.samples.append(sample)
    cell.sent.append(sum(r.sent for r in nginx.requests()))
    if own:
        cell.peaks.append(int(peak.read_text()) * 1024)
        cell.lines.append(len(printed.read_bytes().splitlines()))
    _verify(data, out, tool)


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


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="", help="comma-separated scenario name prefixes")
    parser.add_argument("--scale", type=float, default=1.0, help="shrink the data sets for a quick look")
    parser.add_argument("--scale-files", type=int, default=20_000, help="files in the SCALE data set")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "performance.md")
    args = parser.parse_args()
    scenarios = [s for s in SCENARIOS if not args.only or any(s.name.startswith(p) for p in args.only.split(","))]
    common = [s for s in scenarios if s.data != scale.NAME]
    scaled = [s for s in scenarios if s.data == scale.NAME]
    missing = [t for t in TOOLS if not available(t)]
    if missing:
        print(f"bench: not installed, left out: {', '.join(missing)} (apt-get install nginx-light aria2 curl wget2)")
    measure.become_subreaper()
    blocks: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory(prefix="bulkdl-bench-") as tmp:
        work = Path(tmp)
        nginx = NginxServer(work / "nginx", capped_rate="20m")
        try:
            print("bench: generating data …", flush=True)
            data = generate(nginx.root, args.scale) if common else {}
            if scaled:
                data[scale.NAME] = scale.generate(nginx.root, int(args.scale_files * args.scale))
            results = _rounds(args.rounds, scenarios, data, nginx, work)
            if common:  # only what was measured is rewritten: --only SCALE keeps the other rows
                table = _table(results, data, common)
                found = ceilings(data, nginx.root, work), steps(nginx.root / data["BIG"].files[0][0], work)
                blocks[doc.MARKER] = doc.common_block(table, *found, args)
            if scaled:
                blocks[doc.SCALE_MARKER] = _scale_block(results, data, scaled, nginx, work, args)
        finally:
            nginx.close()
    for lines in blocks.values():
        print("\n".join(line for line in lines if line.startswith(("|", "target:"))))
    doc.write(args.out, blocks)
    return 0


def _rounds(
    rounds: int, scenarios: list[Scenario], data: dict[str, DataSet], nginx: NginxServer, work: Path
) -> dict[tuple[str, str], Cell]:
    results: dict[tuple[str, str], Cell] = {}
    for round_ in range(rounds):
        order = TOOLS[round_ % len(TOOLS) :] + TOOLS[: round_ % len(TOOLS)]  # alternate who goes first
        for scenario in scenarios:
            for tool in order:
                if not available(tool) or scenario.skip(tool):
                    continue
                cell = results.setdefault((scenario.name, tool), Cell())
                _once(tool, scenario, data[scenario.data], nginx, work, cell)
                wall = cell.samples[-1].wall
                print(f"  round {round_ + 1} {scenario.name:<22} {tool:<7} {wall:7.2f} s", flush=True)
    return results


def _scale_block(
    results: dict[tuple[str, str], Cell],
    data: dict[str, DataSet],
    scenarios: list[Scenario],
    nginx: NginxServer,
    work: Path,
    args: argparse.Namespace,
) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    print("bench: SCALE extras …", flush=True)
    load = scale.manifest_load(work, args.rounds, env)
    pty_ = scale.interactive(data[scale.NAME], nginx, work, args.rounds, env)

    def median(scenario: str, tool: str) -> float | None:
        cell = results.get((scenario, tool))
        return statistics.median(s.wall for s in cell.samples) if cell and cell.samples else None

    mine = {s.name: results.get((s.name, "bulkdl"), Cell()) for s in scenarios}
    peaks = {name: cell.peaks for name, cell in mine.items()}
    lines = {name: cell.lines for name, cell in mine.items() if "re-run" in name}
    every = [p for ps in peaks.values() for p in ps], [n for ns in lines.values() for n in ns]
    d = data[scale.NAME]
    return [
        f"Measured {time.strftime('%Y-%m-%d')} by `python -m bench --only SCALE` ({args.rounds} rounds, "
        f"{len(d.files):,} files, {d.payload / 1024**2:.1f} MiB) on {doc.machine()}.",
        "",
        *_table(results, data, scenarios),
        "",
        *scale.figures(peaks, lines, load, pty_),
        "",
        "```",
        *scale.targets(median, *every, load, pty_),
        "```",
    ]


if __name__ == "__main__":
    sys.exit(main())
