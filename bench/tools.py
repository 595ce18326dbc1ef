"""Each tool's command line for a scenario, with the comparable settings the issue fixes.

One file: 16 connections (aria2c -x16 -s16 -k1M, wget2 --max-threads=16 --chunk-size=64M, bulkdl segments 16;
curl has one). Batches: 8 files at once (aria2c -j8, curl --parallel-max 8, wget2 --max-threads=8, bulkdl
workers 8 and segments 8). Re-runs: bulkdl's state, aria2c --conditional-get, wget2 -N, curl -z.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import yaml

from .data import DataSet

TOOLS = ("bulkdl", "aria2c", "curl", "wget2")
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml: a 100,000-entry manifest in seconds


def available(tool: str) -> bool:
    return tool == "bulkdl" or shutil.which(tool) is not None


def command(tool: str, data: DataSet, base: str, out: Path, rerun: bool, digests: bool = False) -> list[str]:
    urls = [f"{base}/{rel}" for rel, _, _ in data.files]
    one = len(urls) == 1
    if tool == "bulkdl":
        return _bulkdl(data, urls, out, one, digests)
    if tool == "aria2c":
        listing = _write_list(out, "urls.txt", urls)
        split = ["-x16", "-s16", "-k1M"] if one else ["-j8"]
        again = ["--conditional-get=true", "--allow-overwrite=true"] if rerun else []
        return ["aria2c", "-q", "--file-allocation=none", "-d", str(out), "-i", str(listing), *split, *again]
    if tool == "wget2":
        listing = _write_list(out, "urls.txt", urls)
        threads = ["--max-threads=16", "--chunk-size=64M"] if one else ["--max-threads=8"]
        again = ["-N"] if rerun else []
        return ["wget2", "-q", "-nd", "-P", str(out), "-i", str(listing), *threads, *again]
    lines = []
    for url in urls:
        target = out / url.rsplit("/", 1)[1]
        lines += [f'url = "{url}"', f'output = "{target}"'] + ([f'time-cond = "{target}"'] if rerun else [])
    config = _write_list(out, "curl.cfg", lines)
    return ["curl", "-s", "-S", "--fail", "--parallel", "--parallel-max", "8", "-K", str(config)]


def _bulkdl(data: DataSet, urls: list[str], out: Path, one: bool, digests: bool) -> list[str]:
    files = [
        {"url": url, "path": data.local(rel, "bulkdl"), **({"sha256": sha} if digests else {})}
        for url, (rel, _, sha) in zip(urls, data.files, strict=True)
    ]
    manifest = {
        "version": 1,
        "dest": str(out),
        "workers": 1 if one else 8,
        "defaults": {"segments": 16 if one else 8},
        "files": files,
    }
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.dump(manifest, Dumper=_DUMPER, sort_keys=False))
    return [sys.executable, "-m", "bulkdl", "run", str(path), "--no-progress"]


def _write_list(out: Path, name: str, lines: list[str]) -> Path:
    path = out.parent / f"{out.name}.{name}"
    path.write_text("\n".join(lines) + "\n")
    return path
