"""When renames become durable, observed in every bulkdl process through Python's audit hooks.

A ``sitecustomize`` on PYTHONPATH installs a hook in bulkdl, its forkserver and (inherited) every worker. The
hook logs each ``os.replace``/``os.rename`` and each directory opened with O_DIRECTORY (how a directory is
fsynced), with a clock all processes share.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .conftest import REPO, cli_env, write_manifest
from .httpserver import FaultServer, content

_HOOK = """
import os, sys, time

_log = os.environ["BULKDL_AUDIT_LOG"]


def _hook(event, args):
    if event == "open" and isinstance(args[2], int) and args[2] & os.O_DIRECTORY:
        what = f"sync {os.fspath(args[0])}"
    elif event == "os.rename":
        what = f"rename {os.fspath(args[1])}"
    else:
        return
    with open(_log, "a") as log:
        log.write(f"{time.monotonic_ns()} {os.getpid()} {what}\\n")


sys.addaudithook(_hook)
"""


def test_directory_syncs_are_batched_and_come_after_the_renames(builtin: FaultServer, tmp_path: Path) -> None:
    # Each file is fsynced before its rename; its directory is fsynced by the run before the state records
    # the file, once per commit rather than once per file (60 files, not 60 directory fsyncs).
    urls = [builtin.add(f"d/f{i:02d}.bin", content(f"d{i}", 10_000 + i)) for i in range(60)]
    manifest = write_manifest(tmp_path, urls, workers=4)
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_HOOK)
    log = tmp_path / "audit.log"
    env = cli_env(PYTHONPATH=f"{site}:{REPO}", BULKDL_AUDIT_LOG=str(log))
    argv = [sys.executable, "-m", "bulkdl", "run", str(manifest)]
    done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout + done.stderr
    mirror = str(tmp_path / "mirror")
    events = [line.split(" ", 3) for line in log.read_text().splitlines()]
    renames = [int(t) for t, _, kind, path in events if kind == "rename" and path.startswith(mirror + "/")]
    syncs = [int(t) for t, _, kind, path in events if kind == "sync" and path == mirror]
    assert len(renames) == 60, "every file renamed into place"
    assert 1 <= len(syncs) <= 10, f"{len(syncs)} fsyncs of the directory for 60 files"
    assert max(syncs) > max(renames), "the last rename was never made durable"
