"""Faults over TLS: a head that drips, a TLS stream broken mid-body. The TLS layer must not change the outcome."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from .conftest import run_cli, write_manifest
from .httpserver import FaultServer, content

MiB = 1024**2


@pytest.mark.parametrize("switch", [{"trickle_headers": 1.0}, {"endless_headers": "continue"}])
def test_a_head_that_never_ends_over_tls(
    tls_server: FaultServer, tmp_path: Path, ca_pem: Path, switch: dict[str, object]
) -> None:
    url = tls_server.add("head.bin", content("head", 1000), **switch)
    manifest = write_manifest(tmp_path, [url], ca_bundle=ca_pem.name, defaults={"timeout": 1, "retries": 1})
    started = time.monotonic()
    result = run_cli("run", manifest, cwd=tmp_path, timeout=60)
    elapsed = time.monotonic() - started
    assert result.code == 1, result.stdout
    assert result.file("head.bin")["error"] == "timed out waiting for the response headers (gave up after 2 attempts)"
    assert "Traceback" not in result.stdout + result.stderr
    assert elapsed < 10, f"two attempts with a 1 s deadline took {elapsed:.1f} s"


def test_a_tls_stream_broken_mid_body_is_resumed(tls_server: FaultServer, tmp_path: Path, ca_pem: Path) -> None:
    # Past the handshake, a TLS error is transport breakage like a reset: the segment resumes from the byte
    # reached. Only a handshake or a certificate failure is permanent.
    data = content("garbled-tls", 3 * MiB)
    url = tls_server.add("broken.bin", data, drop_after=MiB + 17, drops=1, drop_garbage=True)
    manifest = write_manifest(tmp_path, [url], ca_bundle=ca_pem.name, defaults={"segments": 1, "retries": 2})
    result = run_cli("run", manifest, cwd=tmp_path)
    assert result.code == 0, result.stdout
    assert (tmp_path / "mirror/broken.bin").read_bytes() == data
    [note] = [n for n in result.file("broken.bin")["notes"] if "retry" in n]
    assert note.startswith("1 retry; last: connection broken: TLS: "), note
    ranges = [r.range for r in tls_server.requests("broken.bin")]
    assert ranges[-1] == f"bytes={MiB + 17}-{3 * MiB - 1}", ranges
