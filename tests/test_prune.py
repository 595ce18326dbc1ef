"""Prune: only files an earlier run installed and the manifest dropped, only after a clean run, never over the cap."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bulkdl.parent import removal
from bulkdl.parent.prune import Cap, blocked, plan
from bulkdl.parent.schema import max_delete
from bulkdl.parent.state import Row
from bulkdl.values import FileResult, Status

# Pure parts: the plan and the cap.

SAFE = st.text(alphabet="ab/.", min_size=1, max_size=6)


def _row(path: str, size: int = 3, mtime_ns: int = 1) -> Row:
    return Row(path, "http://x/" + path, size, None, None, "ab" * 32, (("sha256", "ab" * 32),), size, mtime_ns, 0.0)


@given(st.sets(SAFE, max_size=12), st.sets(SAFE, max_size=12))
def test_the_plan_takes_exactly_the_unlisted_rows_a_manifest_could_name(known: set[str], listed: set[str]) -> None:
    rows = {path: _row(path) for path in known}
    found = plan(rows, listed, Cap(count=100))
    normalised = {p for p in known if all(part not in ("", ".", "..") for part in p.split("/"))}
    assert [row.path for row in found.doomed] == sorted(normalised - listed)
    assert found.known == len(known)


@pytest.mark.parametrize("path", [".bulkdl/state.db", "../outside", "/etc/passwd", "a/../../b", "a/./b", "x.part0"])
def test_a_row_no_manifest_could_name_is_never_a_candidate(path: str) -> None:
    assert plan({path: _row(path)}, set(), Cap(count=10)).doomed == ()


@given(st.integers(0, 10**6), st.fractions(0, 100))
def test_a_share_allows_the_most_files_within_it(known: int, percent: Fraction) -> None:
    allowed = Cap(percent=percent).allows(known)
    assert allowed * 100 <= percent * known < (allowed + 1) * 100


@pytest.mark.parametrize(
    ("value", "cap"),
    [
        (500, Cap(count=500)),
        ("500", Cap(count=500)),
        (0, Cap(count=0)),
        ("10%", Cap()),
        ("12.5%", Cap(percent=Fraction(25, 2))),
        (" 100 % ", Cap(percent=Fraction(100))),
        ("0%", Cap(percent=Fraction(0))),
    ],
)
def test_max_delete_is_a_count_or_a_share(value: Any, cap: Cap) -> None:
    assert max_delete(value) == cap


@pytest.mark.parametrize("value", [-1, True, 1.5, "", "%", "ten", "100.5%", "-5%", "1e3%", "nan%", "\uff11\uff10%"])
def test_max_delete_refuses_what_is_neither(value: Any) -> None:
    with pytest.raises(ValueError, match="expected a count of files like 500"):
        max_delete(value)


def _result(status: Status) -> FileResult:
    return FileResult(0, "f", "http://x/f", status, 1, 0, None, 0.0)


@pytest.mark.parametrize(
    ("statuses", "stopped", "problem", "why"),
    [
        ([Status.DOWNLOADED, Status.SKIPPED, Status.GONE], False, None, None),
        ([Status.FAILED, Status.FAILED, Status.SKIPPED], False, None, "2 files failed"),
        ([Status.INTERRUPTED, Status.FAILED], False, None, "1 file failed, 1 file interrupted"),
        ([Status.SKIPPED], True, None, "the run was asked to stop"),
        ([Status.SKIPPED], False, "disk full", "the state could not be recorded"),
    ],
)
def test_prune_waits_for_a_clean_run(
    statuses: list[Status], stopped: bool, problem: str | None, why: str | None
) -> None:
    assert blocked([_result(s) for s in statuses], stopped, problem) == why


# The removal itself, on a real directory tree.


def _recorded(dest: Path, path: str, data: bytes = b"abc") -> Row:
    file = dest / path
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_bytes(data)
    found = file.stat()
    return _row(path, found.st_size, found.st_mtime_ns)


def test_no_symlink_leads_a_removal_out_of_dest(tmp_path: Path) -> None:
    dest, elsewhere = tmp_path / "mirror", tmp_path / "elsewhere"
    row = _recorded(dest, "d/f")
    (dest / "d/f").rename(tmp_path / "f")  # the very file, moved out, with its size and mtime
    (dest / "d").rmdir()
    elsewhere.mkdir()
    (tmp_path / "f").rename(elsewhere / "f")
    (dest / "d").symlink_to(elsewhere)
    link = _recorded(dest, "l")
    (dest / "l").unlink()
    (dest / "l").symlink_to(elsewhere / "f")
    outcomes = removal.remove(dest, [row, link], None)
    assert [(o.kind, o.detail) for o in outcomes] == [
        (removal.LEFT, "d is a symlink; bulkdl does not remove through one"),
        (removal.LEFT, "it is no longer a regular file"),
    ]
    assert (elsewhere / "f").read_bytes() == b"abc" and (dest / "l").is_symlink()


def test_directories_emptied_go_up_to_but_never_dest(tmp_path: Path) -> None:
    dest = tmp_path / "mirror"
    rows = [_recorded(dest, "a/b/c/one"), _recorded(dest, "a/b/two"), _recorded(dest, "top")]
    assert {o.kind for o in removal.remove(dest, rows, None)} == {removal.REMOVED}
    assert dest.is_dir() and list(dest.iterdir()) == []


def test_a_file_where_a_directory_was_means_the_file_is_already_gone(tmp_path: Path) -> None:
    dest = tmp_path / "mirror"
    row = _recorded(dest, "d/f")
    (dest / "d/f").unlink()
    (dest / "d").rmdir()
    (dest / "d").write_bytes(b"a file now")
    assert [o.kind for o in removal.remove(dest, [row], None)] == [removal.ALREADY_GONE]
    assert (dest / "d").read_bytes() == b"a file now"


@pytest.fixture
def other_file_system(tmp_path: Path) -> Iterator[Path]:
    if not os.path.isdir("/dev/shm") or os.stat("/dev/shm").st_dev == tmp_path.stat().st_dev:
        pytest.skip("no second file system (/dev/shm) to move across")
    with tempfile.TemporaryDirectory(dir="/dev/shm") as directory:
        yield Path(directory)


def test_a_backup_on_another_file_system_is_copied_then_removed(tmp_path: Path, other_file_system: Path) -> None:
    dest = tmp_path / "mirror"
    row = _recorded(dest, "d/f", b"x" * 100_000)
    [outcome] = removal.remove(dest, [row], other_file_system / "attic")
    kept = other_file_system / "attic/d/f"
    assert (outcome.kind, outcome.detail) == (removal.REMOVED, f"moved to {kept}")
    assert kept.read_bytes() == b"x" * 100_000 and kept.stat().st_mtime_ns == row.local_mtime_ns
    assert not (dest / "d").exists() and [p.name for p in kept.parent.iterdir()] == ["f"], "no temp left"


def test_a_backup_from_an_earlier_prune_is_replaced_by_the_newer_one(tmp_path: Path) -> None:
    dest, attic = tmp_path / "mirror", tmp_path / "attic"
    (attic / "d").mkdir(parents=True)
    (attic / "d/f").write_bytes(b"an older f")
    [outcome] = removal.remove(dest, [_recorded(dest, "d/f", b"the newer f")], attic)
    assert outcome.kind == removal.REMOVED and (attic / "d/f").read_bytes() == b"the newer f"
