"""Turning parts into the final file while they download, then checking it, or refusing to.

An Assembly follows one file from its first byte with two threads: one hashes the in-order prefix of the
parts (every requested algorithm fed the same bytes), the other copies each part's new bytes into the
assembly temp file at their offsets (``os.copy_file_range``: the kernel copies, no byte passes through
Python) and starts their writeback to disk. Two, because the hash is the slower and CPU-bound: behind one
thread that hashed and then copied, a 1 GiB file's copy waited for the hash to reach the end, 0.7 s after
the last byte, while the other core was idle. When the last byte arrives only a tail is left, so the
concatenation, the hash pass and most of the fsync cost little after the download. Size and digests are
checked before anything is renamed: the final path only ever holds verified bytes. A file fetched as one
part is hashed as it arrives (from the buffer just written when no thread follows it: ``feed``) and renamed
into place; it needs no copy. The directory's fsync is left to the run, which batches it
(state.State.commit).

The hash reads the parts, not the temp file; the copy is the kernel's, checked by its length. A part emptied
under the followers (a stream that restarts from zero) is forgotten: its copy starts again and the hash too,
if it had passed the part's start. The hash maps the parts only on a local file system (mountinfo.py); there
a part cut short by another process while mapped would still kill the worker (SIGBUS), but under the
destination lock (parent/lock.py) nothing but this run writes them.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from types import TracebackType

from ..errors import DigestMismatch, VerifyError
from ..hashing import BUFFER, constructor
from . import buffer, mountinfo
from .parts import Parts
from .plan import Plan, Segment

_POLL = 0.02  # seconds the follower sleeps when the parts have not grown
_WINDOW = 8 * 1024**2  # bytes the hash maps at a time: while mapped they count in the process's memory
_WRITEBACK_EVERY = 64 * 1024**2  # start the disk writes of this much new data at a time, not all at the fsync


class Assembly:
    """One file's assembly: begun before its first byte arrives, finished (or closed) after its last."""

    def __init__(self, parts: Parts, algorithms: Iterable[str]) -> None:
        self._parts = parts
        self._algorithms = ("sha256", *(a for a in dict.fromkeys(algorithms) if a != "sha256"))
        # One lock each for the hash's state and the copy's, so that neither waits for a round of the other.
        self._hash_lock = threading.Lock()
        self._copy_lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._copied: dict[int, int] = {}  # part index → bytes of it already in the temp file
        self._unsynced = {"hash": 0, "copy": 0}  # bytes each thread moved since it last started writeback
        self._hashes: dict[str, hashlib._Hash] = {}
        self._position = 0  # bytes of the in-order prefix hashed so far
        self._reset_hash()
        parts.on_empty(self.forgetting)

    def __enter__(self) -> Assembly:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def follow(self, table: Callable[[], Sequence[Segment]]) -> None:
        """Work on the parts while they download; ``table`` gives the segments as they are now."""
        self._stopping.clear()
        for name, round_ in (("assembly-hash", self._hash), ("assembly-copy", self._copy_all)):
            thread = threading.Thread(target=self._follow, args=(round_, table), name=name, daemon=True)
            self._threads.append(thread)
            thread.start()

    def pause(self) -> None:
        """Stop following (the download ended, or failed); whatever is left waits for ``finish``."""
        self._stopping.set()
        for thread in self._threads:
            thread.join()
        self._threads = []

    def feed(self, offset: int, data: memoryview) -> None:
        """``data`` was just appended to a part, at byte ``offset`` of the file: hash it if it continues the
        prefix, so that a file nobody follows is not read back at the end. Not while following: the hashing
        thread holds the lock for a whole round, and the writing thread would wait on it."""
        with self._hash_lock:
            if offset == self._position:
                for h in self._hashes.values():
                    h.update(data)
                self._position += len(data)

    @contextlib.contextmanager
    def forgetting(self, segment: Segment) -> Iterator[None]:
        """Around the emptying of segment's part: neither thread reads it meanwhile (a part cut short under
        the hash's mapping of it would be a SIGBUS), and what was taken from it no longer holds."""
        with self._copy_lock, self._hash_lock:
            yield
            self._copied[segment.index] = 0
            if self._position > segment.start:
                self._reset_hash()

    def finish(
        self, plan: Plan, expected_size: int | None, digests: tuple[tuple[str, str], ...]
    ) -> tuple[int, dict[str, str]]:
        """Complete, check and install the file from ``plan``'s finished parts; return its size and hex digests.

        Raises VerifyError (the final path untouched) on a mismatch.
        """
        self.pause()
        self._drain(plan.segments)
        size = self._position
        for wanted in (plan.size, expected_size):
            if wanted is not None and size != wanted:
                raise VerifyError(f"size mismatch: got {size} of {wanted} bytes")
        got = {algorithm: h.hexdigest() for algorithm, h in self._hashes.items()}
        for algorithm, expected in digests:
            if got[algorithm] != expected:
                raise DigestMismatch(algorithm, expected, got[algorithm])
        if len(plan.segments) != 1:
            out = self._parts.temp()
            copied = sum(self._copied.get(s.index, 0) for s in plan.segments)
            if copied != size or os.fstat(out).st_size != size:  # the kernel's copy is trusted, not past its length
                raise VerifyError(f"size mismatch: assembled {copied} of {size} bytes")
        self._parts.install(plan.segments)
        return size, got

    def close(self) -> None:
        """Stop following; the parts' owner removes a temp that was not installed."""
        self.pause()

    def _follow(self, round_: Callable[[Sequence[Segment]], int], table: Callable[[], Sequence[Segment]]) -> None:
        try:
            while not self._stopping.is_set():
                if not round_(table()):
                    self._stopping.wait(_POLL)
        except OSError:
            return  # a full disk, say: ``finish`` meets it again and reports it

    def _drain(self, segments: Sequence[Segment]) -> None:
        """Copy and hash whatever the followers left, the copy on a thread of its own as while following (none
        for a file in one part: nothing to copy, and no thread started for each of many small files)."""
        failed: list[OSError] = []

        def copy() -> None:
            try:
                while self._copy_all(segments):
                    pass
            except OSError as exc:
                failed.append(exc)

        copier = threading.Thread(target=copy, name="assembly-copy", daemon=True) if len(segments) != 1 else None
        if copier is not None:
            copier.start()
        try:
            while self._hash(segments):
                pass
        finally:
            if copier is not None:
                copier.join()
        if failed:
            raise failed[0]

    def _copy_all(self, segments: Sequence[Segment]) -> int:
        """One round over the parts of a file in several: copy what is new into the temp. Bytes copied."""
        if len(segments) == 1:
            return 0  # one part is the file: nothing to copy
        with self._copy_lock:
            out = self._parts.temp()
            return sum(self._copy(segment, out) for segment in segments)

    def _copy(self, segment: Segment, out: int) -> int:
        done = before = self._copied.get(segment.index, 0)
        part = self._parts.fd(segment.index)
        have = self._parts.length(segment.index)
        if segment.length is not None:
            have = min(have, segment.length)  # a stolen range's end moved closer: the rest is another part's
        while done < have and (n := _copy_range(part, out, have - done, done, segment.start + done)):
            done += n
        self._copied[segment.index] = done
        self._writeback("copy", out, done - before, 0)
        return done - before

    def _hash(self, segments: Sequence[Segment]) -> int:
        """Hash what now continues the prefix; bytes hashed."""
        with self._hash_lock:
            return self._hash_locked(segments)

    def _hash_locked(self, segments: Sequence[Segment]) -> int:
        moved = 0
        while segment := _at(segments, self._position):
            offset = self._position - segment.start
            n = _hash_range(
                self._hashes.values(), self._parts.fd(segment.index), offset, self._parts.length(segment.index)
            )
            if n <= 0:
                break
            self._position += n
            moved += n
        if len(segments) == 1 and moved:  # one part is the file: its hashed prefix may go to disk
            self._writeback("hash", self._parts.fd(segments[0].index), moved, self._position)
        return moved

    def _writeback(self, mover: str, fd: int, moved: int, length: int) -> None:
        """Every so often, start writing the file's dirty pages to disk, so the final fsync finds little to do.

        POSIX_FADV_DONTNEED starts writeback of the range's dirty pages without waiting for it (Linux) and drops
        only pages already clean: none is lost, and none is read again (the hash is past them).
        """
        self._unsynced[mover] += moved
        if self._unsynced[mover] >= _WRITEBACK_EVERY and hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fd, 0, length, os.POSIX_FADV_DONTNEED)
            self._unsynced[mover] = 0

    def _reset_hash(self) -> None:
        self._hashes = {a: constructor(a)() for a in self._algorithms}
        self._position = 0


def _at(segments: Sequence[Segment], position: int) -> Segment | None:
    """The segment holding byte ``position``, if any."""
    for segment in segments:
        if segment.start <= position and (segment.end is None or position < segment.end):
            return segment
    return None


def _hash_range(hashes: Iterable[hashlib._Hash], fd: int, offset: int, length: int) -> int:
    """Feed ``hashes`` the bytes of ``fd`` from ``offset`` on, up to ``length`` and at most _WINDOW of them;
    the bytes hashed.

    Straight from the page cache through a mapping, not read into a buffer first: one copy of every byte
    fewer, and one GIL acquisition per window instead of two per MiB. Behind 16 receiving threads a thread
    that asked for the GIL waited out the switch interval (5 ms) nearly every time, and a hash reading 1 MiB
    at a time advanced at 128 MiB/s. Where a mapping is not safe (mountinfo.py) or is refused, the bytes are
    read through the thread's buffer.
    """
    count = min(_WINDOW, length - offset)
    if count <= 0:
        return 0
    if mountinfo.mappable(fd):
        base = offset - offset % mmap.ALLOCATIONGRANULARITY
        try:
            mapped = mmap.mmap(fd, offset + count - base, access=mmap.ACCESS_READ, offset=base)
        except (OSError, ValueError):  # ValueError: the file is shorter than the mapping (cut by someone else)
            mountinfo.refused(fd)
        else:
            with mapped, memoryview(mapped) as whole, whole[offset - base :] as window:
                for h in hashes:
                    h.update(window)
            return count
    view = buffer.get()
    n = os.preadv(fd, [view[: min(count, BUFFER)]], offset)
    for h in hashes:
        h.update(view[:n])
    return n


def _copy_range(src: int, dst: int, count: int, src_offset: int, dst_offset: int) -> int:
    """Copy up to ``count`` bytes between descriptors at the given offsets; the bytes copied.

    Parts and temp file share a directory, so on Linux (5.3+ copies within any one file system) the kernel
    does it; elsewhere the bytes pass through a buffer. A failure is the file system's to report.
    """
    if hasattr(os, "copy_file_range"):
        return os.copy_file_range(src, dst, count, src_offset, dst_offset)
    data = os.pread(src, min(count, BUFFER), src_offset)
    return os.pwrite(dst, data, dst_offset)
