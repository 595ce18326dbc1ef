"""Where a file's bytes come from: pure segment arithmetic and the sidecar's format. No file system here.

parts.py owns the files themselves; this module only says what they mean.

Beside the destination ``d/name`` a download in progress keeps:

- ``d/name.part<K>``: the bytes of segment K so far, starting at the segment's first byte. Its length *is*
  the segment's progress; nothing else records it.
- ``d/name.bulkdl``: the sidecar, JSON written atomically whenever it changes::

      {"bulkdl_sidecar": 1, "source": "<manifest URL>", "url": "<URL after redirects>", "size": 1048576 | null,
       "etag": "\\"abc\\"" | null, "last_modified": "<HTTP date>" | null, "ranged": true,
       "segments": [[0, 524288], [524288, 1048576]], "mirrors": ["<URL>", ...]}

  ``segments`` are half-open byte ranges ``[start, end)``, the K-th for ``name.part<K>``: in file order until
  a thread steals the back half of a range (board.py), which shortens that range and appends the new one.
  A big file's table is its fixed-size chunks (``layout``), all known when it is planned: the sidecar is
  written once, not as each chunk starts.
  ``end`` is null for a single stream of unknown
  length. A sidecar that cannot be read as exactly this is discarded with its parts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

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


def chunk_length(size: int | None, max_segments: int, min_segment_size: int, chunk_size: int) -> int | None:
    """The length of the chunks a file of ``size`` bytes is fetched in, or None when it is split as a whole.

    A file of more than ``max_segments`` chunks would leave most of its hashing for after its last byte if it
    were split into ``max_segments`` ranges: the in-order hash can only advance as the first range does.
    In chunks handed out in file order the hash follows the download, a chunk or so behind.
    """
    length = max(chunk_size, min_segment_size)
    return length if size is not None and size > max_segments * length else None


def layout(size: int, max_segments: int, min_segment_size: int, chunk_size: int) -> tuple[Segment, ...]:
    """A file's segments: ``split`` for one of at most ``max_segments`` chunks, else fixed-size chunks in
    file order (the last one shorter), as rclone's multi-thread download hands them out."""
    length = chunk_length(size, max_segments, min_segment_size, chunk_size)
    if length is None:
        return split(size, max_segments, min_segment_size)
    return tuple(Segment(i, start, min(start + length, size)) for i, start in enumerate(range(0, size, length)))


def single(size: int | None) -> tuple[Segment, ...]:
    """One segment for the whole file: a server without ranges, or a length we will learn at the end."""
    return (Segment(0, 0, size),) if size != 0 else ()


def encode(plan: Plan) -> bytes:
    """The sidecar's bytes for ``plan``."""
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
    return json.dumps(doc).encode()


def decode(data: bytes) -> Plan | None:
    """The plan a sidecar holds, or None when it cannot be trusted to be exactly one bulkdl wrote."""
    try:
        return _from_doc(json.loads(data))
    except (ValueError, TypeError, KeyError):
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


def doubt(saved: Plan, source: str, size: int | None, lengths: dict[int, int]) -> str | None:
    """Why the partial download ``saved`` (its parts ``lengths`` long) may not be continued, or None.

    Parts are continued only for the manifest URL they came from, only against validators that let the
    server say whether the file is still the same, and never past their segment.
    """
    if saved.source != source:
        return "the URL in the manifest changed"
    if not (saved.etag or saved.last_modified):
        return "the server gave no ETag or Last-Modified to resume against"
    if size is not None and saved.size not in (None, size):
        return "its size differs from the manifest's"
    if not saved.size:  # bulkdl writes no such sidecar; with no byte listed, no request would check it
        return "it lists no byte to resume"
    for segment in saved.segments:
        if segment.length is not None and lengths.get(segment.index, 0) > segment.length:
            return f"part {segment.index} is longer than its segment"
    return None
