"""A real nginx on 127.0.0.1 with the FaultServer interface, for the cases real servers decide.

Files live in a temp root; a path added with ``ranges=False`` goes under ``/norange/`` where nginx has
``max_ranges 0``, and ``add_error`` uses locations that return the status. The request log is nginx's own
access log, so tests assert on what the server really sent.

The benchmark can ask for more servers on the same root and log: one capping each connection's rate, and one
("WAN") that holds every response back before its first byte with the echo module's ``echo_sleep`` and then
serves the file from a named location, so Range, If-Range, ETag and 304s behave as on the plain server.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from .httpserver import Request

ERROR_STATUSES = (401, 403, 410, 500, 503)
_LOG_FORMAT = "$request_method|$uri|$http_range|$http_if_range|$status|$body_bytes_sent|$connection"

ECHO_MODULE = Path("/usr/lib/nginx/modules/ngx_http_echo_module.so")  # Debian: libnginx-mod-http-echo
_CONFIG = """{modules}
daemon off;
master_process off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    log_format bulkdl '{log_format}';
    access_log {tmp}/access.log bulkdl;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    default_type application/octet-stream;
    sendfile on;
    keepalive_requests 100000;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location /norange/ {{ max_ranges 0; }}
        location /slow/ {{ limit_rate 16m; }}
{errors}
    }}
{extra}
}}
"""


def available() -> bool:
    return shutil.which("nginx") is not None or Path("/usr/sbin/nginx").exists()


def _binary() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class NginxServer:
    kind = "nginx"

    def __init__(self, tmp: Path, capped_rate: str | None = None, delay: float | None = None) -> None:
        """With ``capped_rate`` (nginx units, "20m"), a second server on ``capped_url`` limits each connection;
        with ``delay`` (seconds), one on ``wan_url`` waits that long before each response's first byte."""
        self._tmp = tmp
        self.root = tmp / "root"
        self.root.mkdir(parents=True)
        self._port = _free_port()
        errors = "\n".join(f"        location /status{code}/ {{ return {code}; }}" for code in ERROR_STATUSES)
        extra: list[str] = []
        modules = ""
        if capped_rate is not None:
            capped_port = _free_port()
            capped = f"listen 127.0.0.1:{capped_port}; root {self.root}; limit_rate {capped_rate};"
            extra.append(f"    server {{ {capped} }}")
            self.capped_url = f"http://127.0.0.1:{capped_port}"
        if delay is not None:
            wan_port, modules = _free_port(), f"load_module {ECHO_MODULE};"
            extra.append(
                f"    server {{ listen 127.0.0.1:{wan_port}; root {self.root};\n"
                f"        location / {{ echo_sleep {delay}; echo_exec @static; }}\n"
                "        location @static { }\n    }"
            )
            self.wan_url = f"http://127.0.0.1:{wan_port}"
        config = _CONFIG.format(
            modules=modules,
            tmp=tmp,
            root=self.root,
            port=self._port,
            log_format=_LOG_FORMAT,
            errors=errors,
            extra="\n".join(extra),
        )
        (tmp / "nginx.conf").write_text(config)
        self._process = subprocess.Popen(
            [_binary(), "-c", str(tmp / "nginx.conf"), "-p", str(tmp)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.base_url = f"http://127.0.0.1:{self._port}"
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                stderr = self._process.stderr.read().decode() if self._process.stderr else ""
                raise RuntimeError(f"nginx exited: {stderr}{(self._tmp / 'error.log').read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self._port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("nginx did not start listening within 10 s")

    def add(self, path: str, data: bytes, *, ranges: bool = True, slow: bool = False, **switches: Any) -> str:
        if switches:
            raise NotImplementedError(f"nginx cannot inject {sorted(switches)}; use the builtin server")
        path = self._served_as(path, ranges, slow)
        target = self.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return f"{self.base_url}/{path}"

    @staticmethod
    def _served_as(path: str, ranges: bool = True, slow: bool = False) -> str:
        prefix = "slow/" if slow else "" if ranges else "norange/"
        return prefix + path.lstrip("/")

    def update(self, path: str, data: bytes) -> None:
        """Rewrite the file; nginx derives ETag and Last-Modified from size and mtime, so move the mtime on."""
        target = next(t for t in (self.root / p for p in self._prefixed(path)) if t.exists())
        before = target.stat().st_mtime
        target.write_bytes(data)
        os.utime(target, (before + 10, before + 10))

    def _prefixed(self, path: str) -> list[str]:
        return [prefix + path.lstrip("/") for prefix in ("", "slow/", "norange/")]

    def clear_log(self) -> None:
        (self._tmp / "access.log").write_text("")  # nginx appends with O_APPEND: truncating is safe

    def add_error(self, path: str, status: int) -> str:
        if status == 404:
            return f"{self.base_url}/{path.lstrip('/')}"
        assert status in ERROR_STATUSES, status
        return f"{self.base_url}/status{status}/{path.lstrip('/')}"

    def requests(self, path: str | None = None) -> list[Request]:
        log = self._tmp / "access.log"
        entries = [_parse(line) for line in log.read_text().splitlines()] if log.exists() else []
        if path is None:
            return entries
        wanted = "/" + path.lstrip("/")
        served_as = {"/" + p for p in self._prefixed(path)} | {f"/status{code}{wanted}" for code in ERROR_STATUSES}
        return [r for r in entries if r.path in served_as]

    @property
    def errors(self) -> list[BaseException]:
        return []

    def reset(self) -> None:
        shutil.rmtree(self.root)
        self.root.mkdir()
        self.clear_log()

    def close(self) -> None:
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._process.stderr:
            self._process.stderr.close()


def _parse(line: str) -> Request:
    method, path, range_, if_range, status, sent, conn = line.split("|")
    return Request(
        method=method,
        path=path,
        range=None if range_ == "-" else range_,
        if_range=None if if_range == "-" else if_range,
        status=int(status),
        sent=int(sent),
        conn=int(conn),
    )
