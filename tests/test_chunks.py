"""Big files as fixed-size chunks in file order: the layout, the ramp, and end to end over real sockets."""

from __future__ import annotations

import errno
import hashlib
import itertools
import json
import mmap
import os
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from bulkdl import durable
from bulkdl.worker import assemble, mountinfo, plan, ramp
from bulkdl.worker.assemble import Assembly
from bulkdl.worker.board import Board
from bulkdl.worker.parts import Parts
from bulkdl.worker.plan import Segment
from bulkdl.worker.ramp import Ramp

from .conftest import run_cli, write_manifest
from .httpserver import FaultServer, content

MiB = 1024**2
# Chunks of 1 MiB for any file of more than 2 MiB (segments times chunk_size); smaller ones are split as before.
CHUNKED = {"segments": 2, "min_segment_size": "1MiB", "chunk_size": "1MiB"}


def _ranges(segments: tuple[Segment, ...]) -> list[tuple[int, int | None]]:
    return [(s.start, s.end) for s in segments]


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (0, []),
        (1, [(0, 1)]),
        (2 * MiB, [(0, MiB), (MiB, 2 * MiB)]),  # two chunks' worth: split into the two segments
        (2 * MiB + 1, [(0, MiB), (MiB, 2 * MiB), (2 * MiB, 2 * MiB + 1)]),
        (3 * MiB - 1, [(0, MiB), (MiB, 2 * MiB), (2 * MiB, 3 * MiB - 1)]),
        (3 * MiB, [(0, MiB), (MiB, 2 * MiB), (2 * MiB, 3 * MiB)]),
        (3 * MiB + 1, [(0, MiB), (MiB, 2 * MiB), (2 * MiB, 3 * MiB), (3 * MiB, 3 * MiB + 1)]),
    ],
)
def test_layout_is_chunks_in_file_order_beyond_segments_chunks(size: int, expected: list[tuple[int, int]]) -> None:
    segments = plan.layout(size, 2, MiB, MiB)
    assert _ranges(segments) == expected
    assert [s.index for s in segments] == list(range(len(segments)))


def test_a_chunk_is_never_smaller_than_a_minimal_segment() -> None:
    assert plan.chunk_length(100 * MiB, 4, 8 * MiB, MiB) == 8 * MiB
    assert plan.chunk_length(32 * MiB, 4, 8 * MiB, MiB) is None
    assert plan.chunk_length(None, 4, MiB, MiB) is None


def test_the_board_hands_out_segments_in_file_order_once_each() -> None:
    table = Board([Segment(2, 20, 30), Segment(0, 0, 10), Segment(1, 10, 20)], 1, None)
    assert table.pending() == 3
    assert [table.next(), table.next(), table.next(), table.next()] == [
        Segment(0, 0, 10),
        Segment(1, 10, 20),
        Segment(2, 20, 30),
        None,
    ]
    table.start(1, 0)
    table.claim(1, 4)
    assert table.pending() == 0 and table.received() == 4


def _widths(limit: int, rate_of: dict[int, float], slowed: dict[int, float] | None = None) -> list[int]:
    """The widths a ramp goes through when ``rate_of[width]`` bytes/s is what that many connections get, but
    for window K, slowed to ``slowed[K]`` times that."""
    steps = Ramp(limit)
    now, received, widths = ramp.SETTLE, 0.0, [steps.width]
    for window in itertools.count():
        steps.begin(now, int(received))
        now += ramp.WINDOW
        received += rate_of[steps.width] * ramp.WINDOW * (slowed or {}).get(window, 1.0)
        going_on = steps.step(now, int(received))
        if steps.width != widths[-1]:
            widths.append(steps.width)
        if not going_on:
            break
    return widths


CAPPED = {w: w * 20.0 * MiB for w in (1, 2, 3, 4, 6, 8, 16)}  # 20 MiB/s per connection, as the capped bench


def test_a_capped_server_keeps_every_connection_from_the_first_byte() -> None:
    assert _widths(16, CAPPED) == [16, 8, 16], "one halving halves the rate: undone at once"
    assert _widths(6, CAPPED) == [6, 3, 6]


def test_one_slow_first_window_is_not_the_full_widths_rate() -> None:
    for slowed in ({0: 0.0}, {0: 0.3}, {0: 0.6}, {1: 0.6}, {0: 0.0, 1: 0.0}):
        assert _widths(16, CAPPED, slowed) == [16, 8, 16], slowed
    # Both first windows stalled: the one case the ramp still narrows wrongly (ramp.py says so).
    assert _widths(16, CAPPED, {0: 0.6, 1: 0.6}) == [16, 8, 4, 8]
    assert ramp.Ramp(16).kept == 16


def test_the_ramp_narrows_while_fewer_connections_keep_the_rate() -> None:
    cpu_bound = {1: 300.0 * MiB, 2: 400.0 * MiB, 4: 410.0 * MiB, 8: 380.0 * MiB, 16: 350.0 * MiB}
    assert _widths(16, cpu_bound) == [16, 8, 4, 2, 1, 2]
    halfway = {2: 100.0 * MiB, 4: 200.0 * MiB, 8: 220.0 * MiB, 16: 230.0 * MiB}  # the link fills at 4
    assert _widths(16, halfway) == [16, 8, 4, 2, 4]
    one = {w: 500.0 * MiB for w in (1, 2, 3, 4, 8, 16)}  # one connection fills the link
    assert _widths(16, one) == [16, 8, 4, 2, 1]
    assert _widths(3, one) == [3, 1]
    assert _widths(1, cpu_bound) == [1], "one allowed connection is one"


def test_a_slow_decline_is_held_against_the_best_rate_not_the_last() -> None:
    # Each halving loses 15%: alone none is worth undoing, together they would lose half the rate.
    declining = {16: 400.0 * MiB, 8: 340.0 * MiB, 4: 289.0 * MiB, 2: 246.0 * MiB, 1: 209.0 * MiB}
    assert _widths(16, declining) == [16, 8, 4, 8]


def test_a_halving_the_file_ends_before_measuring_is_not_kept() -> None:
    steps = Ramp(16)
    for window in range(ramp.BASELINE):
        steps.begin(window, window * 100)
        assert steps.step(window + 1, (window + 1) * 100)
    assert steps.width == 8 and steps.kept == 16, "measured at 16 only: the file ends on 16"
    steps.begin(10, 1000)
    assert steps.step(11, 1100) and steps.width == 4 and steps.kept == 8


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


SIZES = [0, 1, MiB - 1, MiB, MiB + 1, 2 * MiB, 2 * MiB + 1, 3 * MiB - 1, 3 * MiB, 3 * MiB + 1, 5 * MiB + 7]


@pytest.mark.parametrize("known_size", [False, True])
def test_chunked_files_get_the_digests_of_their_bytes(builtin: FaultServer, tmp_path: Path, known_size: bool) -> None:
    files = {f"c{size}.bin": content(f"chunks{size}", size) for size in SIZES}
    entries = [
        {"url": builtin.add(name, data), **({"size": len(data)} if known_size else {})} for name, data in files.items()
    ]
    entries.append({"url": builtin.add("unstated.bin", content("unstated", 3 * MiB + 5), unknown_total=True)})
    result = run_cli("run", write_manifest(tmp_path, entries, defaults=CHUNKED), cwd=tmp_path)
    assert result.code == 0, result.stdout
    files["unstated.bin"] = content("unstated", 3 * MiB + 5)
    for name, data in files.items():
        assert (tmp_path / "mirror" / name).read_bytes() == data, name
        assert result.file(name)["sha256"] == _sha(data), name
    # A file of more than two chunks is asked for chunk by chunk, each range exactly once.
    big = 5 * MiB + 7
    asked = sorted(int((r.range or "")[6:].split("-")[0]) for r in builtin.requests(f"c{big}.bin"))
    assert asked == [s.start for s in plan.layout(big, 2, MiB, MiB)], asked
    assert sum(r.sent for r in builtin.requests(f"c{big}.bin")) == big
    assert not list((tmp_path / "mirror").glob("*.part*")) and not list((tmp_path / "mirror").glob("?*.bulkdl"))


def _ramp_run(
    builtin: FaultServer, tmp_path: Path, url: str, size: int, defaults: dict[str, object]
) -> list[dict[str, Any]]:
    """Run one big file; its ramp's events, in order, from the run's log."""
    log = tmp_path / "run.log"
    manifest = write_manifest(tmp_path, [{"url": url, "size": size}], defaults=defaults)
    result = run_cli("run", manifest, "--log-file", log, cwd=tmp_path)
    assert result.code == 0, result.stdout
    return [e for e in map(json.loads, log.read_text().splitlines()) if e["event"] == "ramp"]


def _most_at_once_after(builtin: FaultServer, path: str, event: dict[str, Any]) -> int:
    """The most requests for ``path`` the server answered at once among those that began well after ``event``
    (a log line): the server stamps each answer's end in wall-clock time and times its span."""
    after = datetime.fromisoformat(event["ts"].replace("Z", "+00:00")).timestamp() + 0.2
    spans = [(r.logged - (r.ended - r.began), r.logged) for r in builtin.requests(path)]
    later = [(began, ended) for began, ended in spans if began > after]
    assert later, "the file ended with its ramp: nothing to check"
    return max(sum(1 for b, e in later if b <= began < e) for began, _ in later)


def test_a_per_connection_cap_keeps_every_connection(builtin: FaultServer, tmp_path: Path) -> None:
    data = content("many-chunks", 48 * MiB)
    # 4 MiB/s per connection: halving the connections halves the rate, so the one halving tried is undone.
    # A chunk takes 1.5 s, longer than the ramp's window: measured before the two threads above the halved
    # width let go of theirs, the halving would look free.
    url = builtin.add("wide.bin", data, rate=4 * MiB)
    widths = [
        e["connections"] for e in _ramp_run(builtin, tmp_path, url, len(data), {"segments": 4, "chunk_size": "6MiB"})
    ]
    assert (tmp_path / "mirror/wide.bin").read_bytes() == data
    assert len(builtin.requests("wide.bin")) == 8, "one request per chunk"
    assert builtin.peak("wide.bin") == 4, f"{builtin.peak('wide.bin')} requests at once for segments: 4"
    assert widths == [2, 4], "the ramp should try two connections, lose half the rate, and go back to four"


def test_one_link_for_every_connection_narrows_and_stays_narrow(builtin: FaultServer, tmp_path: Path) -> None:
    data = content("one-link", 64 * MiB)
    # 16 MiB/s for all the file's answers together: one connection is as fast as four.
    url = builtin.add("link.bin", data, link=16 * MiB)
    chunks = {"segments": 4, "min_segment_size": "2MiB", "chunk_size": "2MiB"}
    events = _ramp_run(builtin, tmp_path, url, len(data), chunks)
    widths = [e["connections"] for e in events]
    assert (tmp_path / "mirror/link.bin").read_bytes() == data
    assert builtin.peak("link.bin") == 4, "a chunked file starts on all its connections"
    assert widths[:1] == [2] and widths[-1] <= 2, f"four connections on one link should narrow: {widths}"
    most = _most_at_once_after(builtin, "link.bin", events[-1])
    assert most <= widths[-1], f"{most} requests at once after the ramp settled on {widths[-1]}"


def test_a_slow_chunk_is_stolen_once_no_chunk_is_left(builtin: FaultServer, tmp_path: Path) -> None:
    data = content("slow-chunk", 24 * MiB)
    # Twelve chunks of 2 MiB; the sixth trickles at 256 KiB/s and alone would take 8 s.
    url = builtin.add("slow.bin", data, slow_at=10 * MiB, slow_rate=256 * 1024)
    defaults = {"segments": 4, "min_segment_size": "1MiB", "chunk_size": "2MiB"}
    result = run_cli("run", write_manifest(tmp_path, [url], defaults=defaults), cwd=tmp_path)
    assert result.code == 0, result.stdout
    assert (tmp_path / "mirror/slow.bin").read_bytes() == data
    starts = [int(r.range.split("=")[1].split("-")[0]) for r in builtin.requests("slow.bin") if r.range]
    assert any(10 * MiB < s < 12 * MiB for s in starts), "nobody took over part of the slow chunk"
    assert result.file("slow.bin")["transferred"] == len(data), "bytes were fetched twice"
    assert not list((tmp_path / "mirror").glob("slow.bin.*")), "parts or sidecar left behind"


def test_a_chunk_answered_with_the_whole_file_falls_back_to_one_stream(builtin: FaultServer, tmp_path: Path) -> None:
    data = content("whole", 6 * MiB + 3)
    url = builtin.add("whole.bin", data, honour_ranges=3)  # the probe and two chunks, then 200s
    result = run_cli("run", write_manifest(tmp_path, [url], defaults=CHUNKED), cwd=tmp_path)
    assert result.code == 0, result.stdout
    assert (tmp_path / "mirror/whole.bin").read_bytes() == data
    assert result.file("whole.bin")["sha256"] == _sha(data)
    assert any("one stream" in note for note in result.file("whole.bin")["notes"])
    assert not list((tmp_path / "mirror").glob("whole.bin.*")), "a chunk's part was left behind"


def test_chunks_spread_over_mirrors(builtin: FaultServer, tmp_path: Path) -> None:
    data = content("spread-chunks", 8 * MiB)
    primary, mirror = builtin.add("a/s.bin", data), builtin.add("b/s.bin", data, etag='"b"')
    entry = {"url": primary, "mirrors": [mirror], "sha256": _sha(data)}
    result = run_cli("run", write_manifest(tmp_path, [entry], defaults=CHUNKED), cwd=tmp_path)
    assert result.code == 0, result.stdout
    assert (tmp_path / "mirror/s.bin").read_bytes() == data
    sent = [sum(r.sent for r in builtin.requests(p)) for p in ("a/s.bin", "b/s.bin")]
    assert sum(sent) == len(data) and min(sent) >= 3 * MiB, sent


def test_a_one_part_file_is_hashed_from_the_bytes_written_not_read_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = content("fed", 300_000)
    current = plan.Plan("u", "u", len(data), '"v"', None, True, plan.single(len(data)))
    parts = Parts(tmp_path / "f.bin")
    parts.start(current, record=False)
    reads: list[int] = []
    monkeypatch.setattr(assemble, "_hash_range", lambda *args: reads.append(1) or 0)
    with Assembly(parts, ["md5"]) as assembly:
        for offset in range(0, len(data), 65536):
            view = memoryview(data[offset : offset + 65536])
            parts.append(0, offset, view)
            assembly.feed(offset, view)
        size, digests = assembly.finish(current, len(data), (("sha256", _sha(data)),))
    parts.close()
    assert (size, digests) == (len(data), {"sha256": _sha(data), "md5": hashlib.md5(data).hexdigest()})
    assert reads == [], "the part was read back"
    assert (tmp_path / "f.bin").read_bytes() == data


def test_the_copy_into_the_temp_goes_on_while_the_hash_is_held(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The hash is the slower of the two: a copy that waited behind it finished 0.7 s after a 1 GiB file's
    # last byte, one core idle. Here the hash is held inside its first read of part 0.
    data = content("held", 3 * 65536)
    current = plan.Plan("u", "u", len(data), '"v"', None, True, plan.split(len(data), 3, 65536))
    parts = Parts(tmp_path / "f.bin")
    parts.start(current, record=False)
    entered, release = _held(monkeypatch, "_hash_range")
    with Assembly(parts, []) as assembly:
        assembly.follow(lambda: current.segments)
        parts.append(0, 0, data[:65536])
        assert entered.wait(5), "the hash never began"
        for s in current.segments[1:]:
            parts.append(s.index, s.start, data[s.start : s.end])
        temp = parts.temp()
        copied = threading.Event()
        for _ in range(250):
            if os.pread(temp, len(data), 0) == data:
                copied.set()
                break
            time.sleep(0.02)
        release.set()
        assert copied.is_set(), "nothing was copied while the hash was held"
        size, digests = assembly.finish(current, len(data), (("sha256", _sha(data)),))
    parts.close()
    assert (size, digests["sha256"]) == (len(data), _sha(data))
    assert (tmp_path / "f.bin").read_bytes() == data


def _entering(lanes: ramp.Lanes, n: int) -> tuple[threading.Thread, list[bool]]:
    said: list[bool] = []
    thread = threading.Thread(target=lambda: said.append(lanes.enter(n)), daemon=True)
    thread.start()
    return thread, said


def test_a_thread_above_the_width_waits_for_it_to_grow_or_end() -> None:
    lanes = ramp.Lanes(4)
    assert lanes.enter(2) and lanes.enter(1), "below the width: in at once"
    lanes.resize(2)
    assert not lanes.narrowed(0.01), "thread 2 still holds its chunk, and only threads 0 and 1 may"
    lanes.leave(2)
    assert lanes.narrowed(0.01), "thread 1 is below the width"
    lanes.leave(1)
    waiting, said = _entering(lanes, 3)
    at_width, said_too = _entering(lanes, 2)
    for thread in (waiting, at_width):
        thread.join(0.2)
        assert thread.is_alive() and not said and not said_too, "a thread took a chunk above the width"
    lanes.resize(4)  # the halving was undone
    waiting.join(5)
    at_width.join(5)
    assert said == said_too == [True]
    lanes.leave(3)
    lanes.leave(2)
    lanes.end(2)
    assert not lanes.enter(2) and lanes.enter(1), "above the final width a thread stops; below it goes on"


def test_the_end_of_the_ramp_lets_a_waiting_thread_stop() -> None:
    lanes = ramp.Lanes(4)
    lanes.resize(1)
    waiting, said = _entering(lanes, 2)
    waiting.join(0.2)
    assert waiting.is_alive()
    lanes.end(1)
    waiting.join(5)
    assert said == [False]


def test_a_copy_that_fails_at_the_end_is_reported_as_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The last copy runs on a thread of its own beside the hash; a full disk there is the error finish
    # raises, not a size mismatch, and nothing is installed.
    data = content("full", 3 * 65536)
    current = plan.Plan("u", "u", len(data), '"v"', None, True, plan.split(len(data), 3, 65536))
    parts = Parts(tmp_path / "f.bin")
    parts.start(current, record=False)
    for s in current.segments:
        parts.append(s.index, s.start, data[s.start : s.end])

    def full(*args: int) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(assemble, "_copy_range", full)
    with Assembly(parts, []) as assembly, pytest.raises(OSError) as raised:
        assembly.finish(current, len(data), ())
    parts.close()
    assert raised.value.errno == errno.ENOSPC
    assert not (tmp_path / "f.bin").exists()


def _three_parts(tmp_path: Path, data: bytes) -> tuple[Parts, plan.Plan]:
    current = plan.Plan("u", "u", len(data), '"v"', None, True, plan.split(len(data), 3, 1))
    parts = Parts(tmp_path / "f.bin")
    parts.start(current, record=False)
    for s in current.segments:
        parts.append(s.index, s.start, data[s.start : s.end])
    return parts, current


def test_the_hash_maps_the_parts_in_windows_at_any_offset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Parts that start off a page boundary, windows smaller than a part: every byte hashed once, in order,
    # straight from the mapping (no read into a buffer).
    data = content("windows", 3 * 40_001)
    parts, current = _three_parts(tmp_path, data)
    assert [s.start % 4096 for s in current.segments[1:]] != [0, 0]
    monkeypatch.setattr(assemble, "_WINDOW", 10_000)
    reads: list[int] = []
    real = assemble.os.preadv
    monkeypatch.setattr(assemble.os, "preadv", lambda *args: reads.append(1) or real(*args))
    lengths: list[int] = []
    real_mmap = assemble.mmap.mmap
    monkeypatch.setattr(assemble.mmap, "mmap", lambda fd, n, **kw: lengths.append(n) or real_mmap(fd, n, **kw))
    with Assembly(parts, ["md5"]) as assembly:
        size, digests = assembly.finish(current, len(data), (("sha256", _sha(data)),))
    parts.close()
    assert (size, digests["md5"]) == (len(data), hashlib.md5(data).hexdigest())
    assert reads == [], "the parts were read into a buffer, not mapped"
    # While mapped, a window's pages count in the worker's memory: never much more than _WINDOW at a time.
    assert lengths and max(lengths) < 10_000 + mmap.ALLOCATIONGRANULARITY


@pytest.mark.parametrize("refusal", [OSError(errno.ENODEV, "No such device"), ValueError("mmap length")])
def test_a_file_system_that_cannot_map_is_read_instead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refusal: Exception
) -> None:
    data = content("unmapped", 3 * 40_001)
    parts, current = _three_parts(tmp_path, data)
    monkeypatch.setattr(mountinfo, "_known", {})
    monkeypatch.setattr(assemble, "_WINDOW", 10_000)
    tried: list[int] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        tried.append(1)
        raise refusal

    monkeypatch.setattr(assemble.mmap, "mmap", refuse)
    with Assembly(parts, []) as assembly:
        size, digests = assembly.finish(current, len(data), (("sha256", _sha(data)),))
    parts.close()
    assert (size, digests["sha256"]) == (len(data), _sha(data))
    assert (tmp_path / "f.bin").read_bytes() == data
    assert tried == [1], "a refusal is remembered, not met again at every window"


def test_a_network_file_system_is_never_mapped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A read error through a mapping is a SIGBUS, the worker's death: on NFS, SMB or FUSE the parts are read.
    data = content("nfs", 3 * 40_001)
    parts, current = _three_parts(tmp_path, data)
    monkeypatch.setattr(mountinfo, "_known", {})
    monkeypatch.setattr(mountinfo, "_fstype", lambda device: "nfs4")
    mapped: list[int] = []
    monkeypatch.setattr(assemble.mmap, "mmap", lambda *args, **kw: mapped.append(1))
    with Assembly(parts, []) as assembly:
        size, digests = assembly.finish(current, len(data), (("sha256", _sha(data)),))
    parts.close()
    assert (size, digests["sha256"]) == (len(data), _sha(data)) and mapped == []


def test_the_file_system_type_is_read_from_mountinfo(tmp_path: Path) -> None:
    lines = [
        "22 27 0:21 / /proc rw,relatime - proc proc rw",
        "27 1 254:0 / / rw,relatime shared:1 master:2 - ext4 /dev/vda rw,discard",  # optional fields before " - "
        "40 27 0:45 / /srv/pool rw,relatime - nfs4 server:/pool rw,vers=4.2",
    ]
    assert mountinfo.fstype_of(lines, os.makedev(254, 0)) == "ext4"
    assert mountinfo.fstype_of(lines, os.makedev(0, 45)) == "nfs4"
    assert mountinfo.fstype_of(lines, os.makedev(8, 1)) is None
    with open(tmp_path / "probe", "wb") as probe:  # where the tests' parts live: this machine's file system
        assert mountinfo.mappable(probe.fileno()) == (
            mountinfo._fstype(os.fstat(probe.fileno()).st_dev) in mountinfo._LOCAL
        )


def _held(monkeypatch: pytest.MonkeyPatch, step: str) -> tuple[threading.Event, threading.Event]:
    """Make ``assemble.<step>`` wait inside its first call until released: (entered, release)."""
    entered, release = threading.Event(), threading.Event()
    real = getattr(assemble, step)

    def held(*args: Any) -> Any:
        if not entered.is_set():
            entered.set()
            release.wait(10)
        return real(*args)

    monkeypatch.setattr(assemble, step, held)
    return entered, release


@pytest.mark.parametrize(("step", "doing"), [("_hash_range", "hashed"), ("_copy_range", "copied")])
def test_a_part_is_emptied_only_while_no_follower_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str, doing: str
) -> None:
    # Truncating a part under the hash's mapping of it would kill the worker with SIGBUS: the emptying waits
    # for both followers. Each one's first step (on part 0) is held.
    data = content(f"emptied-{doing}", 3 * 40_001)
    parts, current = _three_parts(tmp_path, data)
    entered, release = _held(monkeypatch, step)
    with Assembly(parts, []) as assembly:
        assembly.follow(lambda: current.segments)
        assert entered.wait(5), f"part 0 was never {doing}"
        emptier = threading.Thread(target=parts.empty, args=(0,), daemon=True)
        emptier.start()
        emptier.join(0.3)
        still_whole = parts.length(0) == 40_001
        release.set()
        emptier.join(5)
        assert still_whole, f"part 0 was emptied while it was being {doing}"
        assert parts.length(0) == 0
        parts.append(0, 0, data[:40_001])  # the stream that restarted from zero
        size, digests = assembly.finish(current, len(data), (("sha256", _sha(data)),))
    parts.close()
    assert (size, digests["sha256"]) == (len(data), _sha(data))
    assert (tmp_path / "f.bin").read_bytes() == data


def test_a_part_refilled_with_other_bytes_is_copied_and_hashed_again(tmp_path: Path) -> None:
    # What the hash saw is what is installed: a part emptied after both threads passed it and refilled with
    # other bytes (a server whose file changed) is copied and hashed again.
    old, new = content("old", 3 * 40_001), content("new", 40_001)
    current = plan.Plan("u", "u", len(old), '"v"', None, True, plan.split(len(old), 3, 1))
    parts = Parts(tmp_path / "f.bin")
    parts.start(current, record=False)
    with Assembly(parts, []) as assembly:
        assembly.follow(lambda: current.segments)
        for s in current.segments:
            parts.append(s.index, s.start, old[s.start : s.end])
        temp = parts.temp()
        for _ in range(250):
            if os.pread(temp, len(old), 0) == old and assembly._position == len(old):
                break
            time.sleep(0.02)
        parts.empty(0)
        parts.append(0, 0, new)
        _, digests = assembly.finish(current, len(old), ())
    parts.close()
    assert digests["sha256"] == _sha(new + old[40_001:])
    assert (tmp_path / "f.bin").read_bytes() == new + old[40_001:], "the file is not the bytes that were hashed"


def test_pausing_leaves_no_follower_running(tmp_path: Path) -> None:
    data = content("paused", 3 * 40_001)
    parts, current = _three_parts(tmp_path, data)
    with Assembly(parts, []) as assembly:
        assembly.follow(lambda: current.segments)
        assembly.pause()
        assert not [t for t in threading.enumerate() if t.name.startswith("assembly")], "a follower outlived pause"
        assembly.finish(current, len(data), ())
    parts.close()


def test_a_followed_file_in_one_part_is_never_copied(tmp_path: Path) -> None:
    # One part is the file, renamed into place: a copy would be its size again on disk, and its I/O.
    data = content("single", 200_000)
    current = plan.Plan("u", "u", len(data), '"v"', None, True, plan.single(len(data)))
    parts = Parts(tmp_path / "f.bin")
    parts.start(current, record=False)
    with Assembly(parts, []) as assembly:
        assembly.follow(lambda: current.segments)
        parts.append(0, 0, data)
        time.sleep(0.1)  # a few rounds of both followers
        assert not durable.temp_path(tmp_path / "f.bin").exists()
        assembly.finish(current, len(data), (("sha256", _sha(data)),))
    parts.close()
    assert (tmp_path / "f.bin").read_bytes() == data


def test_a_follower_that_meets_a_full_disk_stops_quietly_and_finish_reports_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The copy fails while following: the thread ends without an unhandled exception (a traceback on the
    # worker's stderr), and the error is the one finish raises when it meets it again.
    data = content("full-following", 3 * 40_001)
    parts, current = _three_parts(tmp_path, data)
    unhandled: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", unhandled.append)
    tried = threading.Event()

    def full(*args: int) -> int:
        tried.set()
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(assemble, "_copy_range", full)
    with Assembly(parts, []) as assembly:
        assembly.follow(lambda: current.segments)
        assert tried.wait(5), "the copy never began"
        assembly.pause()
        with pytest.raises(OSError) as raised:
            assembly.finish(current, len(data), ())
    parts.close()
    assert raised.value.errno == errno.ENOSPC
    assert unhandled == [], "a follower died of its error"
    assert not (tmp_path / "f.bin").exists()
