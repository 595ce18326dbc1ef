"""Issue 11's targets, each printed met or missed with bulkdl's figure and its ratio to what it is held against.

Walls are medians over the rounds, peers measured in the same run. A target whose figures are missing (a peer
not installed, a scenario left out by --only) says "not measured"; none is ever loosened to be met.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass

from .data import DataSet, MiB
from .results import Results, Scenario, median

PEERS = ("aria2c", "curl", "wget2")
SMALL_FILE_PEERS = ("curl", "wget2")  # MANY and SCALE: the fastest small-file tools, as the issue names them
MAX_SENT = 1.02  # bytes sent ÷ payload
MAX_RSS = 64 * MiB  # every bulkdl process
BIG_CAPPED_SHARE = 0.95  # of the ceiling


@dataclass(frozen=True)
class Ceiling:
    """BIG capped: the link's ideal (connections x per-connection cap) and this disk writing it with fsync."""

    payload: int
    link: float  # seconds
    disk: float  # seconds, median of dd conv=fsync

    @property
    def seconds(self) -> float:
        return max(self.link, self.disk)

    def describe(self) -> str:
        def rate(seconds: float) -> str:
            return f"{seconds:.2f} s, {self.payload / MiB / seconds:.0f} MiB/s"

        which = "link" if self.link >= self.disk else "disk"
        return f"ceiling: {which}; link ideal {rate(self.link)}, dd conv=fsync {rate(self.disk)}"


def _verdict(what: str, figure: float | None, limit: float | None, against: str, strict: bool = False) -> str:
    if figure is None or limit is None:
        return f"target: {what} not measured (vs {against})"
    verdict = "met" if (figure < limit if strict else figure <= limit) else "missed"
    return f"target: {what} {figure:.2f} s vs {against} {limit:.2f} s → {verdict} ({figure / limit:.2f}x)"


def _best(results: Results, scenario: str, peers: Iterable[str]) -> tuple[str, float] | None:
    walls = [(tool, wall) for tool in peers if (wall := median(results, scenario, tool)) is not None]
    return min(walls, key=lambda pair: pair[1]) if walls else None


def against_peers(results: Results, scenario: str, peers: tuple[str, ...], strict: bool = False) -> str:
    """bulkdl's median wall ≤ the best peer's (``strict``: ahead of every peer)."""
    best = _best(results, scenario, peers)
    shown = f"{'ahead of each' if strict else '1.0 x best'} of {'/'.join(peers)}"
    against = f"{shown} (best: {best[0]})" if best else shown
    return _verdict(scenario, median(results, scenario, "bulkdl"), best[1] if best else None, against, strict)


def big_capped(results: Results, ceiling: Ceiling | None) -> str:
    """≥ 0.95 x the ceiling's rate, i.e. wall ≤ the ceiling's seconds ÷ 0.95; the ratio is of rates."""
    wall = median(results, "BIG capped", "bulkdl")
    if wall is None or ceiling is None:
        return "target: BIG capped not measured (vs 0.95 x ceiling)"
    share = ceiling.seconds / wall
    verdict = "met" if share >= BIG_CAPPED_SHARE else "missed"
    return (
        f"target: BIG capped {wall:.2f} s = {share:.2f} x ceiling ({ceiling.seconds:.2f} s) vs "
        f"{BIG_CAPPED_SHARE} x → {verdict} [{ceiling.describe()}]"
    )


def sent(results: Results, data: dict[str, DataSet], scenarios: list[Scenario]) -> str:
    ratios = {
        s.name: statistics.median(cell.sent) / data[s.data].payload
        for s in scenarios
        if (cell := results.get((s.name, "bulkdl"))) and cell.sent
    }
    if not ratios:
        return f"target: bytes sent ÷ payload not measured (vs {MAX_SENT})"
    worst = max(ratios, key=ratios.__getitem__)
    verdict = "met" if ratios[worst] <= MAX_SENT else "missed"
    return f"target: bytes sent ÷ payload, worst {ratios[worst]:.3f} ({worst}) vs {MAX_SENT} → {verdict}"


def memory(results: Results, scenarios: list[Scenario]) -> str:
    """Every bulkdl process ≤ 64 MiB: each kind's VmHWM and the table's whole-tree figure, whichever is larger."""
    worst: tuple[int, str] = (0, "")
    for s in scenarios:
        cell = results.get((s.name, "bulkdl"))
        if cell is None or not cell.samples:
            continue
        kinds = {k: v for k, v in cell.kinds().items() if k != "time"}  # GNU time runs the command: not bulkdl's
        kinds["largest process of the tree (wait4)"] = max(sample.peak_rss for sample in cell.samples)
        kind = max(kinds, key=kinds.__getitem__)
        worst = max(worst, (kinds[kind], f"{s.name}, {kind}"))
    if not worst[1]:
        return "target: every bulkdl process ≤ 64 MiB not measured"
    verdict = "met" if worst[0] <= MAX_RSS else "missed"
    return f"target: every bulkdl process ≤ 64 MiB, largest {worst[0] / MiB:.0f} MiB ({worst[1]}) → {verdict}"


def common(results: Results, data: dict[str, DataSet], scenarios: list[Scenario], ceiling: Ceiling | None) -> list[str]:
    names = {s.name for s in scenarios}
    lines = []
    for name, peers, strict in (
        ("MANY unthrottled", SMALL_FILE_PEERS, False),
        ("MANY capped", SMALL_FILE_PEERS, False),
        ("BIG unthrottled", ("curl",), False),
        ("MIXED unthrottled", PEERS, False),
        ("MIXED capped", PEERS, True),
    ):
        if name in names:
            lines.append(against_peers(results, name, peers, strict))
    if "BIG capped" in names:
        lines.append(big_capped(results, ceiling))
    return [*lines, *_everywhere(results, data, scenarios)]


def wan(results: Results, data: dict[str, DataSet], scenarios: list[Scenario]) -> list[str]:
    """First runs and re-runs (no digests) each ≤ 1.0 x the best peer at the same budget, then bytes and memory."""
    return [*(against_peers(results, s.name, PEERS) for s in scenarios), *_everywhere(results, data, scenarios)]


def scale(results: Results, data: dict[str, DataSet], scenarios: list[Scenario]) -> list[str]:
    """SCALE's first run ≤ 1.0 x the best of curl/wget2 (its re-runs keep the previous issue's targets)."""
    first = [against_peers(results, s.name, SMALL_FILE_PEERS) for s in scenarios if not s.rerun]
    return [*first, *_everywhere(results, data, scenarios)]


def _everywhere(results: Results, data: dict[str, DataSet], scenarios: list[Scenario]) -> list[str]:
    return [sent(results, data, scenarios), memory(results, scenarios)]
