"""Taking away, for prune, files an earlier run installed: only the very file the state recorded, only below dest.

A path is walked from dest one directory at a time, each opened relative to the one before and without
following a symlink (``O_NOFOLLOW``), so no symlink in the tree, planted or swapped in, can lead a removal
out of dest or onto another of its files. A file is taken only while it is a regular file with the size and
mtime its state row recorded; anything else at that path is not bulkdl's any more and is left. With a backup
directory the file is moved there, below the same relative path (rclone's ``--backup-dir``), instead of being
deleted. Directories the removals empty are removed too, up to but never dest; every directory changed is
fsynced before the state forgets the rows.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import shutil
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from .. import durable
from ..worker import parts
from .state import Row

REMOVED = "removed"
ALREADY_GONE = "already gone"  # nothing at the path, or a file where one of its directories was
LEFT = "left"  # something else is there now: not bulkdl's to take
FAILED = "failed"  # bulkdl's file, but the system refused (permissions, a read-only disk)
_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY
FileId = tuple[int, int]  # (st_dev, st_ino): which file a path leads to
_LISTED = "it is also a file the manifest lists, under another path (a symlink or another spelling)"


@dataclass(frozen=True, slots=True)
class Outcome:
    row: Row
    kind: str
    detail: str = ""  # why it was left or failed, or where it was moved


class _Through(Exception):
    """A directory on the way is a symlink (or not a directory at all)."""


def inspect(dest: Path, row: Row, listed: set[FileId]) -> Outcome:
    """What ``remove`` would do with ``row``'s file, changing nothing (``--dry-run``)."""
    try:
        with _parent(dest, row.path) as fd:
            return _judge(fd, row, listed)
    except FileNotFoundError:
        return Outcome(row, ALREADY_GONE)
    except _Through as exc:
        return Outcome(row, LEFT, str(exc))
    except OSError as exc:
        return Outcome(row, FAILED, f"cannot look at it: {exc.strerror or exc}")


def remove(dest: Path, rows: Sequence[Row], backup: Path | None, listed: set[FileId]) -> list[Outcome]:
    """Take the file of each of ``rows`` away (into ``backup`` if given), then the directories left empty;
    never a file in ``listed``, the files the manifest's paths lead to."""
    outcomes: list[Outcome] = []
    emptied: set[str] = set()
    for directory, group in itertools.groupby(sorted(rows, key=lambda r: r.path), key=_directory_of):
        done = _remove_in(dest, list(group), backup, listed)
        outcomes += done
        if directory and any(o.kind == REMOVED for o in done):
            emptied.add(directory)
    for outcome in outcomes:
        if outcome.kind in (REMOVED, ALREADY_GONE):
            _discard_download(dest, outcome.row.path)
    _remove_empty(dest, emptied)
    return outcomes


def _discard_download(dest: Path, path: str) -> None:
    """The parts and sidecar an interrupted update of the file left: nothing will ever resume them now, and they
    would keep their directory from being emptied."""
    final = dest.joinpath(*path.split("/"))
    # Two lookups first: discard() lists the directory, once per file, which a big prune in a big directory
    # could not afford. Parts lie only beside their sidecar, or as part 0 alone (parts.py: no sidecar, no split).
    if not (os.path.lexists(parts.sidecar_path(final)) or os.path.lexists(parts.part_path(final, 0))):
        return
    with contextlib.suppress(OSError):  # litter: failing to remove it costs only the directory staying
        parts.Parts(final).discard()


def _directory_of(row: Row) -> str:
    return row.path.rpartition("/")[0]


def _remove_in(dest: Path, rows: list[Row], backup: Path | None, listed: set[FileId]) -> list[Outcome]:
    """The rows of one directory: it is opened once, and fsynced once after its removals."""
    try:
        with _parent(dest, rows[0].path) as fd:
            outcomes = [_take(fd, row, backup, listed) for row in rows]
            if any(o.kind == REMOVED for o in outcomes):
                os.fsync(fd)
            return outcomes
    except FileNotFoundError:
        return [Outcome(row, ALREADY_GONE) for row in rows]
    except _Through as exc:
        return [Outcome(row, LEFT, str(exc)) for row in rows]
    except OSError as exc:
        return [Outcome(row, FAILED, f"cannot open its directory: {exc.strerror or exc}") for row in rows]


def _take(fd: int, row: Row, backup: Path | None, listed: set[FileId]) -> Outcome:
    judged = _judge(fd, row, listed)
    if judged.kind != REMOVED:
        return judged
    name = row.path.rpartition("/")[2]
    try:
        if backup is None:
            os.unlink(name, dir_fd=fd)
            return judged
        target = backup.joinpath(*row.path.split("/"))
        _move(fd, name, target)
    except OSError as exc:
        return Outcome(row, FAILED, f"could not {'move' if backup else 'remove'} it: {exc.strerror or exc}")
    return Outcome(row, REMOVED, f"moved to {target}")


def _judge(fd: int, row: Row, listed: set[FileId]) -> Outcome:
    """REMOVED if the file is the one the state recorded, else why not."""
    try:
        found = os.stat(row.path.rpartition("/")[2], dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return Outcome(row, ALREADY_GONE)
    except OSError as exc:
        return Outcome(row, FAILED, f"cannot look at it: {exc.strerror or exc}")
    if not stat.S_ISREG(found.st_mode):
        return Outcome(row, LEFT, "it is no longer a regular file")
    if (found.st_size, found.st_mtime_ns) != (row.local_size, row.local_mtime_ns):
        return Outcome(row, LEFT, "it changed since bulkdl wrote it (size or mtime differ)")
    if (found.st_dev, found.st_ino) in listed:
        return Outcome(row, LEFT, _LISTED)
    return Outcome(row, REMOVED)


def _move(fd: int, name: str, target: Path) -> None:
    _make_durably(target.parent)
    try:
        os.rename(name, target, src_dir_fd=fd)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        _copy(fd, name, target)  # another file system: copy durably, and only then let the original go
        os.unlink(name, dir_fd=fd)
        return
    durable.fsync_dir(target.parent)


def _make_durably(directory: Path) -> None:
    """``mkdir -p``, each directory it creates fsynced into its parent: a power cut must not lose the path to a
    backup whose original is already gone."""
    missing = []
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    for new in reversed(missing):
        new.mkdir(exist_ok=True)
        durable.fsync_dir(new.parent)


def _copy(fd: int, name: str, target: Path) -> None:
    source = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=fd)
    with os.fdopen(source, "rb") as src, durable.replacing(target) as out:
        shutil.copyfileobj(src, out)
        out.flush()
        found = os.fstat(source)
        os.utime(out.fileno(), ns=(found.st_atime_ns, found.st_mtime_ns))  # a backup keeps its date, as a move does


def _remove_empty(dest: Path, directories: set[str]) -> None:
    """Remove each directory that is empty now, and each above it that this leaves empty; never dest.

    Every candidate is tried once, deepest first, so a directory is tried only after all its candidate
    children (``a/b`` and ``a/c`` before ``a``): trying ``a`` when ``a/b`` went would find ``a/c`` still there.
    """
    candidates = {above for directory in directories for above in _and_above(directory)}
    for directory in sorted(candidates, key=lambda d: d.count("/"), reverse=True):
        parent, _, name = directory.rpartition("/")
        try:
            with _directory(dest, parent) as fd:
                os.rmdir(name, dir_fd=fd)  # refuses a directory that is not empty, or a symlink
                os.fsync(fd)
        except OSError:  # not empty (someone else's files, or parts), or gone
            continue


def _and_above(directory: str) -> Iterator[str]:
    """``a/b/c``, ``a/b``, ``a``."""
    while directory:
        yield directory
        directory = directory.rpartition("/")[0]


@contextlib.contextmanager
def _parent(dest: Path, path: str) -> Iterator[int]:
    with _directory(dest, path.rpartition("/")[0]) as fd:
        yield fd


@contextlib.contextmanager
def _directory(dest: Path, directory: str) -> Iterator[int]:
    """An fd of ``dest/directory``, every step below dest opened without following a symlink. dest itself may
    be a symlink: the user chose it."""
    fd = os.open(dest, _DIRECTORY)
    try:
        parts = directory.split("/") if directory else []
        for depth, part in enumerate(parts):
            try:
                step = os.open(part, _DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                # Linux answers O_NOFOLLOW on a symlink with ENOTDIR when O_DIRECTORY is set too, ELOOP otherwise
                if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                    _not_a_directory(fd, part, "/".join(parts[: depth + 1]))
                raise
            os.close(fd)
            fd = step
        yield fd
    finally:
        os.close(fd)


def _not_a_directory(fd: int, part: str, shown: str) -> NoReturn:
    """Raise what ``part`` (``shown`` below dest), which could not be opened as a directory, is."""
    if stat.S_ISLNK(os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode):
        raise _Through(f"{shown} is a symlink; bulkdl does not remove through one")
    raise FileNotFoundError(errno.ENOENT, "a file stands where its directory was", shown)
