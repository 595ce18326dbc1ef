"""Redirects: followed up to ten times over http(s) only; segments go to the final URL; credentials stay home."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import run_cli, write_manifest
from .httpserver import FaultServer, content

MiB = 1024**2


def test_a_redirect_chain_is_followed_and_segments_use_the_final_url(builtin: FaultServer, tmp_path: Path) -> None:
    data = content("final", 4 * MiB)
    final = builtin.add("real/final.bin", data)
    builtin.add_redirect("hop2", final)
    builtin.add_redirect("hop1", "/hop2")  # a relative Location
    start = builtin.add_redirect("start.bin", builtin.base_url + "/hop1")
    manifest = write_manifest(tmp_path, [start], defaults={"segments": 4, "min_segment_size": "1MiB"})
    result = run_cli("run", manifest, cwd=tmp_path)
    assert result.code == 0, result.stdout
    assert (tmp_path / "mirror/start.bin").read_bytes() == data
    assert [len(builtin.requests(p)) for p in ("start.bin", "hop1", "hop2")] == [1, 1, 1], "segments skip the hops"
    assert len(builtin.requests("real/final.bin")) == 4


def test_more_than_ten_redirects_fail(builtin: FaultServer, tmp_path: Path) -> None:
    for hop in range(12):
        builtin.add_redirect(f"loop{hop}", f"/loop{hop + 1}")
    builtin.add("loop12", b"never")
    result = run_cli(
        "run", write_manifest(tmp_path, [{"url": builtin.base_url + "/loop0", "path": "l.bin"}]), cwd=tmp_path
    )
    assert result.code == 1
    assert result.file("l.bin")["error"] == "more than 10 redirects"


@pytest.mark.parametrize("target", ["ftp://127.0.0.1/pub/x", "file:///etc/passwd", "gopher://127.0.0.1/x"])
def test_redirects_to_other_schemes_fail(builtin: FaultServer, tmp_path: Path, target: str) -> None:
    url = builtin.add_redirect("odd.bin", target)
    result = run_cli("run", write_manifest(tmp_path, [url]), cwd=tmp_path)
    assert result.code == 1
    assert result.file("odd.bin")["error"] == f"redirected to {target.split(':')[0]}:, which is not http or https"
    assert not (tmp_path / "mirror/odd.bin").exists()


def test_credentials_are_dropped_on_a_cross_host_redirect(builtin: FaultServer, tmp_path: Path) -> None:
    data = content("elsewhere", 3 * MiB)
    other_host = builtin.add("there.bin", data).replace("127.0.0.1", "localhost")
    url = builtin.add_redirect("here.bin", other_host)
    headers = {"Authorization": "Bearer sekrit", "X-Keep": "yes"}
    settings = {"segments": 3, "min_segment_size": "1MiB", "headers": headers}
    result = run_cli("run", write_manifest(tmp_path, [url], defaults=settings), cwd=tmp_path)
    assert result.code == 0, result.stdout
    assert builtin.requests("here.bin")[0].headers.get("Authorization") == "Bearer sekrit"
    there = builtin.requests("there.bin")
    assert len(there) == 3
    assert all("Authorization" not in r.headers and r.headers.get("X-Keep") == "yes" for r in there)
