"""The mirror's checksums file (``checksums_file:`` or ``--checksums-file``), for ``sha256sum -c``.

Written by the parent at the end of every run, after the state's commit and while the destination is still
locked, also after failures: it lists every file of the manifest that is in place with its SHA-256, so
``cd DEST && sha256sum -c SHA256SUMS`` passes on the mirror as it stands (what rsync users get by
publishing upstream's own SHA256SUMS). A file whose download failed is listed when its earlier copy is
still there as the state recorded it. Paths are relative to dest, sorted, in GNU's format and escaping
(sums.py); the file is replaced atomically, so a reader sees the previous list or the new one.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path

from .. import durable
from ..sums import format_line
from ..values import FileResult
from .manifest import Manifest
from .state import Row


def write(loaded: Manifest, results: Iterable[FileResult], earlier: Mapping[str, Row]) -> str | None:
    """Replace the checksums file, if the manifest asks for one; say why it could not be, if it could not."""
    if loaded.checksums_file is None:
        return None
    text = "".join(format_line(digest, name) for name, digest in sorted(in_place(loaded.dest, results, earlier)))
    try:
        durable.write_bytes(loaded.checksums_file, text.encode())
    except OSError as exc:  # a disk that filled, a directory removed since the check: the files are done
        return f"could not write the checksums file {loaded.checksums_file}: {exc.strerror or exc}"
    return None


def in_place(dest: Path, results: Iterable[FileResult], earlier: Mapping[str, Row]) -> Iterable[tuple[str, str]]:
    """(name, SHA-256) of each file the run left in place: what it downloaded or checked, and the earlier
    copy of a file it could not update, when the state knew it and the disk still holds it unchanged."""
    for result in results:
        if result.status.present and result.sha256 is not None:
            yield result.name, result.sha256
        elif (row := earlier.get(result.name)) is not None and _unchanged(dest / result.name, row):
            yield result.name, row.sha256


def _unchanged(path: Path, row: Row) -> bool:
    try:
        found = os.lstat(path)  # the file itself: a symlink to a copy elsewhere is not the mirror's
    except OSError:
        return False
    return stat.S_ISREG(found.st_mode) and (found.st_size, found.st_mtime_ns) == (row.local_size, row.local_mtime_ns)
