"""Running one command and measuring its whole process tree: wall time, CPU seconds, peak RSS.

The benchmark makes itself a child subreaper, so descendants orphaned by their parent (bulkdl's
forkserver and its workers outlive the main process by a moment) are reparented to us; reaping every one
with ``wait4`` gives each process's own rusage, so CPU is summed and peak RSS maxed over the whole tree.

A process's peak RSS survives ``exec``: a command forked straight from this (large) Python process would
report our size as its own. So each command runs under GNU ``time``, a small program, whose ``%M`` is the
command's own peak.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

_PR_SET_CHILD_SUBREAPER = 36
TIME = "/usr/bin/time"  # GNU time (Debian package "time")


def become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


@dataclass(frozen=True)
class Sample:
    wall: float
    cpu: float
    peak_rss: int  # bytes, the largest single process
    code: int


def _children() -> set[int]:
    pids: set[int] = set()
    for task in Path("/proc/self/task").iterdir():
        pids |= {int(pid) for pid in (task / "children").read_text().split()}
    return pids


def run(
    argv: list[str], cwd: Path, env: dict[str, str] | None = None, stdout: Path | None = None, tty: int | None = None
) -> Sample:
    """Run ``argv`` to the end of its last descendant; raise if it fails.

    ``stdout``: a file that keeps what the command printed; ``tty``: a terminal's fd for stdin, stdout, stderr.
    """
    before = _children()  # nginx and anything else of ours: not part of this run
    started = time.perf_counter()
    log, peak_file = cwd / "stderr.log", cwd / "peak-rss.txt"
    timed = [TIME, "-f", "%M", "-o", str(peak_file), *argv]
    with open(log, "wb") as stderr, open(stdout or os.devnull, "wb") as out:  # files: nobody reads a pipe
        streams = {"stdin": tty, "stdout": tty, "stderr": tty} if tty is not None else {"stdout": out, "stderr": stderr}
        process = subprocess.Popen(timed, cwd=cwd, env=env, **({"stdin": subprocess.DEVNULL} | streams))
    cpu, peak, code, wall = 0.0, 0, None, 0.0
    while True:
        others = _children() - before - {process.pid}
        if code is not None and not others:
            break
        target = process.pid if code is None else min(others)
        _, status, usage = os.wait4(target, 0)
        cpu += usage.ru_utime + usage.ru_stime
        if target == process.pid:
            code = os.waitstatus_to_exitcode(status)
            wall = time.perf_counter() - started
            peak = max(peak, int(peak_file.read_text().split()[-1]) * 1024)
        else:
            peak = max(peak, usage.ru_maxrss * 1024)
    process.returncode = code  # reaped above; keeps Popen from waiting again
    if code != 0:
        raise RuntimeError(f"{argv[0]} exited {code}: {log.read_text(errors='replace')[-2000:]}")
    return Sample(wall, cpu, peak, code)
