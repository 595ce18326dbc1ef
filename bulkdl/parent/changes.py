"""``--changes FILE``: the paths a run added, updated and removed, one a line, for a downstream sync.

In the spirit of bandersnatch's diff-file: a downstream ``rsync --files-from`` or a CDN purge reads what
changed tonight instead of walking the mirror. Each line is a mark, a space and the path relative to dest:
``+`` new, ``M`` updated (other bytes under a path an earlier run had installed), ``-`` removed (pruned).
A file downloaded again with the very bytes the state recorded is no change and is left out. An adopted one
(found on disk unlike its row, its digests matching) is no change either if the row recorded those bytes,
``M`` if it recorded others (a new version a killed run installed), and ``+`` if there was no row: a lost
state or a mirror seeded by rsync, where a downstream fetching a file it has costs less than one missing
it. Lines follow the manifest's order; after them, by path, what a killed run recorded but never listed
(state.State.note_change keeps each change with its row until a changes file lists it). A path holding a
backslash, a newline or a carriage return is written with coreutils' rule (as ``sha256sum`` writes it): the
line starts with a backslash, and in the path ``\\\\``, ``\\n`` and ``\\r`` stand for them, so no name can
forge a line. Every run that holds the destination rewrites the file, atomically: an empty file means nothing
changed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from .. import durable
from ..values import FileResult
from .report.summary import Earlier, label

_MARKS = {"new": "+", "updated": "M", "removed": "-"}
_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r"})


def line(mark: str, name: str) -> str:
    escaped = name.translate(_ESCAPES)
    return f"{mark} {name}\n" if escaped == name else f"\\{mark} {escaped}\n"


def lines(
    results: Sequence[FileResult], earlier: Mapping[str, Earlier], unreported: Mapping[str, str] | None = None
) -> list[str]:
    """This run's changes in the manifest's order, then, by path, those an earlier run recorded but never
    listed (state.State.unreported: it was killed before its changes file) that this run does not list."""
    marked = ((mark(r, earlier), r.name) for r in sorted(results, key=lambda r: r.index))
    listed = [(m, name) for m, name in marked if m is not None]
    names = {name for _, name in listed}
    listed += [(m, name) for name, m in sorted((unreported or {}).items()) if name not in names]
    return [line(m, name) for m, name in listed]


def mark(r: FileResult, earlier: Mapping[str, Earlier]) -> str | None:
    """``r``'s mark (+, M or -), or None if it changed nothing a downstream sync needs to hear of."""
    said = label(r, earlier)
    if said != "adopted":
        return _MARKS.get(said)
    was = earlier.get(r.name)
    if was is None:
        return "+"
    return None if was == (r.sha256, r.size) else "M"


def write(
    path: Path,
    results: Sequence[FileResult],
    earlier: Mapping[str, Earlier],
    unreported: Mapping[str, str] | None = None,
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    durable.write_bytes(path, "".join(lines(results, earlier, unreported)).encode())
