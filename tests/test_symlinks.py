"""Directory symlinks inside dest: bulkdl never writes through one that leads out of dest."""

from __future__ import annotations

from pathlib import Path

from .conftest import run_cli, write_manifest
from .httpserver import FaultServer, content


def test_a_directory_symlink_out_of_dest_is_not_written_through(builtin: FaultServer, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "mirror").mkdir()
    (tmp_path / "mirror/sub").symlink_to(elsewhere)
    url = builtin.add("escape.bin", content("escape", 1000))
    inside = builtin.add("inside.bin", content("inside", 1000))
    files = [{"url": url, "path": "sub/escape.bin"}, {"url": inside, "path": "ok/inside.bin"}]
    result = run_cli("run", write_manifest(tmp_path, files), cwd=tmp_path)
    assert list(elsewhere.iterdir()) == [], "nothing written outside dest"
    assert result.code == 1
    assert result.file("sub/escape.bin")["error"] == (
        f"{tmp_path}/mirror/sub is a symlink to {elsewhere}, outside dest; bulkdl does not write through it"
    )
    assert (tmp_path / "mirror/ok/inside.bin").read_bytes() == content("inside", 1000), "the others go on"
    assert builtin.requests("escape.bin") == [], "refused before any request"


def test_a_symlink_planted_where_a_part_goes_is_not_written_through(builtin: FaultServer, tmp_path: Path) -> None:
    victim = tmp_path / "elsewhere.txt"
    victim.write_bytes(b"precious")
    (tmp_path / "mirror").mkdir()
    (tmp_path / "mirror/planted.bin.part0").symlink_to(victim)
    (tmp_path / "mirror/.planted.bin.bulkdl.bulkdl-tmp").symlink_to(victim)
    url = builtin.add("planted.bin", content("planted", 3 * 1024**2))
    manifest = write_manifest(tmp_path, [url], defaults={"min_segment_size": "1MiB", "segments": 2})
    result = run_cli("run", manifest, cwd=tmp_path)
    assert victim.read_bytes() == b"precious"
    assert result.code == 1, result.stdout
    assert "Too many levels of symbolic links" in result.file("planted.bin")["error"]
