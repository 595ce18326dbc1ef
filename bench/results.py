"""What the rounds measured, per (scenario, tool), and the table every block shows."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from . import measure
from .data import DataSet
from .tools import TOOLS, available


@dataclass(frozen=True)
class Scenario:
    name: str
    data: str  # data set
    capped: bool = False
    rerun: bool = False
    digests: bool = False  # bulkdl's manifest carries the digests (a re-run then needs no request)
    wan: bool = False  # from the server that waits before each response's first byte, more files at once

    def skip(self, tool: str, scale_name: str) -> str | None:
        if tool == "curl" and self.data == "BIG" and self.capped:
            return "one connection at 20 MiB/s: ~51 s by arithmetic"
        if self.digests and self.rerun and tool != "bulkdl":
            return "only bulkdl can use digests to skip"
        if self.data == scale_name and tool == "aria2c":
            return "SCALE compares curl and wget2"
        if self.data == scale_name and self.rerun and tool == "curl":
            return "SCALE: curl on the first run only"
        return None


@dataclass
class Cell:
    samples: list[measure.Sample] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)
    connections: list[int] = field(default_factory=list)  # distinct connections in nginx's log for the run
    peaks: list[int] = field(default_factory=list)  # bulkdl: the parent's own VmHWM at exit, bytes
    lines: list[int] = field(default_factory=list)  # bulkdl: lines printed to stdout

    def kinds(self) -> dict[str, int]:
        """bulkdl: the largest peak RSS of each kind of process over the rounds, bytes."""
        found: dict[str, int] = {"parent": max(self.peaks, default=0)}
        for sample in self.samples:
            for kind, peak in sample.kinds.items():
                found[kind] = max(found.get(kind, 0), peak)
        return found


Results = dict[tuple[str, str], Cell]


def median(results: Results, scenario: str, tool: str) -> float | None:
    cell = results.get((scenario, tool))
    return statistics.median(s.wall for s in cell.samples) if cell and cell.samples else None


def table(results: Results, data: dict[str, DataSet], scenarios: list[Scenario], scale_name: str) -> list[str]:
    rows = [
        "| scenario | tool | wall s, median (min-max) | CPU s | peak RSS MiB | rate | sent ÷ payload | connections "
        "| wall ÷ bulkdl |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for scenario in scenarios:
        d = data[scenario.data]
        base = median(results, scenario.name, "bulkdl")
        for tool in TOOLS:
            cell = results.get((scenario.name, tool))
            if cell is None or not cell.samples:
                reason = scenario.skip(tool, scale_name) or ("not installed" if not available(tool) else "no sample")
                rows.append(f"| {scenario.name} | {tool} | not run: {reason} | | | | | | |")
                continue
            walls = [s.wall for s in cell.samples]
            wall = statistics.median(walls)
            rate = f"{len(d.files) / wall:,.0f} files/s" if len(d.files) > 1 else f"{d.payload / 1e6 / wall:,.0f} MB/s"
            cpu = statistics.median(s.cpu for s in cell.samples)
            rss = max(s.peak_rss for s in cell.samples) / 1024**2
            sent = statistics.median(cell.sent) / d.payload
            ratio = f"{wall / base:.2f}" if base else "-"
            conns = max(cell.connections, default=0)
            rows.append(
                f"| {scenario.name} | {tool} | {wall:.2f} ({min(walls):.2f}-{max(walls):.2f}) | {cpu:.2f} | {rss:.0f} "
                f"| {rate} | {sent:.3f} | {conns:,} | {ratio} |"
            )
    return rows


def memory(results: Results, scenarios: list[Scenario]) -> list[str]:
    """bulkdl's peak RSS by kind of process, the largest over the rounds, with how many processes ran."""
    rows = ["| scenario | bulkdl parent | forkserver | largest worker | other |", "|---|---|---|---|---|"]
    for scenario in scenarios:
        cell = results.get((scenario.name, "bulkdl"))
        if cell is None or not cell.samples:
            continue
        kinds = cell.kinds()
        mib = {kind: f"{peak / 1024**2:.0f} MiB" for kind, peak in kinds.items()}
        other = ", ".join(f"{k} {v}" for k, v in mib.items() if k not in ("parent", "forkserver", "worker", "time"))
        rows.append(
            f"| {scenario.name} | {mib['parent']} | {mib.get('forkserver', '-')} | {mib.get('worker', '-')} "
            f"| {other or '-'} |"
        )
    return rows
