"""Upstream changes under a mirror: files gone upstream (404/410) keep their copy, and --revalidate asks the
server about files their pinned digests prove current, so a change or a removal upstream is noticed."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from bulkdl.parent.state import read_rows

from .conftest import Run, Server, run_cli, watermark, write_manifest
from .httpserver import FaultServer, content, etag_of
from .nginx import NginxServer

NAMES = ("same.bin", "changed.bin", "removed.bin")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _remove_upstream(server: Server, name: str) -> None:
    """The file disappears from the server, which answers 404 from now on."""
    if isinstance(server, NginxServer):
        (server.root / name).unlink()
    else:
        assert isinstance(server, FaultServer)
        server.change(name, status=404)


def _on_disk(mirror: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every file below ``mirror`` (the state's directory aside): its bytes, mtime and inode."""
    return {
        str(p.relative_to(mirror)): (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_ino)
        for p in sorted(mirror.rglob("*"))
        if p.is_file() and ".bulkdl" not in p.relative_to(mirror).parts
    }


def _statuses(result: Run) -> dict[str, str]:
    assert result.report is not None, result.stderr
    return {f["path"]: f["outcome"] for f in result.report["files"]}


def _pinned_mirror(server: Server, tmp_path: Path, **top: Any) -> tuple[Path, dict[str, bytes]]:
    files = {name: content(name, 3000 + 100 * i) for i, name in enumerate(NAMES)}
    entries = [{"url": server.add(name, data), "sha256": _sha(data)} for name, data in files.items()]
    manifest = write_manifest(tmp_path, entries, **top)
    first = run_cli("run", manifest, cwd=tmp_path)
    assert first.code == 0, first.stdout + first.stderr
    return manifest, files


def test_revalidate_notices_a_change_and_a_removal_upstream(server: Server, tmp_path: Path) -> None:
    manifest, files = _pinned_mirror(server, tmp_path)
    server.update("changed.bin", b"a new version the manifest does not pin")
    _remove_upstream(server, "removed.bin")
    before = _on_disk(tmp_path / "mirror")

    mark = watermark(server)
    blind = run_cli("run", manifest, cwd=tmp_path)
    assert (blind.code, set(_statuses(blind).values())) == (0, {"skipped"}), "without --revalidate: no request"
    assert [r for r in server.requests() if r.conn > mark and r.path.endswith(".bin")] == []

    mark = watermark(server)
    result = run_cli("run", manifest, "--revalidate", cwd=tmp_path)
    assert result.code == 1, result.stdout
    assert _statuses(result) == {"same.bin": "skipped", "changed.bin": "failed", "removed.bin": "gone"}
    assert result.file("changed.bin")["error"] == (
        f"upstream changed: its sha256 is {_sha(b'a new version the manifest does not pin')}, "
        f"the manifest pins {_sha(files['changed.bin'])}; the copy on disk was kept"
    )
    assert result.file("removed.bin")["error"] == "gone upstream (HTTP 404); local copy kept"
    assert result.file("removed.bin")["sha256"] == _sha(files["removed.bin"])
    assert any(note.startswith("revalidated") for note in result.file("same.bin")["notes"])
    assert "not modified on the server (304)" in result.file("same.bin")["notes"]
    answered = {r.path.rpartition("/")[2]: r.status for r in server.requests() if r.conn > mark}
    assert {name: answered.get(name) for name in NAMES} == {"same.bin": 304, "changed.bin": 206, "removed.bin": 404}
    assert _on_disk(tmp_path / "mirror") == before, "the old copies stay byte for byte, no part file is left"
    assert {p: r.sha256 for p, r in read_rows(tmp_path / "mirror").items()} == {n: _sha(d) for n, d in files.items()}
    assert "gone upstream, local copy kept (1)" in result.stdout


def test_revalidate_sends_the_recorded_validators(builtin: FaultServer, tmp_path: Path) -> None:
    manifest, files = _pinned_mirror(builtin, tmp_path)
    mark = watermark(builtin)
    result = run_cli("run", manifest, "--revalidate", cwd=tmp_path)
    assert (result.code, set(_statuses(result).values())) == (0, {"skipped"}), result.stdout
    asked = {r.path.lstrip("/"): r.headers.get("If-None-Match") for r in builtin.requests() if r.conn > mark}
    assert asked == {name: etag_of(data) for name, data in files.items()}
    assert sum(r.sent for r in builtin.requests() if r.conn > mark) == 0


def test_revalidate_without_validators_compares_the_bytes(builtin: FaultServer, tmp_path: Path) -> None:
    """A server that sent no ETag or Last-Modified cannot answer 304: the file is fetched and compared."""
    kept, moved = content("kept", 5000), content("moved", 5000)
    entries = [
        {"url": builtin.add("kept.bin", kept, anonymous=True), "sha256": _sha(kept)},
        {"url": builtin.add("moved.bin", moved, anonymous=True), "sha256": _sha(moved)},
    ]
    manifest = write_manifest(tmp_path, entries)
    assert run_cli("run", manifest, cwd=tmp_path).code == 0
    builtin.change("moved.bin", data=b"other bytes")
    before = _on_disk(tmp_path / "mirror")["moved.bin"]
    mark = watermark(builtin)
    result = run_cli("run", manifest, "--revalidate", "--summary", "full", cwd=tmp_path)
    assert result.code == 1
    assert _statuses(result) == {"kept.bin": "downloaded", "moved.bin": "failed"}
    assert result.file("moved.bin")["error"].startswith(f"upstream changed: its sha256 is {_sha(b'other bytes')}")
    assert (tmp_path / "mirror/kept.bin").read_bytes() == kept
    assert _on_disk(tmp_path / "mirror")["moved.bin"] == before
    conditional = {"If-None-Match", "If-Modified-Since", "If-Range"}
    assert all(not conditional & r.headers.keys() for r in builtin.requests() if r.conn > mark)
    assert "re-fetched" in result.stdout, "the same bytes again: not reported as an update"


@pytest.mark.parametrize("status", [404, 410])
def test_a_file_gone_upstream_keeps_its_copy_and_its_row(builtin: FaultServer, tmp_path: Path, status: int) -> None:
    """Without a digest the nightly conditional GET is what meets the 404: no --revalidate needed."""
    data = content("dropped", 4000)
    manifest = write_manifest(tmp_path, [builtin.add("dropped.bin", data), builtin.add("other.bin", b"x" * 10)])
    assert run_cli("run", manifest, cwd=tmp_path).code == 0
    builtin.change("dropped.bin", status=status)
    before = _on_disk(tmp_path / "mirror")
    row = read_rows(tmp_path / "mirror")["dropped.bin"]
    for _ in range(2):  # the row stays, so the next night says it again rather than download or forget it
        result = run_cli("run", manifest, cwd=tmp_path)
        assert result.code == 0, result.stdout
        assert _statuses(result) == {"dropped.bin": "gone", "other.bin": "skipped"}
        assert result.file("dropped.bin")["error"] == f"gone upstream (HTTP {status}); local copy kept"
        assert result.file("dropped.bin")["bytes"] == len(data)
        assert result.report is not None and result.report["summary"]["gone"] == 1
        assert _on_disk(tmp_path / "mirror") == before
        assert read_rows(tmp_path / "mirror")["dropped.bin"] == row
    assert result.stdout.splitlines()[-1].startswith("OK: 2 files (1 gone"), result.stdout


def test_a_404_for_a_file_not_on_disk_is_a_failure(builtin: FaultServer, tmp_path: Path) -> None:
    deleted = content("deleted", 2000)
    url = builtin.add("deleted.bin", deleted)
    manifest = write_manifest(tmp_path, [url, builtin.add_error("never.bin", 404)])
    assert run_cli("run", manifest, cwd=tmp_path).code == 1
    (tmp_path / "mirror/deleted.bin").unlink()
    builtin.change("deleted.bin", status=404)
    result = run_cli("run", manifest, cwd=tmp_path)
    assert result.code == 1
    assert _statuses(result) == {"deleted.bin": "failed", "never.bin": "failed"}
    assert result.file("deleted.bin")["error"] == "HTTP 404 Not Found"


def test_gone_only_when_every_mirror_says_so(builtin: FaultServer, tmp_path: Path) -> None:
    data = {name: content(name, 3000) for name in ("both.bin", "one.bin")}
    entries = [
        {"url": builtin.add(name, d), "path": name, "mirrors": [builtin.add(f"m/{name}", d)]}
        for name, d in data.items()
    ]
    manifest = write_manifest(tmp_path, entries, defaults={"retries": 0})
    assert run_cli("run", manifest, cwd=tmp_path).code == 0
    builtin.change("both.bin", status=404)
    builtin.change("m/both.bin", status=410)
    builtin.change("one.bin", status=503)  # the primary may still have it: it could not say
    builtin.change("m/one.bin", status=404)
    result = run_cli("run", manifest, cwd=tmp_path)
    assert _statuses(result) == {"both.bin": "gone", "one.bin": "failed"}
    assert result.file("both.bin")["error"] == "gone upstream (HTTP 410); local copy kept"
    assert result.file("one.bin")["error"] == "HTTP 404 Not Found"


def test_revalidate_from_the_manifest_and_the_command_line_wins(builtin: FaultServer, tmp_path: Path) -> None:
    manifest, files = _pinned_mirror(builtin, tmp_path, revalidate=True)
    mark = watermark(builtin)
    assert set(_statuses(run_cli("run", manifest, cwd=tmp_path)).values()) == {"skipped"}
    assert len([r for r in builtin.requests() if r.conn > mark and r.status == 304]) == len(files)
    mark = watermark(builtin)
    assert run_cli("run", manifest, "--no-revalidate", cwd=tmp_path).code == 0
    assert [r for r in builtin.requests() if r.conn > mark and r.path.endswith(".bin")] == []


def test_dry_run_shows_the_conditional_gets_revalidate_would_send(builtin: FaultServer, tmp_path: Path) -> None:
    manifest, _ = _pinned_mirror(builtin, tmp_path)
    before = _on_disk(tmp_path / "mirror")
    mark = watermark(builtin)
    reason = "--revalidate: conditional GET (If-None-Match) though size, mtime and digest match the last run"
    counted = run_cli("run", manifest, "--dry-run", "--revalidate", cwd=tmp_path)
    assert counted.code == 0, counted.stderr
    assert counted.stdout.splitlines()[1:] == [
        f"3 to check ({reason})",
        "dry run: 3 files (3 check), nothing to fetch besides what the checks find changed; nothing was done",
    ]
    result = run_cli("run", manifest, "--dry-run", "--revalidate", "--summary", "full", cwd=tmp_path)
    assert result.code == 0, result.stderr
    rows = {line.split()[0]: line.split(None, 2)[1:] for line in result.stdout.splitlines() if ".bin" in line}
    assert rows == {name: ["check", reason] for name in NAMES}
    assert "(3 check)" in result.stdout.splitlines()[-1]
    assert [r for r in builtin.requests() if r.conn > mark] == []
    assert _on_disk(tmp_path / "mirror") == before


def test_revalidate_must_be_true_or_false(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, ["http://127.0.0.1:9/f.bin"], revalidate="yes")
    result = run_cli("check", manifest, cwd=tmp_path)
    assert result.code == 2
    assert result.stderr.strip().endswith("revalidate: expected true or false, got 'yes'"), result.stderr


def test_a_copy_changed_on_disk_is_kept_but_gone_fails(builtin: FaultServer, tmp_path: Path) -> None:
    """A copy changed on disk since the run that recorded it is kept, but nothing vouches for it: the run must
    not exit 0 (every file present and verified) nor leave a trace telling downstream the mirror is whole."""
    manifest = write_manifest(tmp_path, [builtin.add("edited.bin", content("edited", 2000))], trace="trace")
    assert run_cli("run", manifest, cwd=tmp_path).code == 0
    (tmp_path / "mirror/trace").unlink()
    edited = tmp_path / "mirror/edited.bin"
    edited.write_bytes(b"edited by hand")
    os.utime(edited, ns=(0, 1_000_000_000))
    builtin.change("edited.bin", status=410)
    result = run_cli("run", manifest, cwd=tmp_path)
    assert (result.code, result.file("edited.bin")["status"]) == (1, "failed")
    assert result.file("edited.bin")["error"] == (
        "gone upstream (HTTP 410); local copy kept, but it changed on disk since bulkdl recorded it"
    )
    assert edited.read_bytes() == b"edited by hand"
    assert not (tmp_path / "mirror/trace").exists()


def test_a_copy_the_manifest_no_longer_pins_is_kept_but_gone_fails(builtin: FaultServer, tmp_path: Path) -> None:
    # From review: the manifest pins a new digest, upstream answers 404: the old copy is not the file asked for.
    data = content("pinned", 4000)
    url = builtin.add("pinned.bin", data)
    assert run_cli("run", write_manifest(tmp_path, [{"url": url, "sha256": _sha(data)}]), cwd=tmp_path).code == 0
    builtin.change("pinned.bin", status=404)
    result = run_cli("run", write_manifest(tmp_path, [{"url": url, "sha256": _sha(b"other")}]), cwd=tmp_path)
    assert (result.code, result.file("pinned.bin")["status"]) == (1, "failed")
    assert result.file("pinned.bin")["error"].endswith("but the manifest now pins another sha256 than the copy's")
    assert (tmp_path / "mirror/pinned.bin").read_bytes() == data


def test_revalidate_refuses_a_new_size_before_fetching_it(builtin: FaultServer, tmp_path: Path) -> None:
    data = content("sized", 3000)
    manifest = write_manifest(tmp_path, [{"url": builtin.add("sized.bin", data), "size": 3000, "sha256": _sha(data)}])
    assert run_cli("run", manifest, cwd=tmp_path).code == 0
    builtin.update("sized.bin", b"shorter now")
    before = _on_disk(tmp_path / "mirror")
    result = run_cli("run", manifest, "--revalidate", cwd=tmp_path)
    assert (result.code, result.file("sized.bin")["error"]) == (
        1,
        "size mismatch: manifest says 3000 bytes, server has 11",
    )
    assert _on_disk(tmp_path / "mirror") == before


def test_files_removed_or_edited_in_the_mirror_are_named_in_the_summary_and_the_report(
    builtin: FaultServer, tmp_path: Path
) -> None:
    names = [f"f{i}.bin" for i in range(4)]
    manifest = write_manifest(tmp_path, [builtin.add(name, content(name, 3000)) for name in names])
    assert run_cli("run", manifest, cwd=tmp_path).code == 0
    (tmp_path / "mirror/f0.bin").unlink()
    (tmp_path / "mirror/f1.bin").write_bytes(b"edited by someone")
    result = run_cli("run", manifest, cwd=tmp_path)
    assert result.code == 0, result.stdout
    assert result.file("f0.bin")["notes"][0] == "deleted from disk since the last run"
    assert result.file("f1.bin")["notes"][0] == "changed on disk since the last run (size or mtime)"
    assert not [n for n in result.file("f2.bin")["notes"] if "on disk" in n]
    lines = result.stdout.splitlines()
    assert "re-fetched (2)" in lines and any(line.split()[:1] == ["f0.bin"] for line in lines), result.stdout
    assert any(line.split()[:1] == ["f1.bin"] for line in lines) and "f2.bin" not in result.stdout
