"""Many files on threads of one process, as a worker runs them: real server, real files, real fsyncs."""

from __future__ import annotations

import errno
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bulkdl import durable
from bulkdl.values import FileResult, Job, Settings, Status
from bulkdl.worker.fetch import fetch_file

from .conftest import REPO, cli_env, write_manifest
from .httpserver import FaultServer, content

MiB = 1024**2


def _fetch_all(server: FaultServer, dest: Path, count: int) -> tuple[list[FileResult], list[bytes]]:
    bodies = [content(f"t{i}", 5_000 + 37 * i) for i in range(count)]
    urls = [server.add(f"d/f{i:02d}.bin", body) for i, body in enumerate(bodies)]
    jobs = [
        Job(i, u, u, (), f"d/f{i:02d}.bin", (), dest / f"d/f{i:02d}.bin", None, (), Settings())
        for i, u in enumerate(urls)
    ]
    stop = threading.Event()
    with ThreadPoolExecutor(8) as threads:
        return list(threads.map(lambda job: fetch_file(job, None, stop), jobs)), bodies


def test_files_finished_together_are_each_installed_byte_exact(builtin: FaultServer, tmp_path: Path) -> None:
    results, bodies = _fetch_all(builtin, tmp_path, 40)
    assert [r.status for r in results] == [Status.DOWNLOADED] * 40, [r.error for r in results]
    assert [(tmp_path / f"d/f{i:02d}.bin").read_bytes() for i in range(40)] == bodies
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == [f"f{i:02d}.bin" for i in range(40)]


def test_a_failed_sync_fails_its_files_and_installs_none(
    builtin: FaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(durable.os, "fsync", failing)
    results, _ = _fetch_all(builtin, tmp_path, 12)
    assert {(r.status, r.error) for r in results} == {
        (Status.FAILED, "not installed: making it durable failed (Input/output error)")
    }
    assert not [p for p in (tmp_path / "d").iterdir() if p.suffix == ".bin"], "nothing renamed into place"


_FAILING_CLEANUP = """
import errno, os, sys

def _hook(event, args):
    bad = os.path.join(os.environ["BAD_DIR"], ".bad.bin.bulkdl-tmp")
    if event in ("os.rename", "os.remove") and os.fspath(args[0]) == bad:
        raise OSError(errno.EIO, "injected", os.fspath(args[0]))

sys.addaudithook(_hook)
"""


def test_a_file_whose_cleanup_raises_fails_alone_and_the_run_ends(builtin: FaultServer, tmp_path: Path) -> None:
    # The install's rename and then the temp's unlink fail (a disk failing): fetch_file's own cleanup
    # raises. Its thread died without a result, and the run waited for it for ever (found by review).
    urls = [builtin.add("bad.bin", content("bad", 4 * MiB)), builtin.add("good.bin", content("good", 10_000))]
    manifest = write_manifest(tmp_path, urls, workers=1, defaults={"segments": 2, "min_segment_size": MiB})
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_FAILING_CLEANUP)
    env = cli_env(PYTHONPATH=f"{site}:{REPO}", BAD_DIR=str(tmp_path / "mirror"))
    argv = [sys.executable, "-m", "bulkdl", "run", str(manifest)]
    try:
        done = subprocess.run(
            argv, cwd=tmp_path, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=60
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"bulkdl hung; stderr: {exc.stderr!r}") from None
    assert done.returncode == 1, done.stdout + done.stderr
    failed = [line for line in done.stdout.splitlines() if line.split()[:2] == ["bad.bin", "failed"]]
    assert failed and failed[0].endswith("  injected: " + str(tmp_path / "mirror/.bad.bin.bulkdl-tmp")), done.stdout
    assert (tmp_path / "mirror/good.bin").read_bytes() == content("good", 10_000)
