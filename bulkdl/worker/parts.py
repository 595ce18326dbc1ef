"""The one owner of a file's bytes on disk while it downloads: its parts, its sidecar and its assembly temp.

No other module creates, continues, empties, removes or installs them (plan.py says what they mean, the
segment threads and the assembly go through a Parts). Beside the destination ``d/name``:
``d/name.part<K>`` holds segment K's bytes from its first one, ``d/name.bulkdl`` is the sidecar that lets
a later run trust them, ``d/.name.bulkdl-tmp`` is the assembled copy until it is renamed into place.

The invariants, which tests/test_parts.py checks as a state machine over plan, write, steal, kill, resume
and restart:

- a part is continued only when the sidecar describing it is trusted for the current plan (plan.doubt);
  otherwise every part the new plan names is emptied before any byte is written, and the sidecar goes first,
  so that a kill in between can never leave a sidecar vouching for parts of another plan;
- bytes are only appended where the part ends, at the offset the answer was asked for, and never past the
  part's segment as it is now (a steal moves a segment's end closer);
- what is installed is the single part, or the temp the kernel copied the parts into, that the assembly
  hashed: nothing writes to either in between.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path

from .. import durable
from ..errors import LocalError
from . import plan
from .plan import Plan, Segment

# O_NOFOLLOW: a symlink planted where a part or the temp goes is an error, never a way out of dest.
_OPEN = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
# 0o666 less the umask: a finished file gets the mode any other new file would get.
_MODE = 0o666


def part_path(final: Path, index: int) -> Path:
    return final.with_name(f"{final.name}.part{index}")


def sidecar_path(final: Path) -> Path:
    return final.with_name(f"{final.name}.bulkdl")


class Parts:
    """One file's parts, sidecar and temp, from the first byte to the rename (or to what a resume needs)."""

    def __init__(self, final: Path) -> None:
        self.final = final
        self._lock = threading.Lock()
        self._plan: Plan | None = None  # what the parts on disk hold, once started or resumed
        self._recorded = False  # whether a sidecar describes them
        self._no_sidecar = False  # known absent (adopt found none, or this object removed it): no unlink needed
        self._segments: dict[int, Segment] = {}
        self._fds: dict[int, int] = {}
        self._lengths: dict[int, int] = {}
        self._temp: int | None = None
        self._on_empty: list[Callable[[Segment], AbstractContextManager[None]]] = []

    def adopt(self, source: str, size: int | None) -> tuple[Plan | None, str | None]:
        """The partial download an earlier run left, if it may be continued; else None and why not.

        Whatever cannot be continued is removed here, before anything new is written.
        """
        saved, problem = partial(self.final, source, size)
        if problem is not None:
            self._remove(saved)
            return None, problem
        if saved is None:
            self._no_sidecar = True
            return None, None
        self._open(saved, truncate=False)
        self._recorded = True
        return saved, None

    def start(self, new: Plan, record: bool) -> None:
        """Begin ``new`` from nothing; with ``record``, a sidecar describes it so a later run may resume it."""
        self._close()
        if self._recorded or self._plan is not None:
            self._remove(self._plan)  # the plan before this one: parts it had that the new one does not name
        else:
            # Nothing said what lies here, and nothing may be trusted: the sidecar goes before any part is
            # emptied. Without one, only part 0 can have been written (no sidecar, no split), and it is emptied.
            # A sidecar adopt found absent is not unlinked again: the destination lock means no one made one.
            if not self._no_sidecar:
                sidecar_path(self.final).unlink(missing_ok=True)
                self._no_sidecar = True
        self._open(new, truncate=True)
        self._recorded = False
        if record:
            self._save(new)
            self._recorded = True

    @property
    def recorded(self) -> bool:
        return self._recorded

    def on_empty(self, listener: Callable[[Segment], AbstractContextManager[None]]) -> None:
        """Enter ``listener(segment)`` around every emptying of a part: it may hold off its readers, and learns
        that what was read of it no longer holds."""
        self._on_empty.append(listener)

    def length(self, index: int) -> int:
        """Bytes in part ``index``: its segment's progress."""
        return self._lengths.get(index, 0)

    def fd(self, index: int) -> int:
        """A descriptor to read part ``index`` with (pread), for the assembly."""
        return self._fds[index]

    def append(self, index: int, offset: int, data: bytes | memoryview) -> None:
        """Write ``data``, the bytes of the file from ``offset`` on, at the end of part ``index``."""
        segment = self._segments[index]
        have = self._lengths[index]
        if segment.start + have != offset:
            raise AssertionError(f"part {index} ends at byte {segment.start + have}, not at {offset}")
        if segment.length is not None and have + len(data) > segment.length:
            raise AssertionError(f"part {index} would grow past its segment ({segment.length} bytes)")
        fd, view = self._fds[index], memoryview(data)
        while view:
            n = os.pwrite(fd, view, have)
            have += n
            view = view[n:]
            self._lengths[index] = have

    def empty(self, index: int) -> None:
        """Part ``index`` starts over (an answer that restarts the file from its first byte)."""
        with contextlib.ExitStack() as listening:
            for listener in self._on_empty:
                listening.enter_context(listener(self._segments[index]))
            os.ftruncate(self._fds[index], 0)
            self._lengths[index] = 0

    def split(self, thief: Segment, table: tuple[Segment, ...]) -> None:
        """A steal: part ``thief`` is created empty and the sidecar records ``table``, before either is used.

        If the sidecar cannot be saved, nothing changed: the new part is removed and the error raised.
        """
        assert self._plan is not None and self._recorded
        with self._lock:
            fd = os.open(part_path(self.final, thief.index), _OPEN | os.O_TRUNC, _MODE)
            try:
                self._save(replace(self._plan, segments=table))
            except BaseException:
                os.close(fd)
                part_path(self.final, thief.index).unlink(missing_ok=True)
                raise
            self._plan = replace(self._plan, segments=table)
            self._segments = {s.index: s for s in table}
            self._fds[thief.index], self._lengths[thief.index] = fd, 0

    def temp(self) -> int:
        """The assembly temp, created empty on first use; a temp a killed run left is truncated."""
        if self._temp is None:
            self._temp = os.open(durable.temp_path(self.final), _OPEN | os.O_TRUNC, _MODE)
        return self._temp

    def install(self, segments: tuple[Segment, ...]) -> None:
        """Make the file durable and atomically the content of the final path; the parts are then removed.

        One part is the file itself; several were copied into the temp. The directory's fsync is the run's
        (state.State.commit batches it).
        """
        if len(segments) == 1:
            index = segments[0].index
            _install(part_path(self.final, index), self.final, self._fds[index])
            left = [s.index for s in segments if s.index != index]
        else:
            _install(durable.temp_path(self.final), self.final, self.temp())
            os.close(self.temp())
            self._temp = None
            left = [s.index for s in segments]
        self._close()
        if self._recorded:  # without a sidecar there is none to remove: a small file costs no needless unlink
            sidecar_path(self.final).unlink(missing_ok=True)
            self._no_sidecar = True
        for index in left:
            part_path(self.final, index).unlink(missing_ok=True)
        self._plan, self._recorded, self._segments = None, False, {}

    def discard(self) -> None:
        """Remove everything of this file's download: no later run may build on it."""
        self._remove(self._plan)

    def close(self) -> None:
        """Let go of the files; the parts and sidecar stay for a resume, an uninstalled temp is removed."""
        self._close()
        if self._temp is not None:
            os.close(self._temp)
            self._temp = None
            durable.temp_path(self.final).unlink(missing_ok=True)

    def _open(self, current: Plan, truncate: bool) -> None:
        self._plan = current
        self._segments = {s.index: s for s in current.segments}
        flags = _OPEN | (os.O_TRUNC if truncate else 0)
        for index in self._segments:
            fd = self._fds[index] = os.open(part_path(self.final, index), flags, _MODE)
            self._lengths[index] = 0 if truncate else os.fstat(fd).st_size

    def _save(self, current: Plan) -> None:
        self._no_sidecar = False  # from before the rename on: a failed save may leave one
        durable.write_bytes(sidecar_path(self.final), plan.encode(current), sync=False)

    def _close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        self._lengths.clear()

    def _remove(self, known: Plan | None) -> None:
        """Delete the sidecar, then the parts: ``known``'s (and the next index, which a steal creates just
        before the sidecar names it), or every ``name.part<K>`` when nothing says which exist."""
        self.close()
        sidecar_path(self.final).unlink(missing_ok=True)
        self._no_sidecar = True
        if known is not None:
            indexes = [s.index for s in known.segments]
            parts = [part_path(self.final, i) for i in (*indexes, max(indexes, default=-1) + 1)]
        else:
            pattern = re.compile(re.escape(self.final.name) + r"\.part[0-9]+")
            found = self.final.parent.glob(f"{glob.escape(self.final.name)}.part*")
            parts = [p for p in found if pattern.fullmatch(p.name)]
        for part in parts:
            part.unlink(missing_ok=True)
        self._plan, self._recorded, self._segments = None, False, {}


def partial(final: Path, source: str, size: int | None) -> tuple[Plan | None, str | None]:
    """The partial download beside ``final`` for ``source``: the plan its sidecar holds (None: no sidecar, or
    none that can be read) and why it may not be continued (None: it may, or there is none). It only reads:
    Parts.adopt removes what may not be continued, and --dry-run says what a run would do."""
    reason = "its sidecar could not be read"
    try:
        data = sidecar_path(final).read_bytes()
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        data, reason = b"", f"{reason} ({exc.strerror})"
    saved = plan.decode(data)
    if saved is None:
        return None, reason
    lengths = {s.index: _length(part_path(final, s.index)) for s in saved.segments}
    return saved, plan.doubt(saved, source, size, lengths)


def _install(path: Path, final: Path, fd: int) -> None:
    """durable.install, with the directory's fsync left to the run; a failure is said as the user needs it."""
    try:
        durable.install(path, final, fd, sync_dir=False)
    except OSError as exc:  # EIO from the fsync, say: the final path was not touched
        raise LocalError(f"not installed: making it durable failed ({exc.strerror or exc})") from None


def _length(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
