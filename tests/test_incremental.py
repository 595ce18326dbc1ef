"""Nightly re-runs over an unchanged mirror, verify, dry-run, force, and one run per destination."""

from __future__ import annotations

import contextlib
import email.utils
import fcntl
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bulkdl.parent.lock import DestinationLock, Locked, _no_writers_left
from bulkdl.parent.state import UnreadableState, read_rows
from bulkdl.worker import plan

from .conftest import Server, cli_env, run_cli, watermark, write_manifest
from .httpserver import FaultServer, content

MiB = 1024**2
N = 500


def _mirror(server: Server, tmp_path: Path, digests: bool) -> tuple[Path, dict[str, bytes]]:
    files = {f"m/f{i:03d}.dat": content(f"mirror{i}", 200 + 37 * i) for i in range(N)}
    entries: list[Any] = []
    for name, data in files.items():
        url = server.add(name, data)
        entries.append({"url": url, "sha256": hashlib.sha256(data).hexdigest()} if digests else url)
    return write_manifest(tmp_path, entries, workers=4), files


def _statuses(result: Any) -> dict[str, int]:
    return {
        k: v for k, v in result.report["summary"].items() if k in ("downloaded", "skipped", "failed", "interrupted")
    }


@pytest.mark.parametrize("digests", [True, False], ids=["with-digests", "no-digests"])
def test_rerun_over_unchanged_mirror_moves_no_body_bytes(server: Server, tmp_path: Path, digests: bool) -> None:
    manifest, files = _mirror(server, tmp_path, digests)
    assert run_cli("run", manifest, cwd=tmp_path).code == 0
    mark = watermark(server)
    result = run_cli("run", manifest, cwd=tmp_path)
    assert result.code == 0, result.stdout
    assert _statuses(result) == {"downloaded": 0, "skipped": N, "failed": 0, "interrupted": 0}
    rerun = [r for r in server.requests() if r.conn > mark and r.path.endswith(".dat")]
    assert sum(r.sent for r in rerun) == 0, "no body bytes on an unchanged night"
    if digests:
        assert rerun == [], "state plus manifest digests prove the files: no request at all"
    else:
        assert len(rerun) == N and {r.status for r in rerun} == {304}
    assert all(f["sha256"] == hashlib.sha256(files["m/" + f["path"]]).hexdigest() for f in result.report["files"])


def test_changed_and_deleted_files_are_fetched_again(server: Server, tmp_path: Path) -> None:
    manifest, files = _mirror(server, tmp_path, digests=False)
    assert run_cli("run", manifest, cwd=tmp_path).code == 0
    server.update("m/f007.dat", b"a new version of file seven")
    (tmp_path / "mirror/f123.dat").unlink()
    old = (tmp_path / "mirror/f007.dat").stat().st_ino
    result = run_cli("run", manifest, cwd=tmp_path)
    assert result.code == 0
    assert _statuses(result) == {"downloaded": 2, "skipped": N - 2, "failed": 0, "interrupted": 0}
    assert (tmp_path / "mirror/f007.dat").read_bytes() == b"a new version of file seven"
    assert (tmp_path / "mirror/f007.dat").stat().st_ino != old, "replaced by rename, not rewritten in place"
    assert (tmp_path / "mirror/f123.dat").read_bytes() == files["m/f123.dat"]


def test_mtime_comes_from_last_modified(server: Server, tmp_path: Path) -> None:
    url = server.add("dated.bin", content("dated", 5000))
    assert run_cli("run", write_manifest(tmp_path, [url]), cwd=tmp_path).code == 0
    # Neither server logs response headers; ask again for Last-Modified.
    import urllib.request

    with urllib.request.urlopen(url) as response:
        stamp = email.utils.parsedate_to_datetime(response.headers["Last-Modified"]).timestamp()
    assert (tmp_path / "mirror/dated.bin").stat().st_mtime == stamp


def test_verify_catches_bit_rot_and_missing_files(server: Server, tmp_path: Path) -> None:
    files = {f"v{i}.bin": content(f"verify{i}", 3000 + i) for i in range(4)}
    entries = [
        {"url": server.add(n, d), **({"md5": hashlib.md5(d).hexdigest()} if n == "v0.bin" else {})}
        for n, d in files.items()
    ]
    manifest = write_manifest(tmp_path, entries)
    assert run_cli("run", manifest, cwd=tmp_path).code == 0
    mark = watermark(server)
    clean = run_cli("verify", manifest, "--report", tmp_path / "verify.json", cwd=tmp_path)
    assert clean.code == 0, clean.stdout
    assert _verified(tmp_path) == {name: "verified" for name in files}

    rotten = tmp_path / "mirror/v2.bin"
    before = rotten.stat()
    with open(rotten, "r+b") as f:  # same size, other bytes, mtime put back: only hashing can tell
        f.seek(100)
        f.write(b"\xff" * 10)
    os.utime(rotten, ns=(before.st_atime_ns, before.st_mtime_ns))
    (tmp_path / "mirror/v3.bin").unlink()
    result = run_cli("verify", manifest, "--report", tmp_path / "verify.json", cwd=tmp_path)
    assert result.code == 1
    assert _verified(tmp_path) == {"v0.bin": "verified", "v1.bin": "verified", "v2.bin": "corrupt", "v3.bin": "missing"}
    report = json.loads((tmp_path / "verify.json").read_text())
    errors = {f["path"]: f["error"] for f in report["files"]}
    assert errors["v2.bin"].startswith("sha256 mismatch: state says ") and errors["v3.bin"] == "not on disk"
    assert errors["v0.bin"] is errors["v1.bin"] is None
    rotten_line = next(line for line in result.stdout.splitlines() if "v2.bin" in line)
    assert rotten_line.split()[1] == "corrupt", result.stdout
    assert [r for r in server.requests() if r.conn > mark] == [], "verify uses no network"


def _verified(tmp_path: Path) -> dict[str, str]:
    """Each file's status in the report ``verify --report verify.json`` wrote."""
    return {f["path"]: f["outcome"] for f in json.loads((tmp_path / "verify.json").read_text())["files"]}


def test_dry_run_says_what_and_why_and_touches_nothing(builtin: FaultServer, tmp_path: Path) -> None:
    data = {name: content(name, 2000) for name in ("same", "check", "gone", "new")}
    urls = {name: builtin.add(f"{name}.bin", d) for name, d in data.items()}
    entries: list[Any] = [
        {"url": urls["same"], "sha256": hashlib.sha256(data["same"]).hexdigest()},
        urls["check"],
        urls["gone"],
    ]
    assert run_cli("run", write_manifest(tmp_path, entries), cwd=tmp_path).code == 0
    (tmp_path / "mirror/gone.bin").unlink()
    partial = tmp_path / "mirror/partial.bin"
    (tmp_path / "mirror/partial.bin.bulkdl").write_text("{}")
    entries += [urls["new"], {"url": builtin.add("partial.bin", b"p" * 100), "path": "partial.bin"}]
    # Two partials with sidecars as a killed run leaves them: one of this URL, one of a URL since replaced.
    for name, source in (("resumable", "resumable"), ("moved", "old-name")):
        url = builtin.add(f"{name}.bin", b"r" * 100)
        saved = plan.Plan(f"{builtin.base_url}/{source}.bin", url, 100, '"e"', None, True, (plan.Segment(0, 0, 100),))
        (tmp_path / f"mirror/{name}.bin.bulkdl").write_bytes(plan.encode(saved))
        (tmp_path / f"mirror/{name}.bin.part0").write_bytes(b"r" * 40)
        entries.append(url)
    manifest = write_manifest(tmp_path, entries)
    before = sorted((p.name, p.stat().st_mtime_ns) for p in (tmp_path / "mirror").rglob("*"))
    mark = watermark(builtin)
    result = run_cli("run", manifest, "--dry-run", "--summary", "full", cwd=tmp_path)
    assert result.code == 0 and result.report is None
    rows = {line.split()[0]: line.strip().split(None, 2)[1:] for line in result.stdout.splitlines() if ".bin" in line}
    assert rows["same.bin"] == ["skip", "size, mtime and digest match the last run"]
    assert rows["check.bin"] == ["check", "conditional GET (If-None-Match)"]
    assert rows["gone.bin"] == ["download", "deleted from disk since the last run"]
    assert rows["new.bin"] == ["download", "not on disk"]
    started_over = "a partial download is on disk that cannot be continued ({}): from the start"
    assert rows["partial.bin"] == ["download", started_over.format("its sidecar could not be read")]
    assert rows["moved.bin"] == ["download", started_over.format("the URL in the manifest changed")]
    assert rows["resumable.bin"] == ["resume", "a partial download is on disk"]
    assert [r for r in builtin.requests() if r.conn > mark] == []
    assert sorted((p.name, p.stat().st_mtime_ns) for p in (tmp_path / "mirror").rglob("*")) == before
    assert not partial.exists()


def test_force_downloads_everything_again(builtin: FaultServer, tmp_path: Path) -> None:
    data = content("forced", 4000)
    manifest = write_manifest(
        tmp_path, [{"url": builtin.add("forced.bin", data), "sha256": hashlib.sha256(data).hexdigest()}]
    )
    assert run_cli("run", manifest, cwd=tmp_path).code == 0
    assert run_cli("run", manifest, cwd=tmp_path).file("forced.bin")["outcome"] == "skipped"
    forced = run_cli("run", manifest, "--force", cwd=tmp_path)
    assert forced.file("forced.bin")["outcome"] == "downloaded" and forced.file("forced.bin")["transferred"] == 4000


def test_a_run_waits_for_the_writers_an_earlier_dask_run_left(builtin: FaultServer, tmp_path: Path) -> None:
    """A Dask worker of a killed bulkdl holds dest's writers lock shared until it stops (cluster/task.py):
    a run that takes the destination sends no request until it could take that one alone."""
    url = builtin.add("late.bin", content("late", 1000))
    manifest = write_manifest(tmp_path, [url])
    (tmp_path / "mirror" / ".bulkdl").mkdir(parents=True)
    writers = os.open(tmp_path / "mirror" / ".bulkdl" / "writers", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(writers, fcntl.LOCK_SH)
    argv = [sys.executable, "-m", "bulkdl", "run", str(manifest)]
    waiting = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env())
    try:
        lock = tmp_path / "mirror/.bulkdl/lock"
        deadline = time.monotonic() + 30
        while not (lock.exists() and lock.read_text().strip() == str(waiting.pid)):
            assert time.monotonic() < deadline and waiting.poll() is None
            time.sleep(0.02)
        time.sleep(1.0)
        assert waiting.poll() is None and not builtin.requests(), "it went on while a writer was still there"
    finally:
        os.close(writers)
    _, stderr = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, stderr
    assert stderr.decode().startswith("bulkdl: waiting up to 90 s for the Dask workers of an earlier run"), stderr
    assert (tmp_path / "mirror" / "late.bin").read_bytes() == content("late", 1000)


def test_writers_that_never_stop_turn_the_run_away_with_what_to_do(tmp_path: Path) -> None:
    (tmp_path / ".bulkdl").mkdir()
    writers = os.open(tmp_path / ".bulkdl" / "writers", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(writers, fcntl.LOCK_SH)  # an orphaned worker that never lets go
    try:
        with pytest.raises(Locked) as refused:
            _no_writers_left(tmp_path, wait=0.3)
    finally:
        os.close(writers)
    assert str(refused.value) == (
        f"the Dask workers of an earlier bulkdl run still write into {tmp_path} after 0.3 s (that bulkdl was "
        "killed; its workers stop once they miss it for bulkdl.client-lost-after): run again later, or restart "
        "those workers"
    )
    _no_writers_left(tmp_path, wait=0.3)  # once it let go
    assert (tmp_path / ".bulkdl" / "writers").read_text() == f"pid {os.getpid()}\n"


def test_a_second_run_on_the_same_destination_exits_3(builtin: FaultServer, tmp_path: Path) -> None:
    url = builtin.add("held.bin", content("held", 8 * MiB), stall_after=MiB)
    manifest = write_manifest(tmp_path, [url], defaults={"segments": 1, "timeout": 60})
    env = cli_env()
    argv = [sys.executable, "-m", "bulkdl", "run", str(manifest)]
    first = subprocess.Popen(
        argv, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True
    )
    try:
        lock = tmp_path / "mirror/.bulkdl/lock"
        deadline = time.monotonic() + 30
        while not (lock.exists() and lock.read_text().strip() == str(first.pid)):
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.02)
        second = run_cli("run", manifest, cwd=tmp_path)
        assert second.code == 3
        assert second.stderr.strip() == f"bulkdl: another bulkdl run holds {tmp_path / 'mirror'} (pid {first.pid})"
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    builtin.change("held.bin", stall_after=None)
    assert run_cli("run", manifest, cwd=tmp_path).code == 0, "a killed run leaves no stale lock"


def test_verify_reports_a_file_it_cannot_read(builtin: FaultServer, tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, [builtin.add("odd.bin", b"odd")])
    assert run_cli("run", manifest, cwd=tmp_path).code == 0
    (tmp_path / "mirror/odd.bin").unlink()
    (tmp_path / "mirror/odd.bin").mkdir()  # something is there, but no file bulkdl can hash
    result = run_cli("verify", manifest, cwd=tmp_path)
    assert result.code == 1
    row = next(line for line in result.stdout.splitlines() if "odd.bin" in line)
    assert "corrupt" in row and "not a regular file: a directory" in row


def test_verify_and_dry_run_read_the_rows_a_killed_run_left_in_the_wal(builtin: FaultServer, tmp_path: Path) -> None:
    quick = content("quick", 3000)
    urls = [builtin.add("quick.bin", quick), builtin.add("hang.bin", content("hang", 4 * MiB), stall_after=MiB)]
    manifest = write_manifest(tmp_path, urls, workers=2, defaults={"timeout": 60})
    db = tmp_path / "mirror/.bulkdl/state.db"

    def recorded() -> bool:  # read as verify now does, without taking part in the run's writes
        with (
            contextlib.suppress(sqlite3.Error),
            contextlib.closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)) as reader,
        ):
            return reader.execute("SELECT count(*) FROM files").fetchone()[0] == 1
        return False

    argv = [sys.executable, "-m", "bulkdl", "run", str(manifest)]
    with subprocess.Popen(
        argv, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=cli_env(), start_new_session=True
    ) as first:
        try:
            deadline = time.monotonic() + 30
            while not (db.with_name("state.db-wal").exists() and recorded()):
                assert time.monotonic() < deadline and first.poll() is None
                time.sleep(0.05)
        finally:
            os.killpg(first.pid, signal.SIGKILL)
    assert db.with_name("state.db-wal").stat().st_size > 0, "the row is in the WAL, not yet in state.db"

    verified = run_cli("verify", manifest, "--report", tmp_path / "verify.json", cwd=tmp_path)
    assert "Traceback" not in verified.stderr, verified.stderr
    statuses = {f["path"]: f["outcome"] for f in json.loads((tmp_path / "verify.json").read_text())["files"]}
    assert statuses == {"quick.bin": "verified", "hang.bin": "missing"}, "verified against the state's digest"
    planned = run_cli("run", manifest, "--dry-run", "--summary", "full", cwd=tmp_path)
    quick_row = next(line for line in planned.stdout.splitlines() if "quick.bin" in line)
    assert quick_row.split()[1:3] == ["check", "conditional"], planned.stdout


def _rot(path: Path) -> None:
    """Other bytes, same size, mtime put back: as a failing disk leaves a file, and only hashing can tell."""
    before = path.stat()
    with open(path, "r+b") as f:
        f.seek(100)
        f.write(b"\xff" * 10)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def _damaged_mirror(builtin: FaultServer, tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    """A mirror where verify finds: a.bin (digest in the manifest) and b.bin (none) rotten, c.bin gone, d.bin fine."""
    files = {name: content(name, 3000) for name in ("a.bin", "b.bin", "c.bin", "d.bin")}
    entries: list[Any] = [
        {"url": builtin.add("a.bin", files["a.bin"]), "sha256": hashlib.sha256(files["a.bin"]).hexdigest()}
    ]
    entries += [builtin.add(name, files[name]) for name in ("b.bin", "c.bin", "d.bin")]
    manifest = write_manifest(tmp_path, entries)
    assert run_cli("run", manifest, cwd=tmp_path).code == 0
    _rot(tmp_path / "mirror/a.bin")
    _rot(tmp_path / "mirror/b.bin")
    (tmp_path / "mirror/c.bin").unlink()
    return manifest, files


FOUND = {"a.bin": "corrupt", "b.bin": "corrupt", "c.bin": "missing", "d.bin": "verified"}


def test_after_verify_finds_corruption_the_next_run_fetches_it(builtin: FaultServer, tmp_path: Path) -> None:
    manifest, files = _damaged_mirror(builtin, tmp_path)
    found = run_cli("verify", manifest, "--report", tmp_path / "verify.json", cwd=tmp_path)
    assert found.code == 1 and found.stderr == "", found.stderr
    assert _verified(tmp_path) == FOUND
    result = run_cli("run", manifest, cwd=tmp_path)
    assert result.code == 0
    statuses = {f["path"]: f["outcome"] for f in result.report["files"]}  # type: ignore[index]
    assert statuses == {"a.bin": "downloaded", "b.bin": "downloaded", "c.bin": "downloaded", "d.bin": "skipped"}
    assert all((tmp_path / "mirror" / name).read_bytes() == data for name, data in files.items())


def test_verify_repair_fixes_what_it_found_in_one_command(builtin: FaultServer, tmp_path: Path) -> None:
    manifest, files = _damaged_mirror(builtin, tmp_path)
    repaired = run_cli("verify", manifest, "--repair", "--report", tmp_path / "verify.json", cwd=tmp_path)
    assert repaired.code == 0, repaired.stdout + repaired.stderr
    assert _verified(tmp_path) == {
        "a.bin": "downloaded",
        "b.bin": "downloaded",
        "c.bin": "downloaded",
        "d.bin": "verified",
    }
    notes = {f["path"]: f["notes"] for f in json.loads((tmp_path / "verify.json").read_text())["files"]}
    assert notes["a.bin"][0].startswith("repaired: verify found it corrupt (sha256 mismatch: manifest says ")
    assert notes["c.bin"][0] == "repaired: verify found it missing (not on disk)"
    assert all((tmp_path / "mirror" / name).read_bytes() == data for name, data in files.items())
    again = run_cli("verify", manifest, "--report", tmp_path / "verify.json", cwd=tmp_path)
    assert again.code == 0 and _verified(tmp_path) == dict.fromkeys(files, "verified")


@pytest.mark.parametrize("repair", [False, True], ids=["verify", "verify-repair"])
def test_verify_while_a_run_holds_the_destination_still_reports(
    builtin: FaultServer, tmp_path: Path, repair: bool
) -> None:
    manifest, _ = _damaged_mirror(builtin, tmp_path)
    rows_before = read_rows(tmp_path / "mirror")
    flags = ["--repair"] if repair else []
    with DestinationLock(tmp_path / "mirror"):
        result = run_cli("verify", manifest, *flags, "--report", tmp_path / "verify.json", cwd=tmp_path)
    assert result.code == 1 and _verified(tmp_path) == FOUND
    held = f"bulkdl: another bulkdl run holds {tmp_path / 'mirror'} (pid {os.getpid()}); "
    left = "nothing was repaired and the state" if repair else "the state"
    assert result.stderr.splitlines() == [held + left + " was left as it is"]
    assert read_rows(tmp_path / "mirror") == rows_before


def test_files_no_run_recorded_are_hashed_and_kept_when_their_digests_match(
    builtin: FaultServer, tmp_path: Path
) -> None:
    """A lost state (or a mirror seeded by rsync) cost a download of every file; with the manifest's digests,
    a file on disk is read instead, and fetched only if its bytes are not the manifest's."""
    data = {name: content(name, 3000) for name in ("a", "b", "c", "plain")}
    entries: list[Any] = [
        {"url": builtin.add(f"{name}.bin", data[name]), "sha256": hashlib.sha256(data[name]).hexdigest()}
        for name in ("a", "b", "c")
    ]
    entries.append(builtin.add("plain.bin", data["plain"]))  # no digest to hold it to
    manifest = write_manifest(tmp_path, entries)
    assert run_cli("run", manifest, cwd=tmp_path).code == 0
    mirror = tmp_path / "mirror"
    for name in ("state.db", "state.db-wal", "state.db-shm"):
        (mirror / ".bulkdl" / name).unlink(missing_ok=True)
    (mirror / "b.bin").write_bytes(content("other", 3000))  # the same size, other bytes
    (mirror / "c.bin").unlink()
    (mirror / "c.bin").symlink_to(mirror / "a.bin.copy")  # a symlink to the right bytes is still no file of ours
    (mirror / "a.bin.copy").write_bytes(data["c"])
    mark = watermark(builtin)
    again = run_cli("run", manifest, "--changes", tmp_path / "changes.txt", cwd=tmp_path)
    assert again.code == 0, again.stdout
    asked = sorted(r.path for r in builtin.requests() if r.conn > mark)
    assert asked == ["/b.bin", "/c.bin", "/plain.bin"], "a.bin was read from disk, not fetched"
    # The run that installed a.bin may have died before telling a downstream sync: it hears of it now.
    assert (tmp_path / "changes.txt").read_text().splitlines() == ["+ a.bin", "+ b.bin", "+ c.bin", "+ plain.bin"]
    assert again.file("a.bin")["status"] == "adopted" and again.file("a.bin")["transferred"] == 0
    assert again.file("a.bin")["sha256"] == hashlib.sha256(data["a"]).hexdigest()
    b_notes = again.file("b.bin")["notes"]
    assert "the copy on disk has another sha256 than the manifest's: not adopted" in b_notes
    assert "not a regular file" in " ".join(again.file("c.bin")["notes"])
    assert again.file("plain.bin")["notes"][0] == "on disk, but no earlier run recorded it", "no digest: fetched"
    assert not (mirror / "c.bin").is_symlink() and (mirror / "a.bin.copy").read_bytes() == data["c"]
    assert all((mirror / f"{name}.bin").read_bytes() == data[name] for name in data)
    assert "1 adopted (on disk unrecorded or changed since the last run" in again.stdout
    assert again.stdout.splitlines()[-1].startswith("OK: 4 files (3 new, 1 adopted),"), again.stdout
    mark = watermark(builtin)
    third = run_cli("run", manifest, cwd=tmp_path)
    assert third.file("a.bin")["status"] == "unchanged", "the adopted file got its row"
    assert sorted(r.path for r in builtin.requests() if r.conn > mark) == ["/plain.bin"]


def test_a_touched_file_with_the_manifests_digest_is_kept_and_keeps_its_validators(
    builtin: FaultServer, tmp_path: Path
) -> None:
    """As after a kill -9 between installing a new version and recording it: the row describes another size
    or mtime. With the manifest's digest the copy is read, not fetched, and not called changed on disk."""
    data = {name: content(name, 3000) for name in ("same", "edited")}
    entries = [{"url": builtin.add(f"{n}.bin", d), "sha256": hashlib.sha256(d).hexdigest()} for n, d in data.items()]
    manifest = write_manifest(tmp_path, entries)
    assert run_cli("run", manifest, cwd=tmp_path).code == 0
    mirror = tmp_path / "mirror"
    os.utime(mirror / "same.bin", ns=(0, 1_000_000_000))
    (mirror / "edited.bin").write_bytes(content("mine", 3000))
    mark = watermark(builtin)
    again = run_cli("run", manifest, "--changes", tmp_path / "changes.txt", cwd=tmp_path)
    assert again.code == 0, again.stdout
    assert [r.path for r in builtin.requests() if r.conn > mark] == ["/edited.bin"]
    assert (tmp_path / "changes.txt").read_text() == "", "the bytes the state recorded, in both: no change"
    assert again.file("same.bin")["status"] == "adopted"
    edited = again.file("edited.bin")
    assert (
        edited["status"] == "re-fetched" and edited["notes"][0] == "changed on disk since the last run (size or mtime)"
    )
    assert "  edited.bin " in again.stdout, "a file someone edited is named, as before"
    assert all((mirror / f"{name}.bin").read_bytes() == d for name, d in data.items())
    rows = read_rows(mirror)
    assert rows["same.bin"].local_mtime_ns == 1_000_000_000 and rows["same.bin"].etag is not None, (
        "the very bytes recorded: the server's ETag still describes them"
    )
    revalidated = run_cli("run", manifest, "--revalidate", "--report", tmp_path / "r.json", cwd=tmp_path)
    assert revalidated.file("same.bin")["status"] == "not modified", "a conditional GET, not a plain one"


def test_a_new_version_a_killed_run_installed_is_adopted_without_the_old_validators(
    builtin: FaultServer, tmp_path: Path
) -> None:
    old, new = content("v1", 3000), content("v2", 3000)
    url = builtin.add("v.bin", old)
    manifest = write_manifest(tmp_path, [{"url": url, "sha256": hashlib.sha256(old).hexdigest()}])
    assert run_cli("run", manifest, cwd=tmp_path).code == 0
    builtin.update("v.bin", new)
    manifest = write_manifest(tmp_path, [{"url": url, "sha256": hashlib.sha256(new).hexdigest()}])
    (tmp_path / "mirror/v.bin").write_bytes(new)  # installed by a run killed before it recorded the row
    mark = watermark(builtin)
    again = run_cli("run", manifest, "--changes", tmp_path / "changes.txt", cwd=tmp_path)
    assert again.code == 0 and again.file("v.bin")["status"] == "adopted", again.stdout
    assert (tmp_path / "changes.txt").read_text() == "M v.bin\n", "other bytes than the row's: an update"
    assert [r for r in builtin.requests() if r.conn > mark] == []
    row = read_rows(tmp_path / "mirror")["v.bin"]
    assert (row.sha256, row.etag, row.last_modified) == (hashlib.sha256(new).hexdigest(), None, None), (
        "the old version's validators describe other bytes"
    )


def test_a_recorded_file_replaced_by_a_symlink_is_fetched_again_and_verify_says_so(
    builtin: FaultServer, tmp_path: Path
) -> None:
    """Found by a trial: the link's target had the recorded size and mtime, so the run skipped it every night
    and verify called it verified, while the mirror held no copy of its own."""
    data = content("linked", 3000)
    manifest = write_manifest(
        tmp_path, [{"url": builtin.add("l.bin", data), "sha256": hashlib.sha256(data).hexdigest()}]
    )
    assert run_cli("run", manifest, cwd=tmp_path).code == 0
    final, elsewhere = tmp_path / "mirror/l.bin", tmp_path / "elsewhere.bin"
    os.rename(final, elsewhere)
    final.symlink_to(elsewhere)
    again = run_cli("run", manifest, cwd=tmp_path)
    assert again.code == 0 and again.file("l.bin")["status"] == "re-fetched", again.stdout
    assert again.file("l.bin")["notes"][0] == "on disk, but not a regular file (a symlink, a directory or a FIFO)"
    assert "  l.bin " in again.stdout, "named: someone replaced a file of the mirror"
    assert not final.is_symlink() and final.read_bytes() == data and elsewhere.read_bytes() == data
    final.unlink()
    final.symlink_to(elsewhere)
    verified = run_cli("verify", manifest, "--report", tmp_path / "v.json", cwd=tmp_path)
    [found] = json.loads((tmp_path / "v.json").read_text())["files"]
    assert verified.code == 1 and found["status"] == "corrupt", verified.stdout
    assert found["error"] == "not a regular file: a symlink"


def _recorded(db: Path, name: str) -> bool:
    """Whether a run has committed ``name``'s row yet (its database may not even have its table so far)."""
    try:
        return db.exists() and name in read_rows(db.parent.parent)
    except UnreadableState:
        return False


def test_a_change_a_killed_run_recorded_is_listed_by_the_next_changes_file(
    builtin: FaultServer, tmp_path: Path
) -> None:
    """Found by a trial: a run killed after installing a file and recording it wrote no changes file, and the
    next one found the file unchanged, so no downstream sync ever heard of it."""
    quick = content("quick", 3000)
    urls = [builtin.add("quick.bin", quick), builtin.add("hang.bin", content("hang", 4 * MiB), stall_after=MiB)]
    manifest = write_manifest(tmp_path, urls, workers=2, defaults={"timeout": 60})
    db, listed = tmp_path / "mirror/.bulkdl/state.db", tmp_path / "changes.txt"
    argv = [sys.executable, "-m", "bulkdl", "run", str(manifest), "--changes", str(listed)]
    with subprocess.Popen(
        argv, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=cli_env(), start_new_session=True
    ) as first:
        try:
            deadline = time.monotonic() + 30
            while not _recorded(db, "quick.bin"):
                assert time.monotonic() < deadline and first.poll() is None
                time.sleep(0.05)
        finally:
            os.killpg(first.pid, signal.SIGKILL)
    assert not listed.exists(), "killed before it could list anything"
    builtin.change("hang.bin", stall_after=None)
    again = run_cli("run", manifest, "--changes", listed, cwd=tmp_path)
    assert again.code == 0 and again.file("quick.bin")["status"] in ("unchanged", "not modified"), again.stdout
    assert listed.read_text().splitlines() == ["+ hang.bin", "+ quick.bin"], "this run's, then the killed run's"
    assert run_cli("run", manifest, "--changes", listed, cwd=tmp_path).code == 0
    assert listed.read_text() == "", "listed once: then forgotten"


def test_a_symlink_in_place_of_a_file_gone_upstream_is_no_copy_kept(builtin: FaultServer, tmp_path: Path) -> None:
    """Found by a review: the 404 of a recorded file whose copy is a symlink was 'gone, local copy kept', exit
    0, every night, while verify called it corrupt."""
    data = content("g", 3000)
    url = builtin.add("g.bin", data)
    manifest = write_manifest(tmp_path, [{"url": url, "sha256": hashlib.sha256(data).hexdigest()}])
    assert run_cli("run", manifest, cwd=tmp_path).code == 0
    final, elsewhere = tmp_path / "mirror/g.bin", tmp_path / "elsewhere.bin"
    os.rename(final, elsewhere)
    final.symlink_to(elsewhere)
    builtin.change("g.bin", status=404)
    again = run_cli("run", manifest, "--checksums-file", "SUMS", cwd=tmp_path)
    assert again.code == 1 and again.file("g.bin")["status"] == "failed", again.stdout
    assert "g.bin" not in (tmp_path / "SUMS").read_text(), "no checksum for a file the mirror lacks"


def _state_has_begun(db: Path, run: subprocess.Popen[bytes]) -> None:
    """Wait for ``run`` to open the state: its WAL, which the run before checkpointed away, is back."""
    deadline = time.monotonic() + 30
    while not db.with_name("state.db-wal").exists():
        assert time.monotonic() < deadline and run.poll() is None
        time.sleep(0.02)


def test_a_removal_is_listed_by_the_next_changes_file_if_this_one_could_not_be_written(
    builtin: FaultServer, tmp_path: Path
) -> None:
    """Found by a review: prune's removals were not kept with their rows, so a changes file that could not be
    written lost its '-' lines for good, and a downstream kept the files."""
    urls = [builtin.add(name, content(name, 3000)) for name in ("a.bin", "b.bin")]
    assert run_cli("run", write_manifest(tmp_path, urls, prune=True, max_delete=5), cwd=tmp_path).code == 0
    slow = builtin.add("c.bin", content("c", 3000), delay=2.0)
    manifest = write_manifest(tmp_path, [urls[0], slow], prune=True, max_delete=5)
    (tmp_path / "out").mkdir()
    argv = [sys.executable, "-m", "bulkdl", "run", str(manifest), "--changes", "out/changes"]
    with subprocess.Popen(argv, cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE) as run:
        _state_has_begun(tmp_path / "mirror/.bulkdl/state.db", run)  # its outputs were checked: now break one
        (tmp_path / "out").rmdir()
        (tmp_path / "out").write_bytes(b"")
        _, stderr = run.communicate(timeout=60)
    assert "could not write the changes file" in stderr.decode(), stderr.decode()
    (tmp_path / "out").unlink()
    (tmp_path / "out").mkdir()
    builtin.change("c.bin", delay=0.0)
    assert run_cli("run", manifest, "--changes", "out/changes", cwd=tmp_path).code == 0
    assert (tmp_path / "out/changes").read_text().splitlines() == ["- b.bin", "+ c.bin"], "the failed run's, by path"


def test_a_file_pruned_without_changes_is_not_listed_later_as_new(builtin: FaultServer, tmp_path: Path) -> None:
    """Found by a review: a change kept from a killed run, for a file a run without --changes pruned since,
    was listed as '+' by the next changes file: a file that no longer exists."""
    urls = [builtin.add(name, content(name, 3000)) for name in ("a.bin", "b.bin")]
    assert run_cli("run", write_manifest(tmp_path, urls), cwd=tmp_path).code == 0
    from bulkdl.parent.state import State

    with State(tmp_path / "mirror") as state:  # what a run killed after installing b.bin leaves
        state.note_change("b.bin", "+")
    manifest = write_manifest(tmp_path, urls[:1], prune=True, max_delete=5)
    assert run_cli("run", manifest, cwd=tmp_path).code == 0 and not (tmp_path / "mirror/b.bin").exists()
    assert run_cli("run", manifest, "--changes", "changes.txt", cwd=tmp_path).code == 0
    assert (tmp_path / "changes.txt").read_text() == ""
