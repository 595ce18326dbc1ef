"""Many files on threads of one process, as a worker runs them: real server, real files, real fsyncs."""

from __future__ import annotations

import errno
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bulkdl import durable
from bulkdl.values import FileResult, Job, Settings, Status
from bulkdl.worker.fetch import fetch_file

from .httpserver import FaultServer, content


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
