"""Peak RSS of every process in a command's tree, by kind: bulkdl's parent, its forkserver, its workers.

A thread of the benchmark reads VmHWM (the kernel's own high-water mark, so nothing between two reads is missed
while the process lives) from /proc/<pid>/status of every descendant every ``INTERVAL`` seconds. What a process
grows in its last interval before exiting is missed: bulkdl's parent, whose summary comes last, reports its own
VmHWM at exit through bench/hwm.py instead. The forkserver outlives bulkdl and is reparented to the benchmark
(a child subreaper), so the tree is followed from the benchmark's own children too; kinds are told apart at the
end, from each process's command line and its parent's.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

INTERVAL = 0.05  # seconds; a read of 40 processes costs about 1 ms


def _children(pid: int | str) -> list[int]:
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(child) for child in (task / "children").read_text().split()]
    except OSError:  # it exited
        pass
    return found


def _status(pid: int) -> tuple[int, int] | None:
    """(parent pid, VmHWM in bytes), or None once it is gone."""
    ppid = hwm = None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("PPid:"):
                ppid = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) * 1024
    except OSError:
        return None
    return (ppid, hwm) if ppid is not None and hwm is not None else None  # a zombie has no VmHWM


@dataclass
class _Seen:
    ppid: int  # when first seen: the forkserver is reparented to the benchmark later
    cmdline: str
    hwm: int = 0


class TreeSampler:
    """``with TreeSampler(pid, ignore) as tree:`` … ``tree.peaks()``: the largest VmHWM of each kind, bytes."""

    def __init__(self, root: int, ignore: set[int]) -> None:
        self._root, self._ignore = root, ignore  # ignore: the benchmark's own other children (nginx)
        self._seen: dict[int, _Seen] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(INTERVAL):
            self.sample()

    def sample(self) -> None:
        todo = [pid for pid in _children("self") if pid not in self._ignore]
        while todo:
            pid = todo.pop()
            todo += _children(pid)
            status = _status(pid)
            if status is None:
                continue
            ppid, hwm = status
            cmdline = _cmdline(pid)
            seen = self._seen.get(pid)
            if seen is None or seen.cmdline != cmdline:
                # New, or it exec'd: before exec a forked child counts the pages it shares with its parent, and
                # exec starts VmHWM again, so only what the new program used counts.
                seen = self._seen[pid] = _Seen(seen.ppid if seen else ppid, cmdline)
            seen.hwm = max(seen.hwm, hwm)

    def peaks(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for pid, seen in self._seen.items():
            kind = self._kind(pid, seen)
            found[kind] = max(found.get(kind, 0), seen.hwm)
        return found

    def _kind(self, pid: int, seen: _Seen) -> str:
        parent = self._seen.get(seen.ppid)
        if pid == self._root:
            return "time"  # GNU time, which runs the command
        if seen.ppid == self._root:
            return "parent"
        if "resource_tracker" in seen.cmdline:
            return "resource tracker"
        if (parent and "forkserver" in parent.cmdline) or "multiprocessing.spawn" in seen.cmdline:
            return "worker"  # forked by the forkserver, so its command line is the forkserver's
        if "forkserver" in seen.cmdline:
            return "forkserver"
        return seen.cmdline.split(" ", 1)[0].rsplit("/", 1)[-1] or "?"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
