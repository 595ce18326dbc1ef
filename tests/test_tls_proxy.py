"""HTTPS against a private CA (trustme), per-entry insecure, and HTTP(S)_PROXY / NO_PROXY."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import cli_env, run_cli, write_manifest
from .httpserver import FaultServer, content
from .proxy import ForwardProxy


def test_https_with_the_manifests_ca_bundle(tls_server: FaultServer, tmp_path: Path, ca_pem: Path) -> None:
    data = content("tls", 3 * 1024**2)
    url = tls_server.add("secure.bin", data)
    manifest = write_manifest(
        tmp_path, [url], ca_bundle=ca_pem.name, defaults={"segments": 3, "min_segment_size": "1MiB"}
    )
    result = run_cli("run", manifest, cwd=tmp_path)
    assert result.code == 0, result.stdout
    assert (tmp_path / "mirror/secure.bin").read_bytes() == data


def test_https_with_ca_bundle_on_the_command_line(tls_server: FaultServer, tmp_path: Path, ca_pem: Path) -> None:
    url = tls_server.add("flag.bin", b"flag")
    result = run_cli("run", write_manifest(tmp_path, [url]), "--ca-bundle", ca_pem, cwd=tmp_path)
    assert result.code == 0, result.stdout


def test_an_untrusted_certificate_fails_once_and_clearly(tls_server: FaultServer, tmp_path: Path) -> None:
    url = tls_server.add("untrusted.bin", b"x")
    result = run_cli("run", write_manifest(tmp_path, [url], defaults={"retries": 3}), cwd=tmp_path)
    assert result.code == 1
    error = result.file("untrusted.bin")["error"]
    assert error.startswith("TLS failed: ") and "CERTIFICATE_VERIFY_FAILED" in error, error
    assert not (tmp_path / "mirror/untrusted.bin").exists()


def test_insecure_is_per_entry_and_said_in_the_summary(tls_server: FaultServer, tmp_path: Path) -> None:
    url = tls_server.add("lax.bin", b"lax")
    result = run_cli("run", write_manifest(tmp_path, [{"url": url, "insecure": True}]), cwd=tmp_path)
    assert result.code == 0, result.stdout
    assert "insecure: TLS certificates were not verified for this file" in result.stdout
    assert "InsecureRequestWarning" not in result.stderr
    refused = run_cli("check", write_manifest(tmp_path, [url], defaults={"insecure": True}), cwd=tmp_path)
    assert refused.code == 2 and "defaults.insecure: allowed per entry only" in refused.stderr


def test_missing_ca_bundle(tmp_path: Path) -> None:
    result = run_cli("check", write_manifest(tmp_path, ["https://127.0.0.1:9/x"], ca_bundle="nope.pem"), cwd=tmp_path)
    assert result.code == 2 and ": ca_bundle: no such file: " in result.stderr
    flag = run_cli("run", write_manifest(tmp_path, ["https://127.0.0.1:9/x"]), "--ca-bundle", "nope.pem", cwd=tmp_path)
    assert flag.code == 2 and "no such file: nope.pem" in flag.stderr


@pytest.mark.parametrize(("no_proxy", "proxied"), [("", True), ("127.0.0.1", False)])
def test_http_proxy_and_no_proxy(builtin: FaultServer, tmp_path: Path, no_proxy: str, proxied: bool) -> None:
    data = content("proxied", 100_000)
    url = builtin.add("via.bin", data)
    proxy = ForwardProxy()
    try:
        env = cli_env(HTTP_PROXY=proxy.url, NO_PROXY=no_proxy)
        argv = [sys.executable, "-m", "bulkdl", "run", str(write_manifest(tmp_path, [url]))]
        done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        assert (tmp_path / "mirror/via.bin").read_bytes() == data
        assert proxy.seen == ([url] if proxied else [])
    finally:
        proxy.close()
