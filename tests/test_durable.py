"""When renames become durable, observed in every bulkdl process through Python's audit hooks.

A ``sitecustomize`` on PYTHONPATH installs a hook in bulkdl, its forkserver and (inherited) every worker. The
hook logs each ``os.replace``/``os.rename``, each directory opened with O_DIRECTORY (how a directory is
fsynced) and each ``bulkdl.sync`` event (durable.fsync: a file's data is on disk), with a clock all processes
share.
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
        what = f"sync\\t{os.fspath(args[0])}"
    elif event == "os.mkdir":
        what = f"mkdir\t{os.fspath(args[0])}"
    elif event == "os.rename":
        what = f"rename\\t{os.fspath(args[1])}\\t{os.fspath(args[0])}"
    elif event == "bulkdl.sync":
        what = f"data\\t{args[0]}"
    else:
        return
    with open(_log, "a") as log:
        log.write(f"{time.monotonic_ns()}\\t{os.getpid()}\\t{what}\\n")


sys.addaudithook(_hook)
"""


def _run_audited(tmp_path: Path, manifest: Path) -> Path:
    """Run bulkdl on ``manifest`` with the hook in every process; the log it wrote."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_HOOK)
    log = tmp_path / "audit.log"
    env = cli_env(PYTHONPATH=f"{site}:{REPO}", BULKDL_AUDIT_LOG=str(log))
    argv = [sys.executable, "-m", "bulkdl", "run", str(manifest)]
    done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout + done.stderr
    return log


def test_data_is_synced_before_its_rename_and_the_directory_after(builtin: FaultServer, tmp_path: Path) -> None:
    # A rename may only publish data already on disk (synced in the process that renames), and the run fsyncs
    # each directory after the renames in it, once per commit rather than once per file (60 files, not 60
    # directory fsyncs), before the state records them (state.State.commit).
    urls = [builtin.add(f"d/f{i:02d}.bin", content(f"d{i}", 10_000 + i)) for i in range(60)]
    log = _run_audited(tmp_path, write_manifest(tmp_path, urls, workers=4))
    mirror = str(tmp_path / "mirror")
    events = [line.split("\t") for line in log.read_text().splitlines()]
    renames = [
        (int(t), pid, rest[1])
        for t, pid, kind, *rest in events
        if kind == "rename"
        and rest[0].startswith(mirror + "/")
        and not rest[0].endswith(".bulkdl")  # sidecars: bookkeeping
        and not rest[0].startswith(mirror + "/.bulkdl/")  # last-run.json: bookkeeping too
    ]
    data = {(pid, rest[0]): int(t) for t, pid, kind, *rest in events if kind == "data"}
    syncs = [int(t) for t, _, kind, *rest in events if kind == "sync" and rest[0] == mirror]
    assert len(renames) == 60, "every file renamed into place"
    unsynced = [source for t, pid, source in renames if data.get((pid, source), t) >= t]
    assert unsynced == [], "renamed before its data was synced"
    assert 1 <= len(syncs) <= 10, f"{len(syncs)} fsyncs of the directory for 60 files"
    assert max(syncs) > max(renames)[0], "the last rename was never made durable"


def test_a_directory_the_run_creates_is_made_durable_in_its_parent(builtin: FaultServer, tmp_path: Path) -> None:
    # A file renamed into a new directory survives a power cut only if the directory's own entry does: the
    # parent of each directory created must be fsynced after the mkdir, before the state records the file.
    urls = [builtin.add(f"deep{i}.bin", content(f"deep{i}", 1000)) for i in range(3)]
    entries = [{"url": url, "path": f"a/b{i % 2}/c/f{i}.bin"} for i, url in enumerate(urls)]
    log = _run_audited(tmp_path, write_manifest(tmp_path, entries))
    mirror = tmp_path / "mirror"
    events = [line.split("\t") for line in log.read_text().splitlines()]
    made = {rest[0]: int(t) for t, _, kind, *rest in events if kind == "mkdir"}
    synced: dict[str, list[int]] = {}
    for t, _, kind, *rest in events:
        if kind == "sync":
            synced.setdefault(rest[0], []).append(int(t))
    created = [path for path in made if Path(path).is_relative_to(mirror / "a") or path == str(mirror / "a")]
    assert len(created) == 5, made  # a, a/b0, a/b1, a/b0/c, a/b1/c
    unsynced = [path for path in created if max(synced.get(str(Path(path).parent), [0])) < made[path]]
    assert unsynced == [], "a new directory's entry was never made durable"
