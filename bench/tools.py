"""Each tool's command line for a scenario, with the comparable settings the issue fixes.

One file: 16 connections (aria2c -x16 -s16 -k1M, wget2 --max-threads=16 --chunk-size=64M, bulkdl segments 16;
curl has one). Batches: ``budget`` files at once, 8 by default and 32 on the WAN server (aria2c -j, curl
--parallel-max, wget2 --max-threads, bulkdl segments 8 and a connection budget, see ``_budget``). Re-runs:
bulkdl's state, aria2c --conditional-get, wget2 -N, curl -z.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import yaml

from bulkdl.parent import schema

from .data import DataSet

TOOLS = ("bulkdl", "aria2c", "curl", "wget2")
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml: a 100,000-entry manifest in seconds
BUDGET_KEYS = {"connections", "max_connections_per_host"}


def available(tool: str) -> bool:
    return tool == "bulkdl" or shutil.which(tool) is not None


def command(
    tool: str, data: DataSet, base: str, out: Path, rerun: bool, digests: bool = False, budget: int = 8
) -> list[str]:
    urls = [f"{base}/{rel}" for rel, _, _ in data.files]
    one = len(urls) == 1
    if tool == "bulkdl":
        return _bulkdl(data, urls, out, 16 if one else budget, digests)
    if tool == "aria2c":
        listing = _write_list(out, "urls.txt", urls)
        split = ["-x16", "-s16", "-k1M"] if one else [f"-j{budget}"]
        again = ["--conditional-get=true", "--allow-overwrite=true"] if rerun else []
        return ["aria2c", "-q", "--file-allocation=none", "-d", str(out), "-i", str(listing), *split, *again]
    if tool == "wget2":
        listing = _write_list(out, "urls.txt", urls)
        threads = ["--max-threads=16", "--chunk-size=64M"] if one else [f"--max-threads={budget}"]
        again = ["-N"] if rerun else []
        return ["wget2", "-q", "-nd", "-P", str(out), "-i", str(listing), *threads, *again]
    lines = []
    for url in urls:
        target = out / url.rsplit("/", 1)[1]
        lines += [f'url = "{url}"', f'output = "{target}"'] + ([f'time-cond = "{target}"'] if rerun else [])
    config = _write_list(out, "curl.cfg", lines)
    return ["curl", "-s", "-S", "--fail", "--parallel", "--parallel-max", str(budget), "-K", str(config)]


def budgeted() -> bool:
    """Whether this bulkdl takes a connection budget (issue 11), rather than one file per worker process."""
    return BUDGET_KEYS <= schema.TOP_KEYS


def _budget(budget: int, one: bool) -> dict[str, object]:
    """bulkdl's top-level keys for ``budget`` connections in all, all of them allowed to the one host.

    Without the budget keys, concurrency is ``workers`` processes of one file each: ``budget`` workers, and one
    segment each beyond 8 files at once, so the WAN's 32 stay 32 connections (at 8 files at once the earlier
    benchmarks' workers 8 x segments 8 are kept, to compare with them).
    """
    if budgeted():
        return {"connections": budget, "max_connections_per_host": budget, "defaults": {"segments": 16 if one else 8}}
    segments = 16 if one else 8 if budget <= 8 else 1
    return {"workers": 1 if one else budget, "defaults": {"segments": segments}}


def _bulkdl(data: DataSet, urls: list[str], out: Path, budget: int, digests: bool) -> list[str]:
    files = [
        {"url": url, "path": data.local(rel, "bulkdl"), **({"sha256": sha} if digests else {})}
        for url, (rel, _, sha) in zip(urls, data.files, strict=True)
    ]
    manifest = {"version": 1, "dest": str(out), **_budget(budget, len(files) == 1), "files": files}
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.dump(manifest, Dumper=_DUMPER, sort_keys=False))
    return [sys.executable, "-m", "bulkdl", "run", str(path), "--no-progress"]


def _write_list(out: Path, name: str, lines: list[str]) -> Path:
    path = out.parent / f"{out.name}.{name}"
    path.write_text("\n".join(lines) + "\n")
    return path
