"""docs/performance.md: the machine line and the generated blocks between their markers."""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path

MARKER, SCALE_MARKER, WAN_MARKER = "<!-- bench:results -->", "<!-- bench:scale -->", "<!-- bench:wan -->"
MARKERS = (MARKER, WAN_MARKER, SCALE_MARKER)


def common_block(
    table: list[str],
    memory: list[str],
    targets: list[str],
    ceilings: list[str],
    steps: list[str],
    args: argparse.Namespace,
) -> list[str]:
    return [
        f"Measured {time.strftime('%Y-%m-%d')} by `make bench` ({args.rounds} rounds, scale {args.scale}) on "
        f"{machine()}.",
        "",
        *table,
        "",
        *_memory_and_targets(memory, targets),
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


def wan_block(
    table: list[str],
    memory: list[str],
    targets: list[str],
    floors: list[str],
    delay: float,
    budget: int,
    args: argparse.Namespace,
) -> list[str]:
    return [
        f"Measured {time.strftime('%Y-%m-%d')} by `python -m bench --only WAN` ({args.rounds} rounds, scale "
        f"{args.scale}; every response {delay * 1000:.0f} ms late, {budget} connections each) on {machine()}.",
        "",
        *table,
        "",
        *floors,
        "",
        *_memory_and_targets(memory, targets),
    ]


def _memory_and_targets(memory: list[str], targets: list[str]) -> list[str]:
    return [
        "bulkdl's peak RSS (VmHWM) by process, the largest over the rounds:",
        "",
        *memory,
        "",
        "```",
        *targets,
        "```",
    ]


def write(path: Path, blocks: dict[str, list[str]]) -> None:
    """Rewrite only the blocks that were measured; a block the page lacks goes at its end."""
    text = path.read_text() if path.exists() else "# Performance\n"
    for marker, lines in blocks.items():
        if marker not in text:
            text = text.rstrip("\n") + f"\n\n{marker}\n{marker}\n"
        head, _, rest = text.partition(marker)
        _, _, tail = rest.partition(marker)
        text = f"{head}{marker}\n" + "\n".join(lines) + f"\n{marker}{tail}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def machine() -> str:
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
