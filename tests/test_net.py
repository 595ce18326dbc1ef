"""net in one process against the real FaultServer: what the end-to-end tests cannot reach from outside."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Iterator

import pytest

from bulkdl.values import Budget
from bulkdl.worker import limits, net
from bulkdl.worker.limits import Shared, SharedFlag

from .httpserver import FaultServer, content, etag_of

MiB = 1024**2


@pytest.fixture
def pools() -> Iterator[None]:
    net.start(2)
    yield
    net.stop()


def test_a_connection_goes_on_after_a_304(builtin: FaultServer, pools: None) -> None:
    # http.client refuses a connection's next request while its previous answer is open: every request
    # after a 304 on a kept connection failed (ResponseNotReady: Request-sent) and was sent again on a new
    # one, which a re-run of 500 files showed as a few conditional GETs sent twice.
    data = content("kept", 1000)
    url = builtin.add("kept.bin", data)
    for _ in range(20):
        head, body = net.request(url, {"If-None-Match": etag_of(data)}, last=999, timeout=5)
        body.close()
        assert head.status == 304
    asked = [r for r in builtin.requests() if r.path == "/kept.bin"]
    assert len(asked) == 20 and len({r.conn for r in asked}) == 1, "each 304 cost a new connection"


def test_no_proxy_names_a_host_as_curl_writes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """NO_PROXY=::1 is an IPv6 literal without its brackets, and a name in its Unicode form: urllib3's host
    ("[::1]", "xn--...") matched neither, and the request went to the proxy."""
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "::1,bücher.example")
    net._proxy_for.cache_clear()
    net.stop()
    try:
        for url in ("http://[::1]:8080/f", "http://bücher.example/f"):
            assert not isinstance(net._client(url, net.Tls()), net.urllib3.ProxyManager), url
        assert isinstance(net._client("http://127.0.0.1:8080/f", net.Tls()), net.urllib3.ProxyManager)
    finally:
        net._proxy_for.cache_clear()
        net.stop()


def test_a_thread_waiting_for_a_permit_leaves_a_connection_just_given_back(
    builtin: FaultServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One permit to the host. A thread fetches a slow file, then another 0.3 s later, as a thread of small
    files does; a second thread waits for a permit meanwhile. It used to close the first thread's connection
    the moment it went back to the pool, so the next file connected anew (MIXED: half the connections were
    used once). Now it leaves a connection idle for less than the grace (widened here to 2 s), which the next
    file reuses."""
    monkeypatch.setattr(net, "_REUSE_GRACE", 2.0)
    context = multiprocessing.get_context("spawn")
    slow = builtin.add("slow.bin", content("slow", 100), delay=0.3)
    later = builtin.add("later.bin", content("later", 100))
    other = builtin.add("other.bin", content("other", 100))
    port = int(slow.rsplit(":", 1)[1].split("/", 1)[0])
    stop = SharedFlag(context)
    limits.install(
        Shared(Budget(connections=1, per_host=1, hosts=(limits.host_key("127.0.0.1", port),)), context), stop
    )
    net.start(2)

    failures: list[BaseException] = []

    def fetch(url: str) -> None:
        try:
            _, body = net.request(url, {}, timeout=10)
            while body.read(65536):
                pass
            body.close()
        except BaseException as exc:  # a thread's exception would otherwise be lost
            failures.append(exc)
            raise

    def first_thread() -> None:
        fetch(slow)
        time.sleep(0.3)
        fetch(later)

    try:
        first = threading.Thread(target=first_thread)
        first.start()
        time.sleep(0.1)  # the slow answer holds the only connection: the other thread must wait to connect
        waiter = threading.Thread(target=fetch, args=(other,))
        waiter.start()
        first.join(10)
        waiter.join(10)
        assert not first.is_alive() and not waiter.is_alive()
        assert not failures, failures
    finally:
        stop.set()
        limits.install(None, stop)
        net.stop()
    deadline = time.monotonic() + 10
    while len(conn := {r.path: r.conn for r in builtin.requests()}) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)  # the server logs a request once it has sent the answer: after the client read it
    assert conn["/later.bin"] == conn["/slow.bin"], "the next file had to connect anew"
    assert conn["/other.bin"] != conn["/slow.bin"]
