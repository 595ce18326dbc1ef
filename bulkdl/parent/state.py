"""What earlier runs left in a destination: ``<dest>/.bulkdl/state.db`` (SQLite, WAL, parent-only writes).

One row per completed file, keyed by its path below dest: where it came from, the server's validators, its
digests, and the size and mtime it had on disk when it was completed. A later run trusts a row only while
the file on disk still has that size and mtime.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import durable
from ..errors import BulkdlError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    size INTEGER NOT NULL,
    etag TEXT,
    last_modified TEXT,
    sha256 TEXT NOT NULL,
    digests TEXT NOT NULL,        -- JSON object {algorithm: hex}, sha256 included
    local_size INTEGER NOT NULL,
    local_mtime_ns INTEGER NOT NULL,
    checked_at REAL NOT NULL      -- unix time of the last download or successful check
)
"""
# The --changes lines of files whose rows were committed but that no changes file has listed yet: a run
# killed before it wrote its file told no downstream of what it installed (changes.py).
_UNREPORTED = "CREATE TABLE IF NOT EXISTS unreported (path TEXT PRIMARY KEY, mark TEXT NOT NULL)"
# A file a killed run added and a later killed run updated is still new to a downstream that heard of neither.
_NOTE_CHANGE = """INSERT INTO unreported VALUES (?, ?) ON CONFLICT (path) DO UPDATE SET mark =
    CASE WHEN unreported.mark = '+' AND excluded.mark = 'M' THEN '+' ELSE excluded.mark END"""
_FORGET_CHANGE = "DELETE FROM unreported WHERE path = ?"
_COMMIT_SECONDS = 0.5
_INT64 = range(-(2**63), 2**63)  # what an SQLite INTEGER holds


@dataclass(frozen=True, slots=True)
class Row:
    path: str
    url: str
    size: int
    etag: str | None
    last_modified: str | None
    sha256: str
    digests: tuple[tuple[str, str], ...]
    local_size: int
    local_mtime_ns: int
    checked_at: float


def _row(r: tuple[Any, ...]) -> Row:
    path, url, size, etag, last_modified, sha256, digests, local_size, local_mtime_ns, checked_at = r
    # Most rows hold SHA-256 alone, as put() wrote it: that needs no JSON parser, and its digest is the very
    # string of the sha256 column (100,000 rows: 16 MiB less, and 20 ms).
    if digests == f'{{"sha256": "{sha256}"}}':
        pairs: tuple[tuple[str, str], ...] = (("sha256", sha256),)
    else:
        pairs = tuple(json.loads(digests).items())
    if local_size == size:
        local_size = size  # one int object for both: 28 bytes a row
    return Row(path, url, size, etag, last_modified, sha256, pairs, local_size, local_mtime_ns, checked_at)


def _stored(row: Row) -> tuple[Any, ...]:
    """``row`` as the INSERT's values. It is built once per file on every run (a row a file, 20,000 a re-run),
    so the common digests are written as _row reads them, without the JSON encoder."""
    if row.digests == (("sha256", row.sha256),) and row.sha256.isascii() and row.sha256.isalnum():
        digests = f'{{"sha256": "{row.sha256}"}}'  # what json.dumps writes for it
    else:
        digests = json.dumps(dict(row.digests))
    return (
        row.path,
        row.url,
        row.size,
        row.etag,
        row.last_modified,
        row.sha256,
        digests,
        row.local_size,
        row.local_mtime_ns,
        row.checked_at,
    )


_FIELDS = tuple(Row.__dataclass_fields__)
_SELECT = f"SELECT {', '.join(_FIELDS)} FROM files"
_INSERT = f"INSERT OR REPLACE INTO files VALUES ({', '.join('?' * len(_FIELDS))})"


class UnreadableState(BulkdlError):
    """The state cannot be read (corrupt, most likely); a read-only command goes on without it."""


def read_rows(dest: Path) -> dict[str, Row]:
    """The rows, read-only: for --dry-run and verify, which must not create or change anything."""
    path = dest / ".bulkdl" / "state.db"
    if not path.exists():
        return {}
    # A finished run checkpoints its WAL into the main file and removes it, so that file alone holds every
    # row; immutable reads it and creates nothing (even a read-only open of a WAL database creates -wal and
    # -shm files). A -wal left beside it means a run is going on or was killed before its checkpoint: its
    # rows are in there, and only a reader that takes part in the WAL sees them (or sees the table at all).
    wal = path.with_name(path.name + "-wal")
    mode = "mode=ro" if wal.exists() else "mode=ro&immutable=1"
    try:
        with contextlib.closing(sqlite3.connect(f"{path.absolute().as_uri()}?{mode}", uri=True)) as db:
            return {r[0]: _row(r) for r in db.execute(_SELECT)}
    except sqlite3.Error as exc:  # corrupt, or not ours: a reader may not move it aside, only say so
        raise UnreadableState(f"cannot read the state {path} ({exc}); treating it as empty") from None


class State:
    """The destination's state database; rows are written as results arrive.

    Commits are batched by time, not by count: the run calls ``commit_if_due`` from its poll loop, so a row
    is on disk within about half a second even when no later result comes to carry it (a kill -9 then
    loses at most that half second: the next run finds those files on disk with no row, and hashes each
    against the manifest's digests or, without one, downloads it again in full; never a wrong skip).

    Workers fsync each file before renaming it into place but leave its directory to this class: before a
    commit, every directory named by the rows it carries is fsynced once. So the state never records a file
    whose rename a power cut could still undo, and 2,000 small files cost a few directory fsyncs, not 2,000.

    Writes wait, in order, until the commit, which hands SQLite each run of like statements at once
    (``executemany``) after those fsyncs: a statement per file cost 7 µs of the parent's time, 0.14 s of a
    20,000-file re-run.
    """

    def __init__(self, dest: Path) -> None:
        path = dest / ".bulkdl" / "state.db"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.set_aside: str | None = None  # what became of a corrupt state, to tell the user once
        try:
            self._db = _open(path)
        except sqlite3.DatabaseError as exc:
            # Only corruption (SQLITE_CORRUPT, SQLITE_NOTADB) is a bare DatabaseError; a locked, unreadable or
            # full database is an OperationalError and stays the caller's error.
            if type(exc) is not sqlite3.DatabaseError:
                raise
            # The state is a record, not the mirror: losing it costs one run the checks a first run makes
            # (files on disk are hashed against the manifest's digests, or without them downloaded again and
            # replaced only once verified), so keep it for a post mortem and start afresh rather than refuse
            # every run from now on.
            aside = _move_aside(path)
            self.set_aside = f"the state {path} is corrupt ({exc}); moved it to {aside.name}, starting afresh"
            self._db = _open(path)
        self._last_commit = time.monotonic()
        self._dest = dest
        self._renamed_in: set[Path] = set()  # directories of rows not yet committed
        self._pending: list[tuple[str, list[tuple[Any, ...]]]] = []  # (statement, its values), in order
        self._changes: list[tuple[str, str]] = []  # (path, --changes mark) for the next commit, after the rows
        self.problem: str | None = None  # why the state stopped being recorded, if it did
        self.unrecorded: list[str] = []  # "path (why)" for each row that could not be stored; the others were

    def rows(self) -> dict[str, Row]:
        try:
            return {r[0]: _row(r) for r in self._db.execute(_SELECT)}
        except sqlite3.Error as exc:  # damage quick_check missed: decide as a first run would, record nothing
            self.problem = self.problem or str(exc)
            return {}

    def put(self, row: Row, renamed: bool = True) -> None:
        """Queue ``row``; ``renamed`` says a file was just renamed into place, so its directory is fsynced first
        (a 304 renames nothing: fsyncing for it cost a re-run of 20,000 files 20,000 fsyncs, 3.6 s)."""
        values = _stored(row)
        problem = _unstorable(values)
        if problem is not None:
            # One file's odd value (a server dating its file after 2262 gives an mtime in ns past 2**63) costs
            # that file its row, never the run or the other rows. Its old row goes too: it describes a file
            # that is no longer there, so the next run downloads this one again.
            self.unrecorded.append(f"{row.path} ({problem})")
            self._queue("DELETE FROM files WHERE path = ?", [(row.path,)])
            return
        if renamed:
            self._renamed_in.add(self._dest.joinpath(*row.path.split("/")).parent)
        self._queue(_INSERT, [values])

    def forget(self, row: Row) -> None:
        """Drop ``row``, so that the next run fetches its file; a row a run has rewritten since is kept."""
        self._queue(
            "DELETE FROM files WHERE path = ? AND sha256 = ? AND local_size = ? AND local_mtime_ns = ?",
            [(row.path, row.sha256, row.local_size, row.local_mtime_ns)],
        )

    def note_change(self, path: str, mark: str) -> None:
        """Keep ``path``'s --changes line until a changes file has listed it (``reported``); it is committed
        with the rows queued before it, so a kill -9 cannot leave a recorded change unlisted."""
        self._changes.append((path, mark))

    def drop_change(self, path: str) -> None:
        """``path`` is gone from the mirror in a run that lists no changes: a mark kept for it would list as new
        a file that no longer exists."""
        self._queue(_FORGET_CHANGE, [(path,)])

    def unreported(self) -> dict[str, str]:
        """The --changes lines committed and not yet listed, by path: this run's, and a killed run's."""
        try:
            return dict(self._db.execute("SELECT path, mark FROM unreported"))
        except sqlite3.Error as exc:
            self.problem = self.problem or str(exc)
            return {}

    def reported(self, paths: Iterable[str]) -> None:
        """A changes file listing ``paths`` is in place: they are forgotten, at once."""
        self._queue(_FORGET_CHANGE, [(path,) for path in paths])
        self.commit()

    def checked(self, paths: Iterable[str]) -> None:
        """The rows of ``paths`` were proven current now."""
        now = time.time()
        self._queue("UPDATE files SET checked_at = ? WHERE path = ?", [(now, path) for path in paths])

    def _queue(self, sql: str, values: list[tuple[Any, ...]]) -> None:
        if self._pending and self._pending[-1][0] == sql:
            self._pending[-1][1].extend(values)
        else:
            self._pending.append((sql, values))

    def commit_if_due(self) -> None:
        if time.monotonic() - self._last_commit >= _COMMIT_SECONDS:
            self.commit()
            self._last_commit = time.monotonic()

    def commit(self) -> None:
        """Make the renames of the rows so far durable, then the rows themselves.

        A directory leaves the set only once synced, after the directories above it: an interrupt (Ctrl-C
        lands anywhere) in the middle of this loop leaves the rest for the next commit, which must not record
        rows whose renames it skipped.
        """
        for directory in sorted(self._with_ancestors(), key=lambda d: len(d.parts)):
            try:
                durable.fsync_dir(directory)
            except OSError as exc:  # a failing disk, or a directory removed under us: record nothing more
                self.problem = self.problem or f"could not sync {directory}: {exc.strerror or exc}"
            self._renamed_in.discard(directory)
        if self._changes:  # kept apart until now so that the rows' statements stay in runs of their own
            self._queue(_NOTE_CHANGE, self._changes)
            self._changes = []
        while self._pending:  # each leaves only once written: an interrupt leaves it for the next commit
            self._write(*self._pending[0])
            del self._pending[0]
        self._write(None, [])

    def _with_ancestors(self) -> set[Path]:
        """The directories renamed into, and each one between them and dest: a worker may have created them
        for this run, and a new directory's own name is durable only once its parent is fsynced."""
        directories = set(self._renamed_in)
        for directory in self._renamed_in:
            directories.update(itertools.takewhile(lambda d: d != self._dest.parent, directory.parents))
        return directories

    def _write(self, sql: str | None, values: list[tuple[Any, ...]]) -> None:
        """Write, or commit when ``sql`` is None. The state only saves work: a failure to record it (a full
        disk) is remembered in ``problem`` and later writes are skipped, but the run goes on."""
        if self.problem is not None:
            return
        try:
            if sql is None:
                self._db.commit()
            else:
                self._db.executemany(sql, values)
        except (sqlite3.Error, OverflowError, ValueError) as exc:  # the last two: a value _unstorable missed
            self.problem = str(exc)

    def close(self) -> None:
        self.commit()
        self._db.close()

    def __enter__(self) -> State:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _open(path: Path) -> sqlite3.Connection:
    """Connect, check the database's structure, and make sure it has the table; closed again on any error."""
    db = sqlite3.connect(path)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # WAL keeps the database consistent; a lost tail costs a re-check
        # A damaged page can hide until a write needs it; quick_check reads every page once (milliseconds
        # for thousands of rows) so that corruption is found here, where it can still be set aside.
        found = [line for (line,) in db.execute("PRAGMA quick_check")]
        if found != ["ok"]:
            raise sqlite3.DatabaseError(" ".join(found[0].split()))  # one line: it spans several
        db.execute(_SCHEMA)
        db.execute(_UNREPORTED)
        db.commit()
    except BaseException:
        db.close()
        raise
    return db


def _move_aside(path: Path) -> Path:
    """Rename a corrupt database, with its -wal and -shm, to ``state.db.corrupt-<UTC time>``."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    for n in itertools.count(1):
        if not aside.exists():
            break
        aside = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    for suffix in ("-wal", "-shm", ""):  # the main file last: while it is there, so is what belongs to it
        with contextlib.suppress(FileNotFoundError):
            os.rename(f"{path}{suffix}", f"{aside}{suffix}")
    return aside


def _unstorable(values: tuple[Any, ...]) -> str | None:
    """Why SQLite would refuse one of a row's values, if it would (it raises OverflowError or ValueError)."""
    for name, value in zip(_FIELDS, values, strict=True):
        if isinstance(value, int) and value not in _INT64:
            return f"{name} {value} does not fit in a 64-bit integer"
        if isinstance(value, str) and not value.isascii():  # only a non-ASCII string can hold a lone surrogate
            try:
                value.encode()
            except UnicodeEncodeError as exc:
                return f"{name} is not valid text: {exc.reason}"
    return None
