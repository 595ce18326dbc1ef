"""What a run writes besides the mirror never lands on the mirror (parent/outputs.py), through the real CLI.

Found by hand: ``--changes mirror/.bulkdl/state.db`` emptied the state (the next run found every file new and
prune forgot what bulkdl had installed), and ``--trace``/``--report``/``--changes`` onto a mirror file replaced
it, with exit 0. Each is refused with exit 2 before any request, and nothing on disk changes.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bulkdl.cli import EXIT_USAGE

from .conftest import cli_env, write_manifest
from .httpserver import FaultServer, content

_OPTIONS = ("--report", "--changes", "--trace", "--checksums-file")
_TARGETS = {
    "a file of the mirror": ("sub/kept.bin", "would overwrite a file of the mirror"),
    "the state": (".bulkdl/state.db", "is in .bulkdl/, which holds the state of the mirror"),
    "a directory of the mirror": ("sub", "is a directory of the mirror"),
    "a part's name": ("sub/kept.bin.part0", "cannot be in the mirror ("),
}


def _bulkdl(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "bulkdl", *map(str, args)]
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, env=cli_env(), stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("option", _OPTIONS)
@pytest.mark.parametrize("target", list(_TARGETS))
def test_an_output_onto_the_mirror_is_refused_before_anything_is_fetched(
    builtin: FaultServer, tmp_path: Path, option: str, target: str
) -> None:
    manifest = write_manifest(
        tmp_path, [{"url": builtin.add("kept.bin", content("kept", 500)), "path": "sub/kept.bin"}]
    )
    assert _bulkdl("run", manifest, cwd=tmp_path).returncode == 0
    mirror = tmp_path / "mirror"
    before = {p: p.read_bytes() for p in mirror.rglob("*") if p.is_file()}
    requests = len(builtin.requests())
    relative, said = _TARGETS[target]
    done = _bulkdl("run", manifest, option, mirror / relative, cwd=tmp_path)
    assert done.returncode == EXIT_USAGE, done.stdout + done.stderr
    assert said in done.stderr and "choose another path" in done.stderr, done.stderr
    assert {p: p.read_bytes() for p in mirror.rglob("*") if p.is_file()} == before, "the mirror changed"
    assert len(builtin.requests()) == requests, "a request was sent"


def test_an_output_elsewhere_in_the_mirror_is_fine(builtin: FaultServer, tmp_path: Path) -> None:
    # A trace or checksums file is meant to live in the mirror: only the mirror's own files are refused.
    manifest = write_manifest(
        tmp_path, [{"url": builtin.add("kept.bin", content("kept", 500)), "path": "sub/kept.bin"}]
    )
    mirror = tmp_path / "mirror"
    done = _bulkdl(
        "run", manifest, "--trace", mirror / "project/trace/me", "--changes", mirror / "CHANGES", cwd=tmp_path
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (mirror / "project/trace/me").exists() and (mirror / "CHANGES").read_text() == "+ sub/kept.bin\n"
