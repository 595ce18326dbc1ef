"""net in one process against the real FaultServer: what the end-to-end tests cannot reach from outside."""

from __future__ import annotations

import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from bulkdl.errors import TransientError
from bulkdl.worker import net

from .httpserver import FaultServer, content

MiB = 1024**2


@pytest.fixture
def pools() -> Iterator[None]:
    net.start(2)
    yield
    net.stop()


@pytest.mark.timeout(30)  # a hang, the bug this guards against, fails here instead of stalling the suite
@pytest.mark.usefixtures("pools")
def test_a_leaked_connection_becomes_an_error_not_a_hang(builtin: FaultServer) -> None:
    url = builtin.add("big.bin", content("big", 4 * MiB))
    leaked = [net.request(url, {}, timeout=1)[1] for _ in range(2)]  # both connections out, never released
    try:
        started = time.monotonic()
        with pytest.raises(TransientError) as caught:
            net.request(url, {}, timeout=1)
        assert time.monotonic() - started < 5
        port = urlsplit(url).port
        assert str(caught.value) == f"no free connection to 127.0.0.1:{port} in 1 s: all 2 in use"
    finally:
        for body in leaked:
            body.close()
    head, body = net.request(url, {}, last=9, timeout=1)  # released: the pool serves again
    with body:
        assert (head.status, body.read(100)) == (206, content("big", 10))
