"""Faults the engine already handles, injected through the builtin server's switches."""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import pytest

from .conftest import run_cli, write_manifest
from .httpserver import FaultServer, content, etag_of

MiB = 1024**2


def test_broken_connection_resumes_from_the_byte_reached(builtin: FaultServer, tmp_path: Path) -> None:
    data = content("drop", 3 * MiB)
    url = builtin.add("drop.bin", data, drop_after=1 * MiB + 17, drops=1)
    result = run_cli("run", write_manifest(tmp_path, [url], defaults={"segments": 1}), cwd=tmp_path)
    assert result.code == 0, result.stderr
    assert (tmp_path / "mirror/drop.bin").read_bytes() == data
    requests = builtin.requests("drop.bin")
    assert [r.range for r in requests] == [f"bytes=0-{4 * MiB - 1}", f"bytes={MiB + 17}-{3 * MiB - 1}"]
    assert requests[0].if_range is None and requests[1].if_range == etag_of(data)
    assert result.file("drop.bin")["transferred"] == len(data), "no byte fetched twice"


def test_a_stream_that_starts_over_is_hashed_from_its_first_byte(builtin: FaultServer, tmp_path: Path) -> None:
    # Without ranges a broken stream can only start over, and without validators nothing says the bytes it
    # now sends are the ones before. The assembly had hashed the first ones already and must forget them,
    # or the summary would give a digest of old prefix + new rest: bytes that are nowhere on disk.
    old, new = content("before", 6 * MiB), content("after", 6 * MiB)
    url = builtin.add(
        "again.bin", old, ranges=False, anonymous=True, drop_after=3 * MiB, drops=1, rate=8 * MiB, rated=1,
        next_data=new, switch_after=1,
    )  # fmt: skip
    manifest = write_manifest(tmp_path, [url], defaults={"min_segment_size": "1MiB", "retries": 2})
    result = run_cli("run", manifest, cwd=tmp_path)
    assert result.code == 0, result.stdout
    assert (tmp_path / "mirror/again.bin").read_bytes() == new
    assert result.file("again.bin")["sha256"] == hashlib.sha256(new).hexdigest()
    assert [r.sent for r in builtin.requests("again.bin")] == [3 * MiB, 6 * MiB], "dropped once, then whole"


def test_ranges_answered_in_pieces_are_asked_for_the_rest(builtin: FaultServer, tmp_path: Path) -> None:
    data = content("pieces", 5 * MiB + 9)
    url = builtin.add("pieces.bin", data, max_range=700_000)  # a whole, valid 206, only shorter than asked
    manifest = write_manifest(tmp_path, [url], defaults={"segments": 2, "min_segment_size": "1MiB"})
    result = run_cli("run", manifest, cwd=tmp_path)
    assert result.code == 0, result.stdout
    assert (tmp_path / "mirror/pieces.bin").read_bytes() == data
    requests = builtin.requests("pieces.bin")
    assert len(requests) == 8 and sum(r.sent for r in requests) == len(data), "each piece asked for once"
    assert not any("retr" in note for note in result.file("pieces.bin")["notes"]), "a short answer is no failure"


def test_answers_without_a_body_fail_instead_of_asking_for_ever(builtin: FaultServer, tmp_path: Path) -> None:
    # A 206 for the right range whose body is empty: each attempt moves nothing, so it counts as a failure
    # (one that the retry budget bounds) rather than a short answer to ask the rest of, again and again.
    url = builtin.add("hollow.bin", content("hollow", 3 * MiB), hollow_after=0)
    manifest = write_manifest(tmp_path, [url], defaults={"segments": 2, "min_segment_size": "1MiB", "retries": 2})
    result = run_cli("run", manifest, cwd=tmp_path)
    assert result.code == 1, result.stdout
    assert result.file("hollow.bin")["error"].endswith("bytes short of its range (gave up after 3 attempts)")
    assert len(builtin.requests("hollow.bin")) <= 1 + 2 * 3, "the probe and at most three attempts per segment"


def test_each_segment_resumes_separately(builtin: FaultServer, tmp_path: Path) -> None:
    data = content("drops", 4 * MiB)
    url = builtin.add("drops.bin", data, drop_after=300_000, drops=3)
    # Two segments of 2 MiB with a minimum just above half of one: no range is ever worth stealing, so
    # every byte the server sends belongs to exactly one request that a resume does not repeat.
    settings = {"segments": 2, "min_segment_size": MiB + 1, "retries": 3}
    result = run_cli("run", write_manifest(tmp_path, [url], defaults=settings), cwd=tmp_path)
    assert result.code == 0, result.stderr
    assert (tmp_path / "mirror/drops.bin").read_bytes() == data
    assert result.file("drops.bin")["transferred"] == len(data)
    requests = builtin.requests("drops.bin")
    assert sum(r.sent for r in requests) == len(data), "each byte sent once: a resume asks only for the rest"
    assert [r.sent for r in requests].count(300_000) == 3 and len(requests) == 5, "three drops, two segments"


@pytest.mark.parametrize("status", [503, 429, 408])
def test_retryable_statuses_honour_retry_after(builtin: FaultServer, tmp_path: Path, status: int) -> None:
    # Without Retry-After the first backoff is uniform(0, 0.5) s: a gap of at least 0.9 s is the header's.
    data = content("busy", 1000)
    url = builtin.add("busy.bin", data, fail_first=2, fail_status=status, retry_after="1")
    result = run_cli("run", write_manifest(tmp_path, [url], defaults={"retries": 2}), cwd=tmp_path)
    assert result.code == 0, result.stderr
    requests = builtin.requests("busy.bin")
    assert [r.status for r in requests] == [status, status, 206]
    assert all(b.logged - a.logged >= 0.9 for a, b in itertools.pairwise(requests)), "Retry-After: 1 ignored"
    assert (tmp_path / "mirror/busy.bin").read_bytes() == data


def test_retries_are_bounded(builtin: FaultServer, tmp_path: Path) -> None:
    url = builtin.add("down.bin", b"x", fail_first=100, retry_after="0")
    result = run_cli("run", write_manifest(tmp_path, [url], defaults={"retries": 3}), cwd=tmp_path)
    assert result.code == 1
    assert result.file("down.bin")["error"] == "HTTP 503 Service Unavailable (gave up after 4 attempts)"
    assert len(builtin.requests("down.bin")) == 4


def test_unreachable_host_fails_cleanly(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    manifest = write_manifest(tmp_path, [f"http://127.0.0.1:{port}/x.bin"], defaults={"retries": 1})
    result = run_cli("run", manifest, cwd=tmp_path)
    assert result.code == 1
    assert (
        result.file("x.bin")["error"]
        == f"cannot connect to 127.0.0.1:{port}: Connection refused (gave up after 2 attempts)"
    )
    assert "Traceback" not in result.stderr + result.stdout


def test_connect_timeout_is_retried_then_fails_cleanly(tmp_path: Path) -> None:
    import socket

    # A listener whose accept queue is full drops new SYNs: connecting hangs, as to a black-holed host.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        manifest = write_manifest(
            tmp_path, [f"http://127.0.0.1:{port}/slow.bin"], defaults={"timeout": 0.5, "retries": 1}
        )
        result = run_cli("run", manifest, cwd=tmp_path)
    finally:
        for s in [*fillers, listener]:
            s.close()
    assert result.code == 1
    assert result.file("slow.bin")["error"] == f"timed out connecting to 127.0.0.1:{port} (gave up after 2 attempts)"
