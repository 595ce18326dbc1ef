"""What a run writes besides the mirror (the report, the changes file, the trace, the checksums file) is
never one of the mirror's own files.

Their paths may point anywhere, the mirror included (a trace or a checksums file is meant to live there),
but one that lands in dest must not be a file or directory of the manifest, a name bulkdl uses for partial
files, or anything in ``.bulkdl/`` (``--changes mirror/.bulkdl/state.db`` emptied the state: every file of
the next run was "new", and prune no longer knew what bulkdl had installed), and must not go through a
symlink out of dest. Checked before anything is fetched, with the writability of the path.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import UnsafeOutput, UsageError
from ..paths import check_relpath, outside
from .manifest import Manifest
from .report.jsonreport import check_writable

_STATE = ".bulkdl"


def check(loaded: Manifest, target: Path | None, what: str) -> None:
    """Refuse ``target`` (``what`` names it: "the report") if it would overwrite the mirror or the state, or
    cannot be written."""
    if target is None:
        return
    target, dest = Path(os.path.abspath(target)), Path(os.path.abspath(loaded.dest))
    if target == dest or dest in target.parents:
        problem = _in_mirror(loaded, target.relative_to(dest).as_posix())
        if problem is not None:
            raise UnsafeOutput(f"{what} {target} {problem}; choose another path")
        escape = outside(dest, target.parent)
        if escape is not None:  # a symlinked directory in the mirror: bulkdl writes through none
            raise UsageError(f"cannot write {what} {target}: {escape}")
    try:
        check_writable(target)
    except OSError as exc:
        raise UsageError(f"cannot write {what} {target}: {exc.strerror or exc}") from None


def _in_mirror(loaded: Manifest, relative: str) -> str | None:
    if relative.split("/", 1)[0] == _STATE:
        return f"is in {_STATE}/, which holds the state of the mirror"
    try:
        name = check_relpath(relative)
    except ValueError as exc:
        return f"cannot be in the mirror ({exc})"
    below = name + "/"
    for job in loaded.jobs:
        if job.name == name:
            return "would overwrite a file of the mirror"
        if job.name.startswith(below):
            return "is a directory of the mirror"
    return None
