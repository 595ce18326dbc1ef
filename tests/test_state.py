"""The state database: what it refuses to hold, what it reads after a kill, what it does when it is corrupt."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from bulkdl import durable
from bulkdl.parent.run import record
from bulkdl.parent.state import Row, State, read_rows
from bulkdl.values import ADOPTED, FileResult, Status

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


def test_a_string_sqlite_cannot_encode_costs_only_its_row(tmp_path: Path) -> None:
    with State(tmp_path) as state:
        state.put(_row("a.bin"))
        state.put(Row("b.bin", "http://x/b.bin", 3, '"\udcff"', None, "ab" * 32, (("sha256", "ab" * 32),), 3, 1, 0.0))
        state.put(_row("ä.bin"))  # not ASCII, yet valid text
    assert state.unrecorded == ["b.bin (etag is not valid text: surrogates not allowed)"]
    assert set(read_rows(tmp_path)) == {"a.bin", "ä.bin"}


def test_a_last_modified_after_2262_never_ends_the_run(builtin: FaultServer, tmp_path: Path) -> None:
    data = content("future", 5000)
    urls = [builtin.add("future.bin", data, last_modified=YEAR_2300), builtin.add("now.bin", b"now")]
    manifest = write_manifest(tmp_path, urls)
    for attempt in ("first", "second"):
        result = run_cli("run", manifest, cwd=tmp_path)
        assert result.code in (0, 1), f"{attempt} run: {result.stderr}"
        assert "Traceback" not in result.stderr and result.report is not None, result.stderr
        assert result.file("now.bin")["outcome"] in ("downloaded", "skipped")
        assert result.stdout.splitlines()[-1].startswith(("OK: ", "FAILED: ")), "the summary is printed"
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
        # dest first (the directories' own names), where the interrupt came: it is synced again
        assert sorted(synced) == [tmp_path, tmp_path / "a", tmp_path / "b", tmp_path / "c"], "a rename was never synced"
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


def _damage(db: Path, how: str) -> bytes:
    """Corrupt a state database as a disk or a careless hand might; return what is left in its place."""
    for suffix in ("-wal", "-shm"):
        db.with_name(db.name + suffix).unlink(missing_ok=True)
    data = db.read_bytes()
    assert len(data) > 3 * 4096, "the database spans several pages"
    damaged = {
        "garbage": b"this is not a database\n" * 200,
        "truncated": data[: len(data) // 2],
        "damaged page": data[:8192] + b"\xa5" * 4096 + data[12288:],  # the size is right, a page is not
    }[how]
    db.write_bytes(damaged)
    return damaged


def _mirror(builtin: FaultServer, tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    files = {f"s{i:02d}.bin": content(f"state{i}", 100 + i) for i in range(60)}
    entries = [{"url": builtin.add(n, d), "sha256": hashlib.sha256(d).hexdigest()} for n, d in files.items()]
    manifest = write_manifest(tmp_path, entries, workers=2)
    assert run_cli("run", manifest, cwd=tmp_path).code == 0
    return manifest, files


@pytest.mark.parametrize("how", ["garbage", "truncated", "damaged page"])
def test_a_corrupt_state_is_set_aside_and_the_run_goes_on(builtin: FaultServer, tmp_path: Path, how: str) -> None:
    manifest, files = _mirror(builtin, tmp_path)
    mirror = tmp_path / "mirror"
    (mirror / "mine.txt").write_text("a file of the user's, in no manifest")
    damaged = _damage(mirror / ".bulkdl/state.db", how)

    result = run_cli("run", manifest, cwd=tmp_path)
    assert result.code == 0, result.stderr
    [line] = result.stderr.splitlines()
    [aside] = (mirror / ".bulkdl").glob("state.db.corrupt-*")
    assert re.fullmatch(r"state\.db\.corrupt-\d{8}T\d{6}Z", aside.name), aside.name
    assert line.startswith(f"bulkdl: the state {mirror / '.bulkdl/state.db'} is corrupt (")
    assert line.endswith(f"); moved it to {aside.name}, starting afresh")
    assert aside.read_bytes() == damaged, "kept as it was found, for a post mortem"
    assert all((mirror / name).read_bytes() == data for name, data in files.items())
    assert result.report is not None and {f["status"] for f in result.report["files"]} == {"adopted"}, (
        "the manifest's digests vouch for the copies on disk: none is fetched again"
    )
    assert (mirror / "mine.txt").read_text() == "a file of the user's, in no manifest"
    assert set(read_rows(mirror)) == set(files), "the new state records the run"
    again = run_cli("run", manifest, cwd=tmp_path)
    assert again.code == 0 and again.stderr == "" and again.report is not None
    assert again.report["summary"]["skipped"] == len(files)


@pytest.mark.parametrize("how", ["garbage", "truncated"])
def test_verify_and_dry_run_read_a_corrupt_state_as_empty_and_leave_it(
    builtin: FaultServer, tmp_path: Path, how: str
) -> None:
    manifest, files = _mirror(builtin, tmp_path)
    db = tmp_path / "mirror/.bulkdl/state.db"
    damaged = _damage(db, how)
    verified = run_cli("verify", manifest, "--report", tmp_path / "verify.json", cwd=tmp_path)
    planned = run_cli("run", manifest, "--dry-run", cwd=tmp_path)
    for result in verified, planned:
        assert result.code == 0, result.stderr
        [line] = result.stderr.splitlines()
        assert line.startswith(f"bulkdl: cannot read the state {db} (") and line.endswith("); treating it as empty")
    statuses = [f["outcome"] for f in json.loads((tmp_path / "verify.json").read_text())["files"]]
    assert statuses == ["verified"] * len(files), "the manifest's digests still verify every file"
    assert f"{len(files)} to adopt (on disk, but no earlier run recorded it: kept if" in planned.stdout
    assert (
        sorted(p.name for p in db.parent.iterdir()) == ["last-run.json", "lock", "state.db"]
        and db.read_bytes() == damaged
    )


def test_rows_read_back_as_written_with_one_digest_or_several(tmp_path: Path) -> None:
    several = (("sha256", "ab" * 32), ("md5", "cd" * 16))
    odd = Row("odd.bin", "http://x/odd.bin", 3, None, None, "ab" * 32, (("sha256", "ef" * 32),), 3, 1, 0.0)
    written = [_row("one.bin"), Row("two.bin", "http://x/two.bin", 3, '"e"', "d", "ab" * 32, several, 4, 1, 0.5), odd]
    with State(tmp_path) as state:
        for row in written:
            state.put(row)
        state.commit()
        assert state.rows() == {row.path: row for row in written}
    assert read_rows(tmp_path) == {row.path: row for row in written}


def test_writes_wait_for_the_commit_and_keep_their_order(tmp_path: Path) -> None:
    with State(tmp_path) as state:
        for name in ("kept.bin", "checked.bin", "forgotten.bin"):
            state.put(_row(name))
        state.commit()
        state.forget(_row("kept.bin"))
        state.put(_row("kept.bin", mtime_ns=2))  # rewritten after it was forgotten: kept
        state.put(_row("forgotten.bin", mtime_ns=2))
        state.forget(_row("forgotten.bin", mtime_ns=2))  # forgotten after it was rewritten: gone
        state.checked(["checked.bin", "not-a-row.bin"])
        assert read_rows(tmp_path) == {n: _row(n) for n in ("kept.bin", "checked.bin", "forgotten.bin")}
        state.commit()
    rows = read_rows(tmp_path)
    assert set(rows) == {"kept.bin", "checked.bin"}
    assert rows["kept.bin"] == _row("kept.bin", mtime_ns=2)
    assert rows["checked.bin"].checked_at > 0 and rows["kept.bin"].checked_at == 0


@pytest.mark.parametrize(
    ("status", "notes", "synced"),
    [(Status.SKIPPED, (), []), (Status.DOWNLOADED, (), ["", "d"]), (Status.SKIPPED, (ADOPTED,), ["", "d"])],
    ids=["not modified", "downloaded", "adopted"],
)
def test_only_a_file_renamed_into_place_gets_its_directory_synced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, status: Status, notes: tuple[str, ...], synced: list[str]
) -> None:
    # A 304 records a row for a file nothing renamed: syncing its directory anyway was one fsync per file.
    # A rename is synced in its directory and each one up to dest ("" here), which the run may have created;
    # so is an adopted file's, which a killed run renamed and may never have synced.
    (tmp_path / "d").mkdir()
    calls: list[Path] = []
    monkeypatch.setattr(durable, "fsync_dir", calls.append)
    result = FileResult(
        0,
        "d/f.bin",
        "http://x/d/f.bin",
        status,
        3,
        0,
        "ab" * 32,
        0.0,
        None,
        notes,
        (("sha256", "ab" * 32),),
        mtime_ns=1,
    )
    with State(tmp_path) as state:
        record(state, result)
        state.commit()
        assert calls == [tmp_path / name for name in synced]
    assert "d/f.bin" in read_rows(tmp_path), "the row is recorded either way"


def test_a_change_kept_for_the_next_changes_file_stays_new_until_listed(tmp_path: Path) -> None:
    with State(tmp_path) as state:
        state.note_change("x.bin", "+")  # installed by a run that was killed
        state.commit()
        state.note_change("x.bin", "M")  # updated by another killed run: still new to any downstream
        state.note_change("y.bin", "M")
        state.commit()
        assert state.unreported() == {"x.bin": "+", "y.bin": "M"}
        state.note_change("x.bin", "-")
        state.commit()
        assert state.unreported() == {"x.bin": "-", "y.bin": "M"}
        state.reported(["x.bin"])
        assert state.unreported() == {"y.bin": "M"}
