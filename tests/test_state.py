"""The state database: what it refuses to hold, what it reads after a kill, what it does when it is corrupt."""

from __future__ import annotations

from pathlib import Path

import pytest

from bulkdl import durable
from bulkdl.state import Row, State, read_rows

from .conftest import run_cli, write_manifest
from .httpserver import FaultServer, content

YEAR_2300 = 10_413_792_000.0  # Fri, 01 Jan 2300 00:00:00 GMT: its mtime in ns is past 2**63


def _row(path: str, mtime_ns: int = 1) -> Row:
    return Row(path, "http://x/" + path, 3, None, None, "ab" * 32, (("sha256", "ab" * 32),), 3, mtime_ns, 0.0)


def test_a_value_sqlite_cannot_hold_costs_only_its_row(tmp_path: Path) -> None:
    with State(tmp_path) as state:
        state.put(_row("old.bin"))
        state.commit()
        state.put(_row("a.bin"))
        state.put(_row("old.bin", mtime_ns=2**70))  # the file was replaced; its new mtime cannot be stored
        state.put(_row("b.bin"))
    assert state.problem is None, "one odd value must not stop the state"
    assert state.unrecorded == [f"old.bin (local_mtime_ns {2**70} does not fit in a 64-bit integer)"]
    assert set(read_rows(tmp_path)) == {"a.bin", "b.bin"}, "the stale row of the replaced file is gone too"


def test_a_last_modified_after_2262_never_ends_the_run(builtin: FaultServer, tmp_path: Path) -> None:
    data = content("future", 5000)
    urls = [builtin.add("future.bin", data, last_modified=YEAR_2300), builtin.add("now.bin", b"now")]
    manifest = write_manifest(tmp_path, urls)
    for attempt in ("first", "second"):
        result = run_cli("run", manifest, cwd=tmp_path)
        assert result.code in (0, 1), f"{attempt} run: {result.stderr}"
        assert "Traceback" not in result.stderr and result.report is not None, result.stderr
        assert result.file("now.bin")["status"] in ("downloaded", "skipped")
        assert "total" in result.stdout, "the summary is printed"
    assert (tmp_path / "mirror/future.bin").read_bytes() == data
    assert "now.bin" in read_rows(tmp_path / "mirror"), "the other file's row is recorded"


def test_an_interrupted_commit_leaves_the_unsynced_directories_for_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
    synced: list[Path] = []

    def interrupted(directory: Path) -> None:  # Ctrl-C arrives while the first directory is being synced
        monkeypatch.setattr(durable, "fsync_dir", synced.append)
        raise KeyboardInterrupt

    with State(tmp_path) as state:
        for name in ("a", "b", "c"):
            state.put(_row(f"{name}/f.bin"))
        monkeypatch.setattr(durable, "fsync_dir", interrupted)
        with pytest.raises(KeyboardInterrupt):
            state.commit()
        state.commit()
        assert sorted(synced) == [tmp_path / "a", tmp_path / "b", tmp_path / "c"], "a rename was never synced"
        synced.clear()
        state.commit()
        assert synced == [], "what was synced is not synced again"


def test_read_rows_sees_rows_still_in_the_wal(tmp_path: Path) -> None:
    state = State(tmp_path)  # open, as a run that is killed before it checkpoints
    try:
        state.put(_row("in-wal.bin"))
        state.commit()
        assert (tmp_path / ".bulkdl/state.db-wal").stat().st_size > 0
        assert set(read_rows(tmp_path)) == {"in-wal.bin"}
    finally:
        state.close()


def test_read_rows_of_a_checkpointed_state_creates_nothing(tmp_path: Path) -> None:
    with State(tmp_path) as state:
        state.put(_row("a.bin"))
    before = sorted(p.name for p in (tmp_path / ".bulkdl").iterdir())
    assert set(read_rows(tmp_path)) == {"a.bin"}
    assert sorted(p.name for p in (tmp_path / ".bulkdl").iterdir()) == before == ["state.db"]
