"""What one request costs the client libraries bulkdl could stand on, with nothing of bulkdl's around them.

    python -m bench.floor [--requests 3000]

Starts the benchmark's nginx over a SCALE tree, then sends the same GETs (Range, a 1.3 KiB body) one after
another over one kept-alive connection, first through urllib3's HTTPConnectionPool (what bulkdl uses), then
through http.client alone, and prints the CPU and wall time of one request for each, with the medians of
three passes. A floor: no per-file engine built on the library does a file in less CPU than this, and a
mirror of N small files on C cores takes at least N times the CPU figure over C.
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import urllib3

from tests.nginx import NginxServer

from . import scale


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.floor")
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bulkdl-floor-") as tmp:
        nginx = NginxServer(Path(tmp) / "nginx")
        try:
            data = scale.generate(nginx.root, args.requests)
            paths = [f"/{rel}" for rel, _, _ in data.files]
            host, port = nginx.base_url.removeprefix("http://").split("/")[0].split(":")
            for name, one in (("urllib3", _urllib3(host, int(port))), ("http.client", _http_client(host, int(port)))):
                cpu, wall = zip(*(_pass(one, paths) for _ in range(3)), strict=True)
                print(f"{name}: {statistics.median(cpu):.0f} µs CPU, {statistics.median(wall):.0f} µs wall a request")
        finally:
            nginx.close()
    return 0


def _pass(one: Callable[[str], None], paths: list[str]) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    for path in paths:
        one(path)
    return (time.process_time() - cpu) / len(paths) * 1e6, (time.perf_counter() - wall) / len(paths) * 1e6


_HEADERS = {"Range": "bytes=0-", "User-Agent": "bulkdl-floor", "Accept-Encoding": "identity"}


def _urllib3(host: str, port: int) -> Callable[[str], None]:
    pool = urllib3.HTTPConnectionPool(host, port, maxsize=1)

    def one(path: str) -> None:
        response = pool.urlopen("GET", path, headers=_HEADERS, preload_content=False, retries=False, redirect=False)
        if response.status != 206:  # a floor measured over 404s would be no floor of a download
            raise SystemExit(f"bench.floor: {path} answered {response.status}")
        response.drain_conn()
        response.release_conn()

    return one


def _http_client(host: str, port: int) -> Callable[[str], None]:
    connection = http.client.HTTPConnection(host, port)

    def one(path: str) -> None:
        connection.request("GET", path, headers=_HEADERS)
        connection.getresponse().read()

    return one


if __name__ == "__main__":
    raise SystemExit(main())
