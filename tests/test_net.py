"""net in one process against the real FaultServer: what the end-to-end tests cannot reach from outside."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bulkdl.worker import net

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
