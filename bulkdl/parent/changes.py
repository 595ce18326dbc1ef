"""``--changes FILE``: the paths a run added, updated and removed, one a line, for a downstream sync.

In the spirit of bandersnatch's diff-file: a downstream ``rsync --files-from`` or a CDN purge reads what
changed tonight instead of walking the mirror. Each line is a mark, a space and the path relative to dest:
``+`` new, ``M`` updated (other bytes under a path an earlier run had installed), ``-`` removed (pruned).
A file downloaded again with the very bytes the state recorded is no change and is left out; an adopted one
(on disk with no row, its digests matching) is ``+``: the run that installed it may have been killed before
it could tell anyone, and a downstream fetching a file it has costs less than one missing it. Lines follow
the manifest's order. A path holding a backslash, a newline or a carriage return is written with
coreutils' rule (as ``sha256sum`` writes it): the line starts with a backslash, and in the path ``\\\\``,
``\\n`` and ``\\r`` stand for them, so no name can forge a line. Every run that holds the destination rewrites
the file, atomically: an empty file means nothing changed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from .. import durable
from ..values import FileResult
from .report.summary import Earlier, label

_MARKS = {"new": "+", "adopted": "+", "updated": "M", "removed": "-"}
_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r"})


def line(mark: str, name: str) -> str:
    escaped = name.translate(_ESCAPES)
    return f"{mark} {name}\n" if escaped == name else f"\\{mark} {escaped}\n"


def lines(results: Sequence[FileResult], earlier: Mapping[str, Earlier]) -> list[str]:
    marked = ((_MARKS.get(label(r, earlier)), r.name) for r in sorted(results, key=lambda r: r.index))
    return [line(mark, name) for mark, name in marked if mark is not None]


def write(path: Path, results: Sequence[FileResult], earlier: Mapping[str, Earlier]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    durable.write_bytes(path, "".join(lines(results, earlier)).encode())
