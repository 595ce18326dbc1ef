"""What the earlier attempts of a task finished, so that Dask's rerun of a task does not fetch them again.

Dask runs a task again when the worker running it dies (task.py); its files that attempt had already put in
place would otherwise be fetched again, as the decision sent with the task (made before any of them) says.
So each task appends the result of every file it puts in place, or finds current, to a file of its own,
``dest/.bulkdl/cluster/<run>/<first index>``, and a later attempt of the same task hands those results back
instead of fetching the files. It is the completion marker img2dataset keeps per shard, per file.

One JSON line per result, not fsynced and read leniently: a line lost or torn by the death only costs one
fetch again. A result is appended after its file is durable in place (fetch.py syncs before it renames), so
a line never vouches for a file that is not there. The client makes the run's directory and removes it at
the end (client.py), and at its start removes what a client killed before it left (it holds the lock).
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import fields
from pathlib import Path
from types import TracebackType
from typing import Any

from ..values import FileResult, Status

# The results worth handing back: the file is in place. A failure is worth another try on another worker.
_KEPT = (Status.DOWNLOADED, Status.SKIPPED)


def run_dir(dest: Path, run: str) -> Path:
    return dest / ".bulkdl" / "cluster" / run


class Done:
    """The results a task's earlier attempts recorded at ``path`` (``found``), and this attempt's own."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._fd: int | None = None
        self.found = _read(path)

    def __enter__(self) -> Done:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._fd is not None:
            os.close(self._fd)

    def add(self, result: FileResult) -> None:
        if result.status not in _KEPT:
            return
        line = (json.dumps(_plain(result), separators=(",", ":")) + "\n").encode()
        with self._lock:
            try:
                if self._fd is None:
                    self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                os.write(self._fd, line)
            except OSError:  # the run's directory gone (its client ended): only a refetch is at stake
                pass


def _plain(result: FileResult) -> dict[str, Any]:
    return {f.name: getattr(result, f.name) for f in fields(FileResult)}


def _read(path: Path) -> dict[int, FileResult]:
    try:
        text = path.read_bytes().decode(errors="replace")
    except OSError:  # none yet: the first attempt
        return {}
    found: dict[int, FileResult] = {}
    for line in text.splitlines():
        try:
            plain = json.loads(line)
            result = FileResult(
                **{
                    **plain,
                    "status": Status(plain["status"]),
                    "notes": tuple(plain["notes"]),
                    "digests": tuple((str(a), str(d)) for a, d in plain["digests"]),
                }
            )
        except (ValueError, TypeError, KeyError):  # torn by the death of the attempt that wrote it
            continue
        found[result.index] = result
    return found
