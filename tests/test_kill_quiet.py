"""``kill -9`` of bulkdl alone (the OOM killer, or a user's ``kill -9 PID``): multiprocessing's resource
tracker outlives it to unlink the semaphores it held, and must do so without a word on the terminal."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .conftest import cli_env, write_manifest
from .httpserver import FaultServer, content

MiB = 1024**2


def _session(session: int) -> list[int]:
    """The pids of a session's processes (bulkdl, its forkserver, workers and resource tracker)."""
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError):  # a process may end while we read it
            if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[3]) == session:
                found.append(int(entry.name))
    return found


def _semaphores(pid: int) -> set[int]:
    """The inodes of the named POSIX semaphores ``pid`` has mapped. glibc's sem_open maps a temp file it then
    links as /dev/shm/sem.NAME and unlinks, so the mapping names the temp; the inode is the name's."""
    maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
    return {int(line.split()[4]) for line in maps if "/dev/shm/sem." in line}


def _named(inodes: set[int]) -> list[Path]:
    """The names in /dev/shm that still hold one of ``inodes``."""
    return [Path(entry.path) for entry in os.scandir("/dev/shm") if entry.inode() in inodes]  # no stat: no race


def _wait(condition: object, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_kill_9_of_bulkdl_leaves_no_tracker_warning_and_no_semaphore(builtin: FaultServer, tmp_path: Path) -> None:
    urls = [builtin.add("slow.bin", content("slow", 6 * MiB), rate=MiB)]
    manifest = write_manifest(tmp_path, urls, workers=2, defaults={"segments": 1})
    argv = [sys.executable, "-m", "bulkdl", "run", str(manifest)]
    with (tmp_path / "terminal").open("w+") as terminal:
        process = subprocess.Popen(
            argv, cwd=tmp_path, env=cli_env(), stdin=subprocess.DEVNULL, stdout=terminal, stderr=terminal,
            start_new_session=True,
        )  # fmt: skip
        try:
            _wait(lambda: list((tmp_path / "mirror").glob("slow.bin.part*")), "the download never began")
            held = _semaphores(process.pid)
            assert _named(held), "bulkdl holds no named semaphore: this test no longer tests anything"
            process.kill()  # bulkdl's own pid, not its group: the tracker lives on
            process.wait(timeout=10)
            _wait(lambda: not _session(process.pid), "a process of the killed run stayed behind")
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        terminal.seek(0)
        said = terminal.read()
    assert "resource_tracker" not in said and "leaked" not in said, said
    assert not _named(held), "the tracker no longer unlinks what bulkdl left"
