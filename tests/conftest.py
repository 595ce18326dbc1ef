"""Fixtures: real servers on 127.0.0.1 and a way to run the real CLI against them."""

from __future__ import annotations

import http.client
import json
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest
import trustme
import yaml
from hypothesis import HealthCheck, Phase, settings

from . import nginx
from .httpserver import FaultServer, Request

REPO = Path(__file__).resolve().parent.parent

# Hypothesis's own timing checks (a slow draw, a slow example) fail a test for the load of a shared 2-core
# machine, not for what it tests: timing belongs in benchmarks. Off by default, for every profile.
settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("default")
# `make mutation` reruns the tests once per mutant (`--hypothesis-profile=mutation`, see docs/mutation.md): a
# short sample, the same every time, so that a mutant's verdict does not depend on the draw; a failure is not
# shrunk, since only that it fails counts.
settings.register_profile(
    "mutation",
    parent=settings.get_profile("default"),
    max_examples=20,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
)


class Server(Protocol):
    kind: str
    base_url: str

    def add(self, path: str, data: bytes, **switches: Any) -> str: ...
    def add_error(self, path: str, status: int) -> str: ...
    def requests(self, path: str | None = None) -> list[Request]: ...
    def reset(self) -> None: ...
    def update(self, path: str, data: bytes) -> None: ...


def watermark(server: Server) -> int:
    """A connection serial above every connection opened so far: later requests come from newer ones.

    Responses of a killed run may still be written, and logged, after it died; a watermark keeps them apart
    from the next run's requests where clearing the log by time could not.
    """
    connection = http.client.HTTPConnection(server.base_url.removeprefix("http://"), timeout=10)
    try:
        connection.request("GET", "/__watermark__")
        connection.getresponse().read()
    finally:
        connection.close()
    deadline = time.monotonic() + 5
    while not (marks := server.requests("__watermark__")) and time.monotonic() < deadline:
        time.sleep(0.01)
    return max(r.conn for r in marks)


@pytest.fixture(scope="session")
def _builtin() -> Iterator[FaultServer]:
    server = FaultServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def _nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[nginx.NginxServer | None]:
    if not nginx.available():
        if os.environ.get("CI"):
            pytest.fail("nginx is not installed; .ci/run must install nginx-light")
        yield None
        return
    server = nginx.NginxServer(tmp_path_factory.mktemp("nginx"))
    yield server
    server.close()


@pytest.fixture
def builtin(_builtin: FaultServer) -> Iterator[FaultServer]:
    """The fault-injecting server, emptied for this test; errors in its threads fail the test."""
    _builtin.reset()
    yield _builtin
    assert not _builtin.errors, f"the test server raised: {_builtin.errors!r}"


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    """A private CA, as a mirror on a LAN would have."""
    return trustme.CA()


@pytest.fixture(scope="session")
def _tls_server(ca: trustme.CA) -> Iterator[FaultServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    server = FaultServer(tls=context)
    yield server
    server.close()


@pytest.fixture
def tls_server(_tls_server: FaultServer) -> Iterator[FaultServer]:
    """The fault-injecting server over HTTPS with a certificate of ``ca``, emptied for this test."""
    _tls_server.reset()
    yield _tls_server
    assert not _tls_server.errors, f"the test server raised: {_tls_server.errors!r}"


@pytest.fixture
def ca_pem(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "private-ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture(params=["builtin", "nginx"])
def server(request: pytest.FixtureRequest, _builtin: FaultServer) -> Iterator[Server]:
    """Each end-to-end case runs against the builtin server and against a real nginx."""
    if request.param == "builtin":
        yield request.getfixturevalue("builtin")
        return
    real = request.getfixturevalue("_nginx")
    if real is None:
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    real.reset()
    yield real


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str
    report: dict[str, Any] | None

    def file(self, name: str) -> dict[str, Any]:
        assert self.report is not None
        return next(f for f in self.report["files"] if f["path"] == name)


def run_cli(*args: str | Path, cwd: Path, timeout: float = 90) -> Run:
    """Run ``python -m bulkdl`` as a user would, with stdout a pipe (no terminal)."""
    report = cwd / "report.json"
    report.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "bulkdl", *map(str, args)]
    if args and args[0] == "run":
        argv += ["--report", str(report)]
    done = subprocess.run(
        argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=cli_env(), stdin=subprocess.DEVNULL
    )
    loaded = json.loads(report.read_text()) if report.exists() else None
    return Run(done.returncode, done.stdout, done.stderr, loaded)


def cli_env(**extra: str) -> dict[str, str]:
    """The environment a test's bulkdl runs in: ours, minus any proxy a machine may set for its own use."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    return {**env, "PYTHONPATH": str(REPO), **extra}


def write_manifest(directory: Path, files: list[Any], **top: Any) -> Path:
    path = directory / "manifest.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "dest": "mirror", **top, "files": files}, sort_keys=False))
    return path
