"""Running one command and measuring its whole process tree: wall time, CPU seconds, peak RSS.

The benchmark makes itself a child subreaper, so descendants orphaned by their parent (bulkdl's
forkserver and its workers outlive the main process by a moment) are reparented to us; reaping every one
with ``wait4`` gives each process's own rusage, so CPU is summed and peak RSS maxed over the whole tree.

A process's peak RSS survives ``exec``: a command forked straight from this (large) Python process would
report our size as its own. So each command runs under GNU ``time``, a small program, whose ``%M`` is the
command's own peak. With ``tree``, bench/memory.py also records the peak of each kind of process in it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .memory import TreeSampler

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
    kinds: dict[str, int] = field(default_factory=dict)  # with ``tree``: kind of process → its largest VmHWM


def _children() -> set[int]:
    pids: set[int] = set()
    for task in Path("/proc/self/task").iterdir():
        pids |= {int(pid) for pid in (task / "children").read_text().split()}
    return pids


def run(
    argv: list[str],
    cwd: Path,
    env: dict[str, str] | None = None,
    stdout: Path | None = None,
    tty: int | None = None,
    tree: bool = False,
) -> Sample:
    """Run ``argv`` to the end of its last descendant; raise if it fails.

    ``stdout``: a file that keeps what the command printed; ``tty``: a terminal's fd for stdin, stdout, stderr;
    ``tree``: sample the peak RSS of every process by kind (a thread reading /proc while it runs).
    """
    before = _children()  # nginx and anything else of ours: not part of this run
    started = time.perf_counter()
    log, peak_file = cwd / "stderr.log", cwd / "peak-rss.txt"
    timed = [TIME, "-f", "%M", "-o", str(peak_file), *argv]
    with open(log, "wb") as stderr, open(stdout or os.devnull, "wb") as out:  # files: nobody reads a pipe
        streams = {"stdin": tty, "stdout": tty, "stderr": tty} if tty is not None else {"stdout": out, "stderr": stderr}
        process = subprocess.Popen(timed, cwd=cwd, env=env, **({"stdin": subprocess.DEVNULL} | streams))
    sampler = TreeSampler(process.pid, before)
    with sampler if tree else contextlib.nullcontext():
        cpu, peak, code, wall = _reap(process, before, peak_file, started)
    if code != 0:
        raise RuntimeError(f"{argv[0]} exited {code}: {log.read_text(errors='replace')[-2000:]}")
    return Sample(wall, cpu, peak, code, sampler.peaks() if tree else {})


def _reap(
    process: subprocess.Popen[Any], before: set[int], peak_file: Path, started: float
) -> tuple[float, int, int, float]:
    """Wait for the command and every descendant reparented to us: (CPU s, largest peak RSS, exit code, wall s)."""
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
    assert code is not None
    process.returncode = code  # reaped above; keeps Popen from waiting again
    return cpu, peak, code, wall
