"""Servers that lie, stall or trickle: exact bytes or a clean one-line failure, never a corrupt file."""

from __future__ import annotations

import email.utils
import gzip
import hashlib
import time
from pathlib import Path

import pytest

from .conftest import Server, run_cli, write_manifest
from .httpserver import FaultServer, content, wire

MiB = 1024**2
SPLIT = {"segments": 4, "min_segment_size": "1MiB", "retries": 2}


def _only_file(tmp_path: Path) -> list[str]:
    """Everything under tmp_path but bulkdl's own state and the test's manifest/report."""
    skip = {"manifest.yaml", "report.json"}
    return sorted(
        str(p.relative_to(tmp_path))
        for p in tmp_path.rglob("*")
        if p.is_file() and ".bulkdl" not in p.parts and p.name not in skip
    )


def test_segments_answered_with_200_fall_back_to_one_stream(builtin: FaultServer, tmp_path: Path) -> None:
    data = content("lie200", 6 * MiB)
    url = builtin.add("lie200.bin", data, honour_ranges=1)  # the probe gets 206, every later request 200
    result = run_cli("run", write_manifest(tmp_path, [url], defaults=SPLIT), cwd=tmp_path)
    assert result.code == 0, result.stdout
    assert (tmp_path / "mirror/lie200.bin").read_bytes() == data, "a full body never spliced into a segment"
    assert "server ignored Range; downloaded as one stream" in result.file("lie200.bin")["notes"]


def test_wrong_content_range_is_rejected(builtin: FaultServer, tmp_path: Path) -> None:
    data = content("shift", 6 * MiB)
    url = builtin.add("shift.bin", data, shift_range=7)
    result = run_cli("run", write_manifest(tmp_path, [url], defaults=SPLIT), cwd=tmp_path)
    assert result.code == 0, result.stdout
    assert (tmp_path / "mirror/shift.bin").read_bytes() == data
    assert any(
        note.startswith("asked for bytes ") and "downloaded as one stream" in note
        for note in result.file("shift.bin")["notes"]
    )


def test_more_bytes_than_content_length_never_reach_the_file(builtin: FaultServer, tmp_path: Path) -> None:
    files = {f"extra{i}.bin": content(f"extra{i}", 20_000 + i) for i in range(4)}
    urls = [builtin.add(name, data, extra_bytes=3000) for name, data in files.items()]
    result = run_cli("run", write_manifest(tmp_path, urls, workers=1, defaults={"retries": 3}), cwd=tmp_path)
    assert result.code == 0, result.stdout
    for name, data in files.items():
        assert (tmp_path / "mirror" / name).read_bytes() == data


def test_validators_that_keep_changing_fail_cleanly(builtin: FaultServer, tmp_path: Path) -> None:
    url = builtin.add("flux.bin", content("flux", 4 * MiB), new_etag_each=True)
    result = run_cli("run", write_manifest(tmp_path, [url], defaults=SPLIT), cwd=tmp_path)
    assert result.code == 1
    assert result.file("flux.bin")["error"].startswith("remote file changed during download (ETag changed from ")
    assert not (tmp_path / "mirror/flux.bin").exists()


def test_a_new_version_published_mid_download_restarts_once(builtin: FaultServer, tmp_path: Path) -> None:
    old, new = content("v1", 4 * MiB), content("v2", 5 * MiB)
    url = builtin.add("pub.bin", old, next_data=new, switch_after=2)  # the probe and one segment see v1
    result = run_cli("run", write_manifest(tmp_path, [url], defaults=SPLIT), cwd=tmp_path)
    assert result.code == 0, result.stdout
    assert (tmp_path / "mirror/pub.bin").read_bytes() == new
    assert any("remote file changed during download" in n for n in result.file("pub.bin")["notes"])


@pytest.mark.parametrize("framing", ["chunked", "close_delimited"])
def test_unknown_length_is_one_stream_sized_at_the_end(builtin: FaultServer, tmp_path: Path, framing: str) -> None:
    data = content(framing, 3 * MiB + 11)
    url = builtin.add(f"{framing}.bin", data, **{framing: True})
    result = run_cli(
        "run", write_manifest(tmp_path, [{"url": url, "sha256": hashlib.sha256(data).hexdigest()}]), cwd=tmp_path
    )
    assert result.code == 0, result.stdout
    assert (tmp_path / f"mirror/{framing}.bin").read_bytes() == data
    assert result.file(f"{framing}.bin")["bytes"] == len(data)
    assert len(builtin.requests(f"{framing}.bin")) == 1


def test_content_encoding_is_stored_raw_and_said(builtin: FaultServer, tmp_path: Path) -> None:
    raw = gzip.compress(content("text", 500_000) * 2)
    url = builtin.add("page.html", raw, content_encoding="gzip")
    result = run_cli("run", write_manifest(tmp_path, [url]), cwd=tmp_path)
    assert result.code == 0
    assert (tmp_path / "mirror/page.html").read_bytes() == raw, "the bytes served, not decoded"
    assert result.file("page.html")["sha256"] == hashlib.sha256(raw).hexdigest()
    assert "server sent Content-Encoding: gzip; stored as received" in result.file("page.html")["notes"]
    assert "Content-Encoding: gzip" in result.stdout
    assert builtin.requests("page.html")[0].headers["Accept-Encoding"] == "identity"


def test_content_disposition_never_chooses_the_path(builtin: FaultServer, tmp_path: Path) -> None:
    headers = {"Content-Disposition": 'attachment; filename="../../evil.sh"'}
    url = builtin.add("innocent.txt", b"hello", headers=headers)
    assert run_cli("run", write_manifest(tmp_path, [url]), cwd=tmp_path).code == 0
    assert _only_file(tmp_path) == ["mirror/innocent.txt"]


@pytest.mark.parametrize("status", [401, 403, 410])
def test_permanent_statuses_fail_at_once(server: Server, tmp_path: Path, status: int) -> None:
    url = server.add_error(f"perm{status}.bin", status)
    result = run_cli(
        "run", write_manifest(tmp_path, [{"url": url, "path": "p.bin"}], defaults={"retries": 5}), cwd=tmp_path
    )
    assert result.code == 1
    assert result.file("p.bin")["error"].startswith(f"HTTP {status} ")
    assert len(server.requests(f"perm{status}.bin")) == 1, "no retries for a permanent error"


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_are_retried(server: Server, tmp_path: Path, status: int) -> None:
    url = server.add_error(f"tmp{status}.bin", status)
    result = run_cli(
        "run", write_manifest(tmp_path, [{"url": url, "path": "t.bin"}], defaults={"retries": 2}), cwd=tmp_path
    )
    assert result.code == 1
    assert result.file("t.bin")["error"].endswith("(gave up after 3 attempts)")
    assert len(server.requests(f"tmp{status}.bin")) == 3


def test_429_with_an_http_date_retry_after(builtin: FaultServer, tmp_path: Path) -> None:
    when = int(time.time()) + 3  # whole seconds, as an HTTP date has them
    soon = email.utils.formatdate(when, usegmt=True)
    data = content("busy", 1000)
    url = builtin.add("busy.bin", data, fail_first=1, fail_status=429, retry_after=soon)
    result = run_cli("run", write_manifest(tmp_path, [url]), cwd=tmp_path)
    assert result.code == 0 and (tmp_path / "mirror/busy.bin").read_bytes() == data
    first, second = builtin.requests("busy.bin")
    assert (first.status, second.status) == (429, 206)
    assert second.logged >= when - 0.01, "the retry did not wait for the date Retry-After gave"


@pytest.mark.timeout(60)
def test_retry_after_is_capped(builtin: FaultServer, tmp_path: Path) -> None:
    url = builtin.add("later.bin", b"later", fail_first=1, retry_after="86400")
    result = run_cli("run", write_manifest(tmp_path, [url], defaults={"max_retry_after": 1}), cwd=tmp_path)
    assert result.code == 0, "a day-long Retry-After would hang the run without the cap"
    first, second = builtin.requests("later.bin")
    # Honoured up to the cap: not the first backoff's uniform(0, 0.5) s, and not a day.
    assert 0.95 <= second.logged - first.logged < 5


def test_a_server_that_promises_more_and_hangs_is_retried(builtin: FaultServer, tmp_path: Path) -> None:
    data = content("hang", 3 * MiB)
    url = builtin.add("hang.bin", data, stall_after=MiB + 5, stalls=1)
    result = run_cli("run", write_manifest(tmp_path, [url], defaults={"segments": 1, "timeout": 1}), cwd=tmp_path)
    assert result.code == 0, result.stdout
    assert (tmp_path / "mirror/hang.bin").read_bytes() == data
    # The hung response is logged only when the server gives up holding it; the retry is there at once.
    assert f"bytes={MiB + 5}-{3 * MiB - 1}" in [r.range for r in builtin.requests("hang.bin")]
    assert any(n.startswith("1 retry; last: timed out") for n in result.file("hang.bin")["notes"])


def test_a_trickle_is_dropped_for_a_fresh_connection(builtin: FaultServer, tmp_path: Path) -> None:
    data = content("trickle", MiB)
    url = builtin.add("trickle.bin", data, rate=4000, rated=1)  # the first connection trickles, the next is fine
    settings = {"segments": 1, "min_speed": "64KiB", "stall_time": 1}
    result = run_cli("run", write_manifest(tmp_path, [url], defaults=settings), cwd=tmp_path)
    assert result.code == 0, result.stdout
    assert (tmp_path / "mirror/trickle.bin").read_bytes() == data
    [note] = [n for n in result.file("trickle.bin")["notes"] if "retry" in n]
    assert note.startswith("1 retry; last: too slow: ") and note.endswith("(min_speed is 65536 B/s)"), note
    # The trickling probe is logged only once the server notices the client left; the retry is there at once.
    retry = [r for r in builtin.requests("trickle.bin") if not (r.range or "").startswith("bytes=0-")]
    assert len(retry) == 1 and retry[0].range.startswith("bytes=") and retry[0].range.endswith(f"-{MiB - 1}")


def test_a_206_without_a_usable_content_range_is_retried_then_fails(builtin: FaultServer, tmp_path: Path) -> None:
    url = builtin.add("garbled.bin", content("garbled", 5000), garble_content_range=True)
    result = run_cli("run", write_manifest(tmp_path, [url], defaults={"retries": 1}), cwd=tmp_path)
    assert result.code == 1
    assert result.file("garbled.bin")["error"] == (
        "206 response without a usable Content-Range from 127.0.0.1 (gave up after 2 attempts)"
    )
    assert not (tmp_path / "mirror/garbled.bin").exists()


# Numbers in headers: only ASCII digits within a file's reach count. "²" passes str.isdigit() and then int()
# raises; http.client reads headers as Latin-1, so the wire brings "\u0663" as mojibake, but the unit tests in
# test_heads.py check that the Unicode digits themselves are refused too.
ODD_NUMBERS = ["\u0663", "\u00b2", "-1", str(10**30)]  # Arabic-Indic 3, superscript 2, negative, huge


@pytest.mark.parametrize("length", ODD_NUMBERS, ids=["arabic", "superscript", "negative", "huge"])
def test_an_unreadable_content_length_fails_cleanly(builtin: FaultServer, tmp_path: Path, length: str) -> None:
    url = builtin.add("len.bin", content("len", 5000), ranges=False, content_length=length)
    result = run_cli("run", write_manifest(tmp_path, [url], defaults={"retries": 1, "timeout": 2}), cwd=tmp_path)
    assert result.code == 1, result.stdout
    assert result.file("len.bin")["error"] == (
        f"unusable Content-Length {wire(length)!r} from 127.0.0.1 (gave up after 2 attempts)"
    )
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "mirror/len.bin").exists()


@pytest.mark.parametrize(
    "content_range",
    ["bytes 9-0/5000", "bytes 0-5000/5000", "bytes \u0660-\u0669/5000", f"bytes 0-{10**30}/*", "bytes 0-9/-5000"],
    ids=["end-before-start", "end-past-total", "arabic", "huge", "negative-total"],
)
def test_an_unusable_content_range_is_retried_then_fails(
    builtin: FaultServer, tmp_path: Path, content_range: str
) -> None:
    url = builtin.add("cr.bin", content("cr", 5000), content_range=content_range)
    result = run_cli("run", write_manifest(tmp_path, [url], defaults={"retries": 1}), cwd=tmp_path)
    assert result.code == 1, result.stdout
    assert result.file("cr.bin")["error"] == (
        "206 response without a usable Content-Range from 127.0.0.1 (gave up after 2 attempts)"
    )
    assert len(builtin.requests("cr.bin")) == 2
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize("wait", ODD_NUMBERS, ids=["arabic", "superscript", "negative", "huge"])
def test_an_unreadable_retry_after_is_ignored(builtin: FaultServer, tmp_path: Path, wait: str) -> None:
    data = content("ra", 1000)
    url = builtin.add("ra.bin", data, fail_first=1, retry_after=wait)
    manifest = write_manifest(tmp_path, [url], defaults={"retries": 1, "max_retry_after": 2})
    result = run_cli("run", manifest, cwd=tmp_path)
    assert result.code == 0, result.stdout + result.stderr
    assert (tmp_path / "mirror/ra.bin").read_bytes() == data
    first, second = builtin.requests("ra.bin")
    if wait.isascii() and wait.isdigit():  # huge: honoured up to max_retry_after
        assert second.logged - first.logged >= 1.9
    else:  # not a number: the first backoff, uniform(0, 0.5) s; "٣" read as 3 would wait 2 s (the cap)
        assert second.logged - first.logged < 1.5


@pytest.mark.parametrize(
    ("switch", "error"),
    [
        ({"trickle_headers": 1.0}, "timed out waiting for the response headers"),
        ({"endless_headers": "continue"}, "timed out waiting for the response headers"),
        ({"endless_headers": "many"}, "response head too large: got more than 100 headers"),
        ({"endless_headers": "long"}, "response head too large: got more than 65536 bytes when reading header line"),
    ],
    ids=["trickle", "endless-100-continue", "endless-lines", "endless-line"],
)
def test_a_head_that_never_ends_fails_cleanly_and_soon(
    builtin: FaultServer, tmp_path: Path, switch: dict[str, object], error: str
) -> None:
    # The read timeout bounds each recv; a head that drips a byte at a time never trips it.
    url = builtin.add("head.bin", content("head", 1000), **switch)
    manifest = write_manifest(tmp_path, [url], defaults={"timeout": 1, "retries": 1})
    started = time.monotonic()
    result = run_cli("run", manifest, cwd=tmp_path, timeout=60)
    elapsed = time.monotonic() - started
    assert result.code == 1, result.stdout
    assert result.file("head.bin")["error"] == f"{error} (gave up after 2 attempts)"
    assert "Traceback" not in result.stdout + result.stderr
    assert len(builtin.requests("head.bin")) == 2
    assert elapsed < 10, f"two attempts with a 1 s deadline took {elapsed:.1f} s"


@pytest.mark.parametrize(
    ("switches", "segmented"),
    [
        ({}, True),  # Content-Length, ranges
        ({"close_delimited": True}, True),  # 206 + Content-Range, no Content-Length: the close ends each body
        ({"close_delimited": True, "drop_after": 300_000, "drops": 2}, True),  # a close too early: resumed
        ({"ranges": False}, False),
        ({"ranges": False, "close_delimited": True}, False),
    ],
    ids=["length", "close-delimited-ranges", "close-delimited-short", "length-no-ranges", "close-delimited"],
)
def test_an_http10_server_that_closes_after_every_answer(
    builtin: FaultServer, tmp_path: Path, switches: dict[str, object], segmented: bool
) -> None:
    data = content("http10", 6 * MiB + 5)
    url = builtin.add("old.bin", data, http10=True, **switches)
    digest = hashlib.sha256(data).hexdigest()
    result = run_cli("run", write_manifest(tmp_path, [{"url": url, "sha256": digest}], defaults=SPLIT), cwd=tmp_path)
    assert result.code == 0, result.stdout
    assert (tmp_path / "mirror/old.bin").read_bytes() == data
    requests = builtin.requests("old.bin")
    assert len({r.conn for r in requests}) == len(requests), "a new connection for every request"
    if segmented:
        assert {r.status for r in requests} == {206} and len(requests) >= 4, [r.range for r in requests]
        assert sum(r.sent for r in requests) == len(data), "each byte once: every body ended where it should"
    else:
        assert [r.status for r in requests] == [200] and result.file("old.bin")["bytes"] == len(data)


@pytest.mark.parametrize("date", ["Fri, 31 Dec 9999 23:59:59 GMT", "Mon, 01 Jan 99999999999999999999 00:00:00 GMT"])
def test_a_last_modified_no_mtime_can_hold_is_not_stamped(builtin: FaultServer, tmp_path: Path, date: str) -> None:
    url = builtin.add("future.bin", b"from the future", headers={"Last-Modified": date})
    result = run_cli("run", write_manifest(tmp_path, [url]), cwd=tmp_path)
    assert result.code == 0, result.stdout + result.stderr[-1000:]
    assert (tmp_path / "mirror/future.bin").read_bytes() == b"from the future"
    assert "Traceback" not in result.stderr
