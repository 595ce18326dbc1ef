"""A worker process killed from outside (the OOM killer) must not take the rest of the batch with it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from .conftest import cli_env, write_manifest
from .httpserver import FaultServer, content

MiB = 1024**2


def _workers(group: int) -> list[int]:
    """bulkdl's worker processes: the children of its forkserver."""
    rows = [line.split(None, 2) for line in subprocess.run(
        ["ps", "-o", "pid=,ppid=,args=", "-g", str(group)], capture_output=True, text=True, check=False
    ).stdout.splitlines()]  # fmt: skip
    servers = {int(r[0]) for r in rows if int(r[1]) == group and "forkserver" in r[2]}
    return [int(r[0]) for r in rows if int(r[1]) in servers]


def _start(tmp_path: Path, manifest: Path) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "bulkdl", "run", str(manifest), "--report", str(tmp_path / "report.json")]
    return subprocess.Popen(
        argv,
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _wait_for_workers(process: subprocess.Popen[str], count: int) -> list[int]:
    deadline = time.monotonic() + 30
    while len(found := _workers(process.pid)) < count:
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.05)
    return found


def test_a_killed_worker_costs_only_a_retry(builtin: FaultServer, tmp_path: Path) -> None:
    files = {f"w{i}.bin": content(f"w{i}", 3 * MiB) for i in range(6)}
    urls = [builtin.add(name, data, rate=4 * MiB) for name, data in files.items()]
    process = _start(tmp_path, write_manifest(tmp_path, urls, workers=2, defaults={"segments": 1}))
    victim = _wait_for_workers(process, 2)[0]
    time.sleep(0.3)  # both workers are on a file by now
    os.kill(victim, signal.SIGKILL)
    output, _ = process.communicate(timeout=90)
    assert process.returncode == 0, output
    for name, data in files.items():
        assert (tmp_path / "mirror" / name).read_bytes() == data
    assert "Traceback" not in output


def test_a_file_whose_worker_keeps_dying_fails_alone_and_clearly(builtin: FaultServer, tmp_path: Path) -> None:
    urls = [builtin.add(f"d{i}.bin", content(f"d{i}", 8 * MiB), rate=2 * MiB) for i in range(2)]
    process = _start(tmp_path, write_manifest(tmp_path, urls, workers=2, defaults={"segments": 1}))
    stop = threading.Event()

    def keep_killing() -> None:  # every worker, again and again, as a machine out of memory might
        while not stop.is_set() and process.poll() is None:
            for pid in _workers(process.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.3)

    killer = threading.Thread(target=keep_killing)
    killer.start()
    try:
        output, _ = process.communicate(timeout=120)
    finally:
        stop.set()
        killer.join()
    assert process.returncode == 1, output
    assert "worker process fetching it died" in output and "Traceback" not in output
