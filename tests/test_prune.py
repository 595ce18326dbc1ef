"""Prune: only files an earlier run installed and the manifest dropped, only after a clean run, never over the cap."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bulkdl.cli import EXIT_PRUNE_CAPPED
from bulkdl.parent import removal
from bulkdl.parent.prune import Cap, blocked, plan
from bulkdl.parent.schema import max_delete
from bulkdl.parent.state import Row, read_rows
from bulkdl.values import FileResult, Status

from .conftest import run_cli, write_manifest
from .httpserver import FaultServer, content

KEPT = ["a.txt", "sub/b.txt", "keep/d.txt", "e.txt", "f.txt", "g.txt", "h.txt"]
DROPPED = ["sub/deep/c.txt", "gone/x.txt", "z.txt"]


def _entries(server: FaultServer, names: list[str]) -> list[dict[str, str]]:
    return [{"url": server.add(name, content(name, 100 + 7 * i)), "path": name} for i, name in enumerate(names)]


def _mirrored(server: FaultServer, tmp_path: Path) -> Path:
    """A mirror of KEPT and DROPPED, downloaded once; returns dest."""
    first = run_cli("run", write_manifest(tmp_path, _entries(server, KEPT + DROPPED)), cwd=tmp_path)
    assert first.code == 0, first.stdout + first.stderr
    return tmp_path / "mirror"


def _plant(dest: Path) -> dict[Path, bytes]:
    """Files bulkdl never wrote: at the top, in a directory of its own, and beside a file prune takes."""
    planted = {dest / "planted.txt": b"mine", dest / "old/planted.bin": b"mine too", dest / "gone/notes": b"mine"}
    for path, data in planted.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return planted


def _statuses(result: Any) -> dict[str, str]:
    return {f["path"]: f["outcome"] for f in result.report["files"]}


def test_prune_removes_exactly_the_dropped_files_and_the_directories_they_leave(
    builtin: FaultServer, tmp_path: Path
) -> None:
    dest = _mirrored(builtin, tmp_path)
    planted = _plant(dest)
    for litter in ("c.txt.part0", "c.txt.part1", "c.txt.bulkdl"):  # what an interrupted update leaves
        (dest / "sub/deep" / litter).write_bytes(b"partial")
    (dest / "gone/x.txt.part0").write_bytes(b"partial")  # a download's first part, before its sidecar
    manifest = write_manifest(tmp_path, _entries(builtin, KEPT), prune=True, max_delete=3)
    result = run_cli("run", manifest, cwd=tmp_path)
    assert result.code == 0, result.stdout + result.stderr
    assert _statuses(result) == {**dict.fromkeys(KEPT, "skipped"), **dict.fromkeys(DROPPED, "removed")}
    assert result.report["summary"]["removed"] == 3
    assert "removed (3)" in result.stdout and "3 removed" in result.stdout.splitlines()[-1]
    assert all(not (dest / name).exists() for name in DROPPED)
    assert all((dest / name).read_bytes() == content(name, 100 + 7 * i) for i, name in enumerate(KEPT))
    assert all(path.read_bytes() == data for path, data in planted.items()), "files bulkdl never wrote stay"
    assert not (dest / "sub/deep").exists(), "a directory prune emptied goes, with the parts of its files"
    assert (dest / "sub").is_dir() and (dest / "gone").is_dir(), "one that still holds a file stays"
    assert not (dest / "gone/x.txt.part0").exists()
    assert set(read_rows(dest)) == set(KEPT), "the removed files' state rows go"
    again = run_cli("run", manifest, cwd=tmp_path)
    assert again.code == 0 and "removed" not in _statuses(again).values(), "nothing left to prune"


def test_a_failing_file_in_the_run_means_nothing_is_pruned(builtin: FaultServer, tmp_path: Path) -> None:
    dest = _mirrored(builtin, tmp_path)
    entries = [*_entries(builtin, KEPT), {"url": builtin.add_error("missing.txt", 404), "path": "missing.txt"}]
    result = run_cli("run", write_manifest(tmp_path, entries, prune=True, max_delete=10), cwd=tmp_path)
    assert result.code == 1
    assert "bulkdl: prune skipped: 1 file failed; nothing was removed" in result.stderr.splitlines()
    assert all((dest / name).exists() for name in DROPPED)
    assert set(DROPPED) <= set(read_rows(dest)), "their rows stay, for the prune of a later clean run"


def test_over_the_cap_nothing_is_removed_and_the_run_exits_4(builtin: FaultServer, tmp_path: Path) -> None:
    dest = _mirrored(builtin, tmp_path)
    manifest = write_manifest(tmp_path, _entries(builtin, KEPT), prune=True)  # the default cap: 10% of 10 is 1
    result = run_cli("run", manifest, cwd=tmp_path)
    assert result.code == EXIT_PRUNE_CAPPED == 4, result.stdout + result.stderr
    assert (
        "bulkdl: prune refused: 3 files no longer in the manifest would be removed, more than max_delete allows "
        "(1: 10% of 10 files the state knows); nothing was removed. If the manifest is right, run once with "
        "--max-delete 3"
    ) in result.stderr.splitlines()
    assert all((dest / name).exists() for name in DROPPED) and set(DROPPED) <= set(read_rows(dest))
    assert "removed" not in _statuses(result).values()
    # The morning reader sees it in the verdict too, not only on stderr: the downloads went well, prune did not.
    assert result.stdout.splitlines()[-1].startswith(
        "FAILED: prune refused, 3 files no longer in the manifest would be removed, more than max_delete allows "
        f"(1: 10% of 10 files the state knows); {len(KEPT)} files ({len(KEPT)} unchanged), "
    )
    raised = run_cli("run", manifest, "--max-delete", "30%", cwd=tmp_path)
    assert raised.code == 0, raised.stderr
    # Removed files are no longer the manifest's: counted after its files, not among them.
    assert raised.stdout.splitlines()[-1].startswith(f"OK: {len(KEPT)} files ({len(KEPT)} unchanged), 3 removed, ")
    assert not any((dest / name).exists() for name in DROPPED), "the command line's cap wins over the default"


def test_backup_dir_keeps_the_bytes_below_the_same_paths(builtin: FaultServer, tmp_path: Path) -> None:
    dest = _mirrored(builtin, tmp_path)
    dates = {name: (dest / name).stat().st_mtime_ns for name in DROPPED}
    manifest = write_manifest(tmp_path, _entries(builtin, KEPT), prune=True, max_delete="30%", backup_dir="../attic")
    result = run_cli("run", manifest, cwd=tmp_path)
    assert result.code == 0, result.stderr
    for i, name in enumerate(DROPPED, start=len(KEPT)):
        kept = tmp_path / "attic" / name
        assert kept.read_bytes() == content(name, 100 + 7 * i) and kept.stat().st_mtime_ns == dates[name]
        assert not (dest / name).exists()
        assert result.file(name)["notes"] == [f"moved to {kept}"]


def test_a_file_prune_cannot_take_fails_the_run_and_keeps_its_row(builtin: FaultServer, tmp_path: Path) -> None:
    dest = _mirrored(builtin, tmp_path)
    (tmp_path / "attic").mkdir()
    (tmp_path / "attic/gone").write_bytes(b"a file where the backup's directory would go")
    manifest = write_manifest(tmp_path, _entries(builtin, KEPT), prune=True, max_delete=3, backup_dir="../attic")
    result = run_cli("run", manifest, cwd=tmp_path)
    assert result.code == 1, result.stderr
    failed = result.file("gone/x.txt")
    assert failed["outcome"] == "failed" and failed["error"].startswith("prune: could not move it: "), failed
    assert (dest / "gone/x.txt").exists() and "gone/x.txt" in read_rows(dest), "the next run tries again"
    assert _statuses(result)["z.txt"] == "removed", "the others go"


def test_a_file_someone_replaced_since_is_left_and_said(builtin: FaultServer, tmp_path: Path) -> None:
    dest = _mirrored(builtin, tmp_path)
    (dest / "z.txt").write_bytes(b"the operator's own z.txt now")
    manifest = write_manifest(tmp_path, _entries(builtin, KEPT), prune=True, max_delete=3)
    result = run_cli("run", manifest, cwd=tmp_path)
    assert result.code == 0, result.stderr
    assert (dest / "z.txt").read_bytes() == b"the operator's own z.txt now"
    assert "bulkdl: prune left z.txt: it changed since bulkdl wrote it (size or mtime differ)" in result.stderr
    assert "z.txt" not in _statuses(result) and "z.txt" not in read_rows(dest), "no longer bulkdl's: forgotten"
    assert not (dest / "gone/x.txt").exists(), "the others go"


def test_dry_run_lists_what_would_go_and_changes_nothing(builtin: FaultServer, tmp_path: Path) -> None:
    dest = _mirrored(builtin, tmp_path)
    (dest / "z.txt").write_bytes(b"replaced")
    before = {p: p.stat().st_mtime_ns for p in dest.rglob("*")}
    asked = len(builtin.requests())
    manifest = write_manifest(tmp_path, _entries(builtin, KEPT), prune=True, max_delete=3)
    result = run_cli("run", manifest, "--dry-run", cwd=tmp_path)
    assert result.code == 0, result.stderr
    assert "prune, if every file succeeds: 2 files to remove" in result.stdout
    lines = [" ".join(line.split()) for line in result.stdout.splitlines()]
    assert "sub/deep/c.txt remove no longer in the manifest" in lines
    assert "gone/x.txt remove no longer in the manifest" in lines
    assert "z.txt leave it changed since bulkdl wrote it (size or mtime differ)" in lines
    assert {p: p.stat().st_mtime_ns for p in dest.rglob("*")} == before and len(builtin.requests()) == asked
    capped = run_cli("run", manifest, "--dry-run", "--max-delete", "1", cwd=tmp_path)
    assert "prune would refuse: 3 files no longer in the manifest would be removed" in capped.stdout
    assert "gone/x.txt remove no longer in the manifest" in [" ".join(x.split()) for x in capped.stdout.splitlines()]
    assert all((dest / name).exists() for name in DROPPED)


def test_no_prune_on_the_command_line_wins_over_the_manifest(builtin: FaultServer, tmp_path: Path) -> None:
    dest = _mirrored(builtin, tmp_path)
    manifest = write_manifest(tmp_path, _entries(builtin, KEPT), prune=True, max_delete=3)
    assert run_cli("run", manifest, "--no-prune", cwd=tmp_path).code == 0
    assert all((dest / name).exists() for name in DROPPED)
    assert run_cli("run", manifest, cwd=tmp_path).code == 0
    assert not any((dest / name).exists() for name in DROPPED)


@pytest.mark.parametrize(
    ("top", "message"),
    [
        ({"backup_dir": "attic"}, "overlaps the destination"),
        ({"backup_dir": ".."}, "overlaps the destination"),
        ({"backup_dir": "."}, "overlaps the destination"),
        ({"max_delete": "ten"}, "max_delete: expected a count of files like 500 or a share like 10%"),
        ({"max_delete": "120%"}, "max_delete: expected a count"),
        ({"prune": "yes"}, "prune: expected true or false"),
    ],
)
def test_prune_settings_are_checked_with_the_manifest(tmp_path: Path, top: dict[str, Any], message: str) -> None:
    manifest = write_manifest(tmp_path, ["http://127.0.0.1:9/a"], **{"prune": True, **top})
    result = run_cli("check", manifest, cwd=tmp_path)
    assert result.code == 2 and message in result.stderr, result.stderr
    [key] = top
    line = 1 + next(i for i, text in enumerate(manifest.read_text().splitlines()) if text.startswith(f"{key}:"))
    assert f"manifest.yaml:{line}: {key}: " in result.stderr, "on the key's line"


def test_a_backup_dir_on_the_command_line_inside_dest_is_refused(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, ["http://127.0.0.1:9/a"])
    result = run_cli("run", manifest, "--prune", "--backup-dir", "mirror/old", cwd=tmp_path)
    assert result.code == 2 and result.stderr.startswith("bulkdl: --backup-dir "), result.stderr
    assert "overlaps the destination" in result.stderr and not (tmp_path / "mirror").exists()


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
    outcomes = removal.remove(dest, [row, link], None, set())
    assert [(o.kind, o.detail) for o in outcomes] == [
        (removal.LEFT, "d is a symlink; bulkdl does not remove through one"),
        (removal.LEFT, "it is no longer a regular file"),
    ]
    assert (elsewhere / "f").read_bytes() == b"abc" and (dest / "l").is_symlink()


def test_directories_emptied_go_up_to_but_never_dest(tmp_path: Path) -> None:
    dest = tmp_path / "mirror"
    rows = [_recorded(dest, "a/b/c/one"), _recorded(dest, "a/b/two"), _recorded(dest, "top")]
    assert {o.kind for o in removal.remove(dest, rows, None, set())} == {removal.REMOVED}
    assert dest.is_dir() and list(dest.iterdir()) == []


def test_a_directory_goes_once_all_its_emptied_subdirectories_have(tmp_path: Path) -> None:
    # Found by hand: a/b went, then a was tried while a/c was still there, and never again: an empty a stayed.
    dest = tmp_path / "mirror"
    rows = [_recorded(dest, "a/b/x"), _recorded(dest, "a/c/y"), _recorded(dest, "p/q/r/s")]
    _recorded(dest, "keep")
    assert {o.kind for o in removal.remove(dest, rows, None, set())} == {removal.REMOVED}
    assert sorted(p.name for p in dest.iterdir()) == ["keep"]


def test_prune_never_takes_a_listed_file_reached_through_a_symlink_in_dest(
    builtin: FaultServer, tmp_path: Path
) -> None:
    # From review: a mirror moved to a "current -> v2" layout lists current/a.iso and drops v2/a.iso. The
    # download lands in v2/a.iso through the link, with the size and mtime v2's row recorded, and prune took it.
    data = content("alias", 5000)
    url = builtin.add("v2/a.iso", data)
    assert run_cli("run", write_manifest(tmp_path, [{"url": url, "path": "v2/a.iso"}]), cwd=tmp_path).code == 0
    dest = tmp_path / "mirror"
    (dest / "current").symlink_to("v2")
    entries = [{"url": url, "path": "current/a.iso"}]
    manifest = write_manifest(tmp_path, entries, prune=True, max_delete=1, checksums_file="SHA256SUMS")
    result = run_cli("run", manifest, cwd=tmp_path)
    assert result.code == 0, result.stdout + result.stderr
    assert (dest / "current/a.iso").read_bytes() == data
    assert f"prune left v2/a.iso: {removal._LISTED}" in result.stderr
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=dest, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_a_file_edited_in_place_with_its_size_kept_is_left(tmp_path: Path) -> None:
    # The rail is the size and the mtime: an edit that keeps the size still moves the mtime.
    dest = tmp_path / "mirror"
    row = _recorded(dest, "d/f", b"abc")
    (dest / "d/f").write_bytes(b"xyz")
    os.utime(dest / "d/f", ns=(0, row.local_mtime_ns + 1))
    [outcome] = removal.remove(dest, [row], None, set())
    assert (outcome.kind, (dest / "d/f").read_bytes()) == (removal.LEFT, b"xyz")


def test_a_file_where_a_directory_was_means_the_file_is_already_gone(tmp_path: Path) -> None:
    dest = tmp_path / "mirror"
    row = _recorded(dest, "d/f")
    (dest / "d/f").unlink()
    (dest / "d").rmdir()
    (dest / "d").write_bytes(b"a file now")
    assert [o.kind for o in removal.remove(dest, [row], None, set())] == [removal.ALREADY_GONE]
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
    [outcome] = removal.remove(dest, [row], other_file_system / "attic", set())
    kept = other_file_system / "attic/d/f"
    assert (outcome.kind, outcome.detail) == (removal.REMOVED, f"moved to {kept}")
    assert kept.read_bytes() == b"x" * 100_000 and kept.stat().st_mtime_ns == row.local_mtime_ns
    assert not (dest / "d").exists() and [p.name for p in kept.parent.iterdir()] == ["f"], "no temp left"


def test_a_backup_from_an_earlier_prune_is_replaced_by_the_newer_one(tmp_path: Path) -> None:
    dest, attic = tmp_path / "mirror", tmp_path / "attic"
    (attic / "d").mkdir(parents=True)
    (attic / "d/f").write_bytes(b"an older f")
    [outcome] = removal.remove(dest, [_recorded(dest, "d/f", b"the newer f")], attic, set())
    assert outcome.kind == removal.REMOVED and (attic / "d/f").read_bytes() == b"the newer f"


def test_every_directory_a_backup_needs_is_made_durable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dest, attic = tmp_path / "mirror", tmp_path / "attic"
    row = _recorded(dest, "a/b/f")
    synced: list[Path] = []
    real = removal.durable.fsync_dir
    monkeypatch.setattr(removal.durable, "fsync_dir", lambda d: (synced.append(d), real(d)))
    [outcome] = removal.remove(dest, [row], attic, set())
    assert outcome.kind == removal.REMOVED and (attic / "a/b/f").exists()
    # each new directory in its parent, then the rename in its directory
    assert synced == [tmp_path, attic, attic / "a", attic / "a/b"]
