"""Credentials from the environment, the URL and netrc reach the server and nowhere else."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bulkdl.credentials import redact_url, scrub

from .conftest import cli_env, run_cli, write_manifest
from .httpserver import FaultServer, content

SECRET = "s3cr3t-Value-42"


def _everything_written(tmp_path: Path, *outputs: str) -> str:
    """What a user or a log could see: the outputs, and every file the run left (state, report)."""
    files = [
        p.read_bytes().decode(errors="replace")
        for p in tmp_path.rglob("*")
        if p.is_file() and p.name != "manifest.yaml"
    ]
    return "\n".join([*outputs, *files])


def _run(tmp_path: Path, manifest: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "bulkdl", "run", str(manifest), "--report", str(tmp_path / "report.json")]
    full_env = cli_env(**env)
    return subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=60, env=full_env)


def test_header_from_the_environment(builtin: FaultServer, tmp_path: Path) -> None:
    ok = builtin.add("ok.bin", content("ok", 3000))
    denied = builtin.add_error("denied.bin", 401)
    headers = {"Authorization": "Bearer ${MIRROR_TOKEN}", "X-Client": "${CLIENT}-v1"}
    manifest = write_manifest(tmp_path, [ok, denied], defaults={"headers": headers})
    done = _run(tmp_path, manifest, {"MIRROR_TOKEN": SECRET, "CLIENT": "nightly"})
    assert done.returncode == 1, done.stdout
    sent = builtin.requests("ok.bin")[0].headers
    assert sent["Authorization"] == f"Bearer {SECRET}" and sent["X-Client"] == "nightly-v1"
    assert "HTTP 401" in done.stdout
    assert SECRET not in _everything_written(tmp_path, done.stdout, done.stderr)


def test_a_missing_variable_is_a_manifest_error(tmp_path: Path) -> None:
    manifest = write_manifest(
        tmp_path, ["http://127.0.0.1:9/a"], defaults={"headers": {"Authorization": "Bearer ${NOPE_X}"}}
    )
    env = {k: v for k, v in os.environ.items() if k != "NOPE_X"}
    result = run_cli("check", manifest, cwd=tmp_path)
    assert "NOPE_X" not in env and result.code == 2
    assert result.stderr.strip().endswith("defaults.headers.Authorization: environment variable NOPE_X is not set")


def test_userinfo_becomes_basic_auth_and_is_shown_redacted(builtin: FaultServer, tmp_path: Path) -> None:
    url = builtin.add("private.bin", content("private", 5000))
    with_login = url.replace("http://", f"http://alice:{SECRET}@")
    manifest = write_manifest(tmp_path, [with_login, with_login.replace("private.bin", "missing.bin")])
    done = _run(tmp_path, manifest, {})
    assert done.returncode == 1
    token = base64.b64encode(f"alice:{SECRET}".encode()).decode()
    assert builtin.requests("private.bin")[0].headers["Authorization"] == f"Basic {token}"
    report = (tmp_path / "report.json").read_text()
    assert url.replace("http://", "http://alice:***@") in report
    written = _everything_written(tmp_path, done.stdout, done.stderr)
    assert SECRET not in written and token not in written


def test_netrc_supplies_a_login(builtin: FaultServer, tmp_path: Path) -> None:
    url = builtin.add("netrc.bin", content("netrc", 100))
    home = tmp_path / "home"
    home.mkdir()
    (home / ".netrc").write_text(f"machine 127.0.0.1 login bob password {SECRET}\n")
    (home / ".netrc").chmod(0o600)
    done = _run(tmp_path, write_manifest(tmp_path, [url]), {"HOME": str(home)})
    assert done.returncode == 0, done.stderr
    token = base64.b64encode(f"bob:{SECRET}".encode()).decode()
    assert builtin.requests("netrc.bin")[0].headers["Authorization"] == f"Basic {token}"
    assert SECRET not in _everything_written(tmp_path / "mirror", done.stdout, done.stderr)


def test_a_netrc_others_can_read_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / ".netrc").write_text(f"machine 127.0.0.1 login bob password {SECRET}\n")
    (home / ".netrc").chmod(0o644)
    done = _run(tmp_path, write_manifest(tmp_path, ["http://127.0.0.1:9/x"]), {"HOME": str(home)})
    assert done.returncode == 2
    assert "netrc" in done.stderr and "too permissive" in done.stderr and SECRET not in done.stderr


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://u:p@h/x", "http://u:***@h/x"),
        ("https://h/x?token=abc&page=2", "https://h/x?token=***&page=2"),
        ("https://h/x?X-Amz-Signature=f00&X-Amz-Date=1", "https://h/x?X-Amz-Signature=***&X-Amz-Date=1"),
        ("https://h/x?api_key=1&sig=2&name=a%20b", "https://h/x?api_key=***&sig=***&name=a%20b"),
        ("http://h:8080/plain", "http://h:8080/plain"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_scrub_hides_the_longest_secret_first() -> None:
    assert scrub("Basic abc123 failed for abc", ("abc", "Basic abc123")) == "*** failed for ***"
