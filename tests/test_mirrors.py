"""Mirrors: segments spread over sources that agree; a failing source is dropped and its segments move on."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

import pytest

from .conftest import run_cli, write_manifest
from .httpserver import FaultServer, content
from .nginx import NginxServer

MiB = 1024**2
SPREAD = {"segments": 6, "min_segment_size": "1MiB", "retries": 2}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_segments_spread_over_a_builtin_server_and_nginx(
    builtin: FaultServer, _nginx: NginxServer | None, tmp_path: Path
) -> None:
    if _nginx is None:
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    _nginx.reset()
    data = content("spread", 12 * MiB)
    primary = builtin.add("a/spread.bin", data)
    mirrors = [builtin.add("b/spread.bin", data, etag='"mirror-b"'), _nginx.add("c/spread.bin", data)]
    entry = {"url": primary, "mirrors": mirrors, "sha256": _sha(data)}
    result = run_cli("run", write_manifest(tmp_path, [entry], defaults=SPREAD), cwd=tmp_path)
    assert result.code == 0, result.stdout
    assert (tmp_path / "mirror/spread.bin").read_bytes() == data
    counts = [
        len(builtin.requests("a/spread.bin")),
        len(builtin.requests("b/spread.bin")),
        len(_nginx.requests("c/spread.bin")),
    ]
    assert counts == [3, 2, 2], counts  # the primary also serves the probe, which only asks for the first MiB
    # Validators belong to one server: a mirror is asked If-Range with its own (once one answer gave them).
    assert {r.if_range for r in builtin.requests("b/spread.bin")} <= {None, '"mirror-b"'}


def test_a_mirror_that_changes_version_mid_file_is_dropped_not_spliced(builtin: FaultServer, tmp_path: Path) -> None:
    # Same size, other bytes: without If-Range the mirror's second answer was spliced into the file, and
    # without a digest in the manifest nothing noticed.
    data, other = content("steady", 12 * MiB), content("rebuilt", 12 * MiB)
    entry = {
        "url": builtin.add("p/v.bin", data),
        "mirrors": [builtin.add("m/v.bin", data, next_data=other, switch_after=1)],
    }
    result = run_cli("run", write_manifest(tmp_path, [entry], defaults=SPREAD), cwd=tmp_path)
    assert result.code == 0, result.stdout
    assert (tmp_path / "mirror/v.bin").read_bytes() == data
    notes = result.file("v.bin")["notes"]
    # Dropped either when one of its answers showed other validators (the file then starts over, from the
    # primary: "remote file changed during download (mirror ...)"), or when If-Range with its first ones made
    # it send the new version whole (only its segment moves): which, depends on which of its parallel answers
    # came first. Either way the change is the mirror's, never the primary's.
    assert any("/m/v.bin dropped for this file: " in n for n in notes), notes
    changed = [n for n in notes if n.startswith("remote file changed")]
    assert all(n.startswith("remote file changed during download (mirror ") for n in changed), notes


def test_a_failing_mirror_is_dropped_and_its_segments_move(builtin: FaultServer, tmp_path: Path) -> None:
    data = content("drop-mirror", 12 * MiB)
    entry = {
        "url": builtin.add("p/f.bin", data),
        "mirrors": [builtin.add_error("gone/f.bin", 404), builtin.add("ok/f.bin", data)],
        "sha256": _sha(data),
    }
    result = run_cli("run", write_manifest(tmp_path, [entry], defaults=SPREAD), cwd=tmp_path)
    assert result.code == 0, result.stdout
    assert (tmp_path / "mirror/f.bin").read_bytes() == data
    # Its two segments may start in parallel before either fails; none is ever sent back to it.
    asked = [r.range for r in builtin.requests("gone/f.bin")]
    assert 1 <= len(asked) <= 2 and len(set(asked)) == len(asked), asked
    assert any("/gone/f.bin dropped for this file: HTTP 404 Not Found" in n for n in result.file("f.bin")["notes"])


def test_a_mirror_that_disagrees_on_size_is_dropped(builtin: FaultServer, tmp_path: Path) -> None:
    data = content("sizes", 12 * MiB)
    entry = {"url": builtin.add("p/s.bin", data), "mirrors": [builtin.add("old/s.bin", data[:-1])]}
    result = run_cli("run", write_manifest(tmp_path, [entry], defaults=SPREAD), cwd=tmp_path)
    assert result.code == 0, result.stdout
    assert (tmp_path / "mirror/s.bin").read_bytes() == data
    assert any("disagrees on the size" in n for n in result.file("s.bin")["notes"])


def test_the_primary_down_falls_over_to_a_mirror(builtin: FaultServer, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/f.bin"
    data = content("fallover", 3 * MiB)
    entry = {"url": dead, "mirrors": [builtin.add("m/f.bin", data)], "sha256": _sha(data)}
    result = run_cli("run", write_manifest(tmp_path, [entry], defaults={"retries": 0}), cwd=tmp_path)
    assert result.code == 0, result.stdout
    assert (tmp_path / "mirror/f.bin").read_bytes() == data
    assert any("Connection refused" in n and "trying the next mirror" in n for n in result.file("f.bin")["notes"])


def test_when_every_source_fails_the_file_fails(builtin: FaultServer, tmp_path: Path) -> None:
    entry = {"url": builtin.add_error("x/f.bin", 404), "mirrors": [builtin.add_error("y/f.bin", 410)]}
    result = run_cli("run", write_manifest(tmp_path, [entry]), cwd=tmp_path)
    assert result.code == 1
    assert result.file("f.bin")["error"] == "HTTP 410 Gone"


def test_mirror_urls_with_credentials_are_refused(tmp_path: Path) -> None:
    entry = {"url": "http://127.0.0.1:9/f", "mirrors": ["http://u:p@127.0.0.1:9/f", "ftp://h/f"]}
    result = run_cli("check", write_manifest(tmp_path, [entry]), cwd=tmp_path)
    assert result.code == 2
    assert "files[0].mirrors[0]: credentials in a mirror URL would go to another host" in result.stderr
    assert "files[0].mirrors[1]: only http and https" in result.stderr
