"""Where a file's bytes come from and where they go while it downloads.

Pure segment arithmetic, the names of the partial files, and the sidecar that lets a later run trust them.

Beside the destination ``d/name`` a download in progress keeps:

- ``d/name.part<K>``: the bytes of segment K so far, starting at the segment's first byte. Its length *is*
  the segment's progress; nothing else records it.
- ``d/name.bulkdl``: the sidecar, JSON written atomically whenever it changes::

      {"bulkdl_sidecar": 1, "source": "<manifest URL>", "url": "<URL after redirects>", "size": 1048576 | null,
       "etag": "\\"abc\\"" | null, "last_modified": "<HTTP date>" | null, "ranged": true,
       "segments": [[0, 524288], [524288, 1048576]], "mirrors": ["<URL>", ...]}

  ``segments`` are half-open byte ranges ``[start, end)``, the K-th for ``name.part<K>``: in file order until
  a thread steals the back half of a range (board.py), which shortens that range and appends the new one.
  ``end`` is null for a single stream of unknown
  length. A sidecar that cannot be read as exactly this is discarded with its parts.
"""

from __future__ import annotations

import glob
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import durable

SIDECAR_VERSION = 1


@dataclass(frozen=True, slots=True)
class Segment:
    index: int
    start: int
    end: int | None  # exclusive; None while the length is unknown

    @property
    def length(self) -> int | None:
        return None if self.end is None else self.end - self.start


@dataclass(frozen=True, slots=True)
class Plan:
    source: str  # the manifest's URL: parts are only trusted for the URL they came from
    url: str
    size: int | None
    etag: str | None
    last_modified: str | None
    ranged: bool
    segments: tuple[Segment, ...]
    mirrors: tuple[str, ...] = ()  # other URLs for the same bytes that segments may also come from


def split(size: int, max_segments: int, min_segment_size: int) -> tuple[Segment, ...]:
    """Split ``size`` bytes into at most ``max_segments`` near-equal ranges of at least ``min_segment_size``.

    A file smaller than two minimum segments stays whole; size 0 needs no segment at all.
    """
    if size == 0:
        return ()
    count = max(1, min(max_segments, size // max(1, min_segment_size)))
    base, extra = divmod(size, count)
    segments = []
    start = 0
    for index in range(count):
        end = start + base + (1 if index < extra else 0)
        segments.append(Segment(index, start, end))
        start = end
    return tuple(segments)


def single(size: int | None) -> tuple[Segment, ...]:
    """One segment for the whole file: a server without ranges, or a length we will learn at the end."""
    return (Segment(0, 0, size),) if size != 0 else ()


def part_path(final: Path, index: int) -> Path:
    return final.with_name(f"{final.name}.part{index}")


def length(path: Path) -> int:
    """Bytes in a part file so far: its segment's progress (0 before it exists)."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def sidecar_path(final: Path) -> Path:
    return final.with_name(f"{final.name}.bulkdl")


def save(final: Path, plan: Plan) -> None:
    doc = {
        "bulkdl_sidecar": SIDECAR_VERSION,
        "source": plan.source,
        "url": plan.url,
        "size": plan.size,
        "etag": plan.etag,
        "last_modified": plan.last_modified,
        "ranged": plan.ranged,
        # Listed by index, so that a segment's position is its part's number; a steal appends one.
        "segments": [[s.start, s.end] for s in sorted(plan.segments, key=lambda s: s.index)],
        "mirrors": list(plan.mirrors),
    }
    durable.write_bytes(sidecar_path(final), json.dumps(doc).encode(), sync=False)


def load(final: Path) -> Plan | None:
    """The sidecar's plan, or None when there is none or it cannot be trusted."""
    try:
        doc = json.loads(sidecar_path(final).read_bytes())
        return _from_doc(doc)
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _from_doc(doc: dict[str, Any]) -> Plan | None:
    if doc["bulkdl_sidecar"] != SIDECAR_VERSION:
        return None
    size, segments = doc["size"], doc["segments"]
    plan = Plan(
        source=_str(doc["source"]),
        url=_str(doc["url"]),
        size=None if size is None else _int(size),
        etag=_opt_str(doc["etag"]),
        last_modified=_opt_str(doc["last_modified"]),
        ranged=bool(doc["ranged"]),
        segments=tuple(
            sorted(
                (Segment(i, _int(a), None if b is None else _int(b)) for i, (a, b) in enumerate(segments)),
                key=lambda s: s.start,
            )
        ),
        mirrors=tuple(_str(m) for m in doc["mirrors"]),
    )
    return plan if _contiguous(plan) else None


def _contiguous(plan: Plan) -> bool:
    """Segments, in file order, must tile [0, size), so that concatenating the parts gives the file."""
    position = 0
    for segment in plan.segments:
        if segment.start != position or (segment.end is not None and segment.end < segment.start):
            return False
        position = segment.end if segment.end is not None else -1
    return position == (plan.size if plan.size is not None else -1) or (not plan.segments and plan.size == 0)


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(value)
    return value


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(value)
    return value


def _opt_str(value: Any) -> str | None:
    return None if value is None else _str(value)


def remove(final: Path, plan: Plan | None) -> None:
    """Delete the sidecar and the part files: the plan's, or every ``name.part<K>`` when it is unknown."""
    if plan is not None:
        parts = [part_path(final, s.index) for s in plan.segments]
    else:
        pattern = re.compile(re.escape(final.name) + r"\.part\d+")
        parts = [p for p in final.parent.glob(f"{glob.escape(final.name)}.part*") if pattern.fullmatch(p.name)]
    for part in parts:
        part.unlink(missing_ok=True)
    sidecar_path(final).unlink(missing_ok=True)
