"""``python -m bench``: run every scenario for every tool, alternating, and write docs/performance.md.

python -m bench [--rounds 3] [--only BIG,MANY,WAN] [--scale 1.0] [--out docs/performance.md]

Three blocks of docs/performance.md, each rewritten only when one of its scenarios ran: the loopback
scenarios (BIG, MANY, MIXED, RERUN), WAN (MANY and MIXED from the server that delays each response) and SCALE.
"""

from __future__ import annotations

import argparse
import compileall
import hashlib
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from tests.nginx import ECHO_MODULE, NginxServer

from . import ceilings, doc, measure, scale, targets
from .data import DataSet, generate
from .results import Cell, Results, Scenario, memory, table
from .results import median as results_median
from .tools import TOOLS, available, budgeted, command

REPO = Path(__file__).resolve().parent.parent

SCENARIOS = [
    Scenario("BIG unthrottled", "BIG", digests=True),  # bulkdl checks the SHA-256 its manifest gives
    Scenario("BIG capped", "BIG", capped=True, digests=True),
    Scenario("MANY unthrottled", "MANY"),
    Scenario("MANY capped", "MANY", capped=True),
    Scenario("MIXED unthrottled", "MIXED"),
    Scenario("MIXED capped", "MIXED", capped=True),
    Scenario("RERUN MANY, digests", "MANY", rerun=True, digests=True),
    Scenario("RERUN MANY", "MANY", rerun=True),
    Scenario("RERUN MIXED", "MIXED", rerun=True),
    Scenario("WAN MANY first run", "MANY", wan=True),
    Scenario("WAN MANY re-run", "MANY", rerun=True, wan=True),
    Scenario("WAN MIXED first run", "MIXED", wan=True),
    Scenario("WAN MIXED re-run", "MIXED", rerun=True, wan=True),
    Scenario("SCALE first run", scale.NAME),
    Scenario("SCALE re-run, digests", scale.NAME, rerun=True, digests=True),
    Scenario("SCALE re-run", scale.NAME, rerun=True),
]
WAN_DELAY, WAN_BUDGET = 0.025, 32  # seconds before each response's first byte; files at once, every tool


def _block(scenario: Scenario) -> str:
    return doc.WAN_MARKER if scenario.wan else doc.SCALE_MARKER if scenario.data == scale.NAME else doc.MARKER


def _verify(data: DataSet, out: Path, tool: str) -> None:
    for rel, size, sha in data.files:
        path = out / data.local(rel, tool)
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(8 * 1024**2):
                digest.update(block)
        if path.stat().st_size != size or digest.hexdigest() != sha:
            raise RuntimeError(f"{path}: wrong bytes")


def _base(scenario: Scenario, nginx: NginxServer) -> str:
    return nginx.wan_url if scenario.wan else nginx.capped_url if scenario.capped else nginx.base_url


def _once(tool: str, scenario: Scenario, data: DataSet, nginx: NginxServer, work: Path, cell: Cell) -> None:
    base = _base(scenario, nginx)
    out = work / f"{tool}-out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    budget = WAN_BUDGET if scenario.wan else 8
    if scenario.rerun:  # a finished mirror first, by the same tool, unmeasured
        measure.run(command(tool, data, base, out, False, scenario.digests, budget), work, env)
        _verify(data, out, tool)
    # Every run starts with nothing of another's left to write: a tool that does not fsync leaves its bytes
    # to the kernel's writeback, which then ran during the next tool's run and slowed the fsyncs of that one
    # (bulkdl's MIXED capped: 7.9-8.1 s in the bench, 7.1-7.3 s in runs each after a sync, curl 7.6 s in both).
    os.sync()
    nginx.clear_log()
    argv = command(tool, data, base, out, scenario.rerun, scenario.digests, budget)
    own = tool == "bulkdl"  # its parent records its own VmHWM; every other process of it is sampled
    peak, printed = work / "parent-hwm.txt", work / "stdout.txt"
    sample = measure.run(scale.own_peak(argv, peak) if own else argv, work, env, printed if own else None, tree=own)
    cell.samples.append(sample)
    served = nginx.requests()
    cell.sent.append(sum(r.sent for r in served))
    cell.connections.append(len({r.conn for r in served}))
    if own:
        cell.peaks.append(int(peak.read_text()) * 1024)
        cell.lines.append(len(printed.read_bytes().splitlines()))
    _verify(data, out, tool)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="", help="comma-separated scenario name prefixes (BIG, WAN, SCALE, …)")
    parser.add_argument("--scale", type=float, default=1.0, help="shrink the data sets for a quick look")
    parser.add_argument("--scale-files", type=int, default=20_000, help="files in the SCALE data set")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "performance.md")
    args = parser.parse_args()
    scenarios = [s for s in SCENARIOS if not args.only or any(s.name.startswith(p) for p in args.only.split(","))]
    if not ECHO_MODULE.exists() and any(s.wan for s in scenarios):
        print(f"bench: no {ECHO_MODULE}, WAN left out (apt-get install libnginx-mod-http-echo)")
        scenarios = [s for s in scenarios if not s.wan]
    by_block = {marker: [s for s in scenarios if _block(s) == marker] for marker in doc.MARKERS}
    missing = [t for t in TOOLS if not available(t)]
    if missing:
        print(f"bench: not installed, left out: {', '.join(missing)} (apt-get install nginx-light aria2 curl wget2)")
    if not budgeted() and by_block[doc.WAN_MARKER]:
        print("bench: this bulkdl has no connection budget yet: WAN runs it with workers: 32, segments: 1")
    # A wheel's install byte-compiles bulkdl; an editable one under PYTHONDONTWRITEBYTECODE (this sandbox)
    # never does, and every run compiled each module edited since from source: 0.1 s of the parent's start in
    # a cProfile, and as much in the forkserver's.
    if not compileall.compile_dir(REPO / "bulkdl", quiet=1):
        print("bench: bulkdl could not be byte-compiled: its runs include compiling it")
    measure.become_subreaper()
    blocks: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory(prefix="bulkdl-bench-") as tmp:
        work = Path(tmp)
        nginx = NginxServer(work / "nginx", capped_rate="20m", delay=WAN_DELAY if by_block[doc.WAN_MARKER] else None)
        try:
            print("bench: generating data …", flush=True)
            data = generate(nginx.root, args.scale) if any(s.data != scale.NAME for s in scenarios) else {}
            if by_block[doc.SCALE_MARKER]:
                data[scale.NAME] = scale.generate(nginx.root, int(args.scale_files * args.scale))
            results = _rounds(args.rounds, scenarios, data, nginx, work)
            blocks = _blocks(results, data, by_block, nginx, work, args)
        finally:
            nginx.close()
    for lines in blocks.values():
        print("\n".join(line for line in lines if line.startswith(("|", "target:"))))
    doc.write(args.out, blocks)
    return 0


def _blocks(
    results: Results,
    data: dict[str, DataSet],
    by_block: dict[str, list[Scenario]],
    nginx: NginxServer,
    work: Path,
    args: argparse.Namespace,
) -> dict[str, list[str]]:
    """Only what was measured is rewritten: --only SCALE keeps the other blocks."""
    blocks = {}
    common, wan, scaled = by_block[doc.MARKER], by_block[doc.WAN_MARKER], by_block[doc.SCALE_MARKER]
    if common:
        big = data["BIG"]
        ceiling = (
            ceilings.big_capped(big.payload, work, args.rounds)
            if any(s.data == "BIG" and s.capped for s in common)
            else None
        )
        found = ceilings.ceilings(data, nginx.root, work), ceilings.steps(nginx.root / big.files[0][0], work)
        blocks[doc.MARKER] = doc.common_block(
            table(results, data, common, scale.NAME),
            memory(results, common),
            targets.common(results, data, common, ceiling),
            *found,
            args,
        )
    if wan:
        wan_rows = table(results, data, wan, scale.NAME), memory(results, wan), targets.wan(results, data, wan)
        blocks[doc.WAN_MARKER] = doc.wan_block(*wan_rows, _wan_floors(data, wan, nginx), WAN_DELAY, WAN_BUDGET, args)
    if scaled:
        blocks[doc.SCALE_MARKER] = _scale_block(results, data, scaled, nginx, work, args)
    return blocks


def _wan_floors(data: dict[str, DataSet], scenarios: list[Scenario], nginx: NginxServer) -> list[str]:
    """The delay as one request sees it, and what it alone costs each data set at the budget (a lower bound)."""
    sets = dict.fromkeys(s.data for s in scenarios)
    floors = [f"{d}: {math.ceil(len(data[d].files) / WAN_BUDGET) * WAN_DELAY:.2f} s" for d in sets]
    seen = "not measured (no curl)"
    if available("curl"):
        url = f"{nginx.wan_url}/{data[scenarios[0].data].files[0][0]}"
        seen = f"{ceilings.first_byte(url) * 1000:.1f} ms"
    return [
        f"Time to the first byte of one request to this server (curl, median of 5): {seen}. "
        f"With {WAN_BUDGET} requests at once the delay alone costs a first run at least files ÷ {WAN_BUDGET}, "
        f"rounded up, x {WAN_DELAY * 1000:.0f} ms: {'; '.join(floors)}."
    ]


def _rounds(
    rounds: int, scenarios: list[Scenario], data: dict[str, DataSet], nginx: NginxServer, work: Path
) -> Results:
    results: Results = {}
    for round_ in range(rounds):
        order = TOOLS[round_ % len(TOOLS) :] + TOOLS[: round_ % len(TOOLS)]  # alternate who goes first
        for scenario in scenarios:
            for tool in order:
                if not available(tool) or scenario.skip(tool, scale.NAME):
                    continue
                cell = results.setdefault((scenario.name, tool), Cell())
                _once(tool, scenario, data[scenario.data], nginx, work, cell)
                wall = cell.samples[-1].wall
                print(f"  round {round_ + 1} {scenario.name:<22} {tool:<7} {wall:7.2f} s", flush=True)
    return results


def _scale_block(
    results: Results,
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
        return results_median(results, scenario, tool)

    mine = {s.name: results.get((s.name, "bulkdl"), Cell()) for s in scenarios}
    peaks = {name: cell.peaks for name, cell in mine.items()}
    lines = {name: cell.lines for name, cell in mine.items() if "re-run" in name}
    every = [p for ps in peaks.values() for p in ps], [n for ns in lines.values() for n in ns]
    d = data[scale.NAME]
    return [
        f"Measured {time.strftime('%Y-%m-%d')} by `python -m bench --only SCALE` ({args.rounds} rounds, "
        f"{len(d.files):,} files, {d.payload / 1024**2:.1f} MiB) on {doc.machine()}.",
        "",
        *table(results, data, scenarios, scale.NAME),
        "",
        *scale.figures(peaks, lines, load, pty_),
        "",
        "bulkdl's peak RSS (VmHWM) by process, the largest over the rounds:",
        "",
        *memory(results, scenarios),
        "",
        "```",
        *targets.scale(results, data, scenarios),
        *scale.targets(median, *every, load, pty_),
        "```",
    ]


if __name__ == "__main__":
    sys.exit(main())
