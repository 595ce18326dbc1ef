"""decide_all: the disk looked at directory by directory, the decisions exactly those of a stat per file.

The reference is the lookup decide_all replaced: the file's stat and its sidecar's ``exists()``, one file at a
time in the manifest's order. Directories holding at least ``_LIST_FROM`` of the manifest's files are listed
once; smaller ones are looked up name by name: both ways are tested.
"""

from __future__ import annotations

import hashlib
import os
import random
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bulkdl.parent import manifest, run
from bulkdl.parent.decide import DOWNLOAD, RESUME, SKIP, Decision, decide
from bulkdl.parent.manifest import Manifest
from bulkdl.parent.state import Row
from bulkdl.worker import parts

from .conftest import write_manifest

LISTED = run._LIST_FROM  # files in one directory from which it is listed
DATA = b"x" * 100
SHA = hashlib.sha256(DATA).hexdigest()


def _reference(loaded: Manifest, rows: dict[str, Row], force: bool) -> list[Decision]:
    def stat(path: Path) -> os.stat_result | None:
        try:
            return path.lstat()
        except (FileNotFoundError, NotADirectoryError):
            return None

    return [
        decide(job, rows.get(job.name), stat(job.path), parts.sidecar_path(job.path).exists(), force)
        for job in loaded.jobs
    ]


def _load(root: Path, names: list[str]) -> Manifest:
    entries = [{"url": f"http://127.0.0.1:9/{name}", "path": name, "sha256": SHA} for name in names]
    return manifest.load(write_manifest(root, entries))


def _put(path: Path, data: bytes = DATA) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _rows(loaded: Manifest) -> dict[str, Row]:
    """A row for every file on disk, as a run that completed it would have left."""
    rows = {}
    for job in loaded.jobs:
        if job.path.is_file():
            s = job.path.stat()
            url = f"http://127.0.0.1:9/{job.name}"
            rows[job.name] = Row(
                job.name, url, s.st_size, None, None, SHA, (("sha256", SHA),), s.st_size, s.st_mtime_ns, 0
            )
    return rows


def _decided(loaded: Manifest) -> dict[str, str]:
    rows = _rows(loaded)
    decisions = run.decide_all(loaded, rows, False)
    assert decisions == _reference(loaded, rows, False)
    return {job.name: d.action for job, d in zip(loaded.jobs, decisions, strict=True)}


@pytest.mark.parametrize("count", [1, LISTED], ids=["looked up", "listed"])
def test_a_sidecar_found_through_the_listing_resumes(tmp_path: Path, count: int) -> None:
    names = [f"d/f{i}.bin" for i in range(count)]
    for name in names:
        _put(tmp_path / "mirror" / name)
    _put(tmp_path / "mirror/d/f0.bin.bulkdl", b"{}")
    (tmp_path / "mirror/d/f0.bin.part0").write_bytes(b"")
    decided = _decided(_load(tmp_path, names))
    assert decided == {"d/f0.bin": RESUME} | {name: SKIP for name in names[1:]}


@pytest.mark.parametrize("count", [1, LISTED], ids=["looked up", "listed"])
def test_a_sidecar_that_is_a_dangling_symlink_is_none(tmp_path: Path, count: int) -> None:
    names = [f"d/f{i}.bin" for i in range(count)]
    for name in names:
        _put(tmp_path / "mirror" / name)
    (tmp_path / "mirror/d/f0.bin.bulkdl").symlink_to(tmp_path / "nowhere")
    assert _decided(_load(tmp_path, names)) == dict.fromkeys(names, SKIP)


@pytest.mark.parametrize("count", [1, LISTED], ids=["looked up", "listed"])
def test_files_of_a_missing_directory_are_not_on_disk(tmp_path: Path, count: int) -> None:
    names = [f"gone/f{i}.bin" for i in range(count)]
    _put(tmp_path / "mirror/kept.bin")
    loaded = _load(tmp_path, [*names, "kept.bin"])
    rows = _rows(loaded)
    decisions = run.decide_all(loaded, rows, False)
    assert decisions == _reference(loaded, rows, False)
    assert [d.reason for d in decisions] == ["not on disk"] * count + ["size, mtime and digest match the last run"]


@pytest.mark.parametrize("count", [1, LISTED], ids=["looked up", "listed"])
def test_a_symlinked_directory_is_looked_through(tmp_path: Path, count: int) -> None:
    names = [f"link/f{i}.bin" for i in range(count)]
    for i in range(count):
        _put(tmp_path / f"mirror/real/f{i}.bin")
    (tmp_path / "mirror/link").symlink_to("real")
    assert _decided(_load(tmp_path, names)) == dict.fromkeys(names, SKIP)


@pytest.mark.parametrize("count", [1, LISTED], ids=["looked up", "listed"])
def test_a_file_where_a_directory_should_be_holds_nothing(tmp_path: Path, count: int) -> None:
    names = [f"blocker/f{i}.bin" for i in range(count)] + [f"dangling/f{i}.bin" for i in range(count)]
    _put(tmp_path / "mirror/blocker")
    (tmp_path / "mirror/dangling").symlink_to("nowhere")
    assert _decided(_load(tmp_path, names)) == dict.fromkeys(names, DOWNLOAD)


def test_decisions_come_in_the_manifest_order_whatever_the_order_on_disk(tmp_path: Path) -> None:
    # Directories named against the manifest's order, each listed or not, files present or not by turns.
    names = [f"{d}/f{i}.bin" for i in range(LISTED) for d in ("z", "a", "m/n", "b")] + ["top.bin"]
    random.Random(3).shuffle(names)
    for name in names[::2]:
        _put(tmp_path / "mirror" / name)
    loaded = _load(tmp_path, names)
    decisions = run.decide_all(loaded, {}, False)
    reasons = ["on disk, but no earlier run recorded it: kept if its bytes match the manifest's digests", "not on disk"]
    assert [d.reason for d in decisions] == [reasons[i % 2] for i in range(len(names))]


def test_the_tree_is_looked_at_in_order_each_big_directory_listed_once_and_only_what_is_there_stat_ed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = [f"big/f{i}.bin" for i in range(2 * LISTED)]
    small = [f"small/f{i}.bin" for i in range(LISTED - 1)]
    gone = [f"gone/f{i}.bin" for i in range(LISTED)]
    for name in big[::2] + small:
        _put(tmp_path / "mirror" / name)
    loaded = _load(tmp_path, small + gone + big)  # against the order of the tree
    listed: list[str] = []
    looked_up: list[str] = []
    real_listdir, real_stat, real_lstat = os.listdir, os.stat, os.lstat

    def listdir(fd: int) -> list[str]:
        listed.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real_listdir(fd)

    def stat(path: str, *, dir_fd: int | None = None) -> os.stat_result:
        looked_up.append(path if dir_fd is None else f"{os.readlink(f'/proc/self/fd/{dir_fd}')}/{path}")
        return real_stat(path, dir_fd=dir_fd)

    def lstat(path: str, *, dir_fd: int | None = None) -> os.stat_result:
        looked_up.append(path if dir_fd is None else f"{os.readlink(f'/proc/self/fd/{dir_fd}')}/{path}")
        return real_lstat(path, dir_fd=dir_fd)

    rows = _rows(loaded)
    monkeypatch.setattr(os, "listdir", listdir)
    monkeypatch.setattr(os, "stat", stat)
    monkeypatch.setattr(os, "lstat", lstat)
    decided = [d.action for d in run.decide_all(loaded, rows, False)]
    monkeypatch.undo()
    assert decided == [SKIP] * len(small) + [DOWNLOAD] * len(gone) + [SKIP, DOWNLOAD] * LISTED
    assert listed == [str(tmp_path / "mirror/big")], "a small directory is not listed, a missing one cannot be"
    mirror = tmp_path / "mirror"
    in_big = [str(mirror / name) for name in big[::2]]
    in_small = [str(mirror / name) + suffix for name in small for suffix in ("", ".bulkdl")]
    assert looked_up == in_big + in_small, "big/ before small/; in big/ the files there; nothing in gone/"


# What a name in the manifest can find on disk, and what its directory can be.
FILE_STATES = ["absent", "file", "file+sidecar", "sidecar only", "dangling symlink", "symlink", "directory"]
DIR_STATES = ["directory", "missing", "a file", "symlink to a directory", "dangling symlink"]


def _make(directory: Path, name: str, how: str) -> None:
    path = directory / name
    if how in ("file", "file+sidecar"):
        _put(path)
    if how in ("file+sidecar", "sidecar only"):
        _put(directory / f"{name}.bulkdl", b"{}")
    if how == "dangling symlink":
        path.symlink_to("nowhere")
    if how == "symlink":
        _put(directory / f"{name}.target")
        path.symlink_to(f"{name}.target")
    if how == "directory":
        path.mkdir()


def _tree(root: Path, layout: list[tuple[str, list[str]]]) -> list[str]:
    names = []
    for d, (dir_state, files) in enumerate(layout):
        real = root / "mirror" / f"real{d}"
        real.mkdir(parents=True)
        for i, how in enumerate(files):
            _make(real, f"f{i}.bin", how)
            names.append(f"d{d}/f{i}.bin")
        target = root / "mirror" / f"d{d}"
        if dir_state == "directory":
            real.rename(target)
        elif dir_state == "a file":
            _put(target)
        elif dir_state == "symlink to a directory":
            target.symlink_to(real.name)
        elif dir_state == "dangling symlink":
            target.symlink_to("nowhere")
    return names


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    layout=st.lists(
        st.tuples(st.sampled_from(DIR_STATES), st.lists(st.sampled_from(FILE_STATES), max_size=LISTED + 3)),
        min_size=1,
        max_size=4,
    ),
    seed=st.integers(0, 2**16),
    force=st.booleans(),
)
def test_decisions_equal_a_stat_per_file(layout: list[tuple[str, list[str]]], seed: int, force: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        names = _tree(root, layout)
        random.Random(seed).shuffle(names)
        loaded = _load(root, [*names, "extra.bin"])
        rows = _rows(loaded)
        assert run.decide_all(loaded, rows, force) == _reference(loaded, rows, force)
