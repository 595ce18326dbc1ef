"""Upstream changes under a mirror: files gone upstream (404/410) keep their copy and their state row."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bulkdl.parent.state import read_rows

from .conftest import Run, run_cli, write_manifest
from .httpserver import FaultServer, content


def _on_disk(mirror: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every file below ``mirror`` (the state's directory aside): its bytes, mtime and inode."""
    return {
        str(p.relative_to(mirror)): (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_ino)
        for p in sorted(mirror.rglob("*"))
        if p.is_file() and ".bulkdl" not in p.relative_to(mirror).parts
    }


def _statuses(result: Run) -> dict[str, str]:
    assert result.report is not None, result.stderr
    return {f["path"]: f["status"] for f in result.report["files"]}


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


def test_the_copy_is_gone_only_as_recorded(builtin: FaultServer, tmp_path: Path) -> None:
    """A copy changed on disk since the run that recorded it is kept, but the state's digest is not claimed."""
    manifest = write_manifest(tmp_path, [builtin.add("edited.bin", content("edited", 2000))])
    assert run_cli("run", manifest, cwd=tmp_path).code == 0
    edited = tmp_path / "mirror/edited.bin"
    edited.write_bytes(b"edited by hand")
    os.utime(edited, ns=(0, 1_000_000_000))
    builtin.change("edited.bin", status=410)
    result = run_cli("run", manifest, cwd=tmp_path)
    assert (result.code, result.file("edited.bin")["status"]) == (0, "gone")
    assert (result.file("edited.bin")["sha256"], result.file("edited.bin")["bytes"]) == (None, 14)
    assert edited.read_bytes() == b"edited by hand"
