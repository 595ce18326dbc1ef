"""Work stealing: threads that finish early take over the back half of the slowest range."""

from __future__ import annotations

import time
from pathlib import Path

from .conftest import run_cli, write_manifest
from .httpserver import FaultServer, content

MiB = 1024**2


def test_one_slow_segment_is_taken_over_by_the_others(builtin: FaultServer, tmp_path: Path) -> None:
    data = content("tail", 16 * MiB)
    # Four segments of 4 MiB; the second trickles at 512 KiB/s and alone would take 8 s.
    url = builtin.add("tail.bin", data, slow_at=4 * MiB, slow_rate=512 * 1024)
    defaults = {"segments": 4, "min_segment_size": "1MiB"}
    result = run_cli("run", write_manifest(tmp_path, [url], defaults=defaults), cwd=tmp_path)
    assert result.code == 0, result.stdout
    assert (tmp_path / "mirror/tail.bin").read_bytes() == data
    slow_range = f"bytes={4 * MiB}-{8 * MiB - 1}"
    deadline = time.monotonic() + 10  # the server logs the slow answer once its next write finds the socket shut
    while not any(r.range == slow_range for r in builtin.requests("tail.bin")):
        assert time.monotonic() < deadline, "the slow answer never ended"
        time.sleep(0.05)
    requests = builtin.requests("tail.bin")
    slow = [r for r in requests if r.range == slow_range]
    # Halves of at least min_segment_size are stolen: the slow one keeps about 2 of its 4 MiB.
    assert len(slow) == 1 and slow[0].sent < 3 * MiB, "the slow connection kept its whole range"
    starts = [int(r.range.split("=")[1].split("-")[0]) for r in requests if r.range]
    assert any(4 * MiB < s < 8 * MiB for s in starts), "nobody took over part of the slow range"
    assert result.file("tail.bin")["transferred"] == len(data), "bytes were fetched twice"
    assert not list((tmp_path / "mirror").glob("tail.bin.*")), "parts or sidecar left behind"


def test_a_stolen_range_answered_with_the_whole_file_leaves_no_part_behind(
    builtin: FaultServer, tmp_path: Path
) -> None:
    data = content("turn", 16 * MiB)
    # The probe, the rest of segment 0 and segments 1-3 get their ranges; the first steal gets a 200 and the whole
    # file, so the file falls back to one stream after a part of a stolen range already exists.
    url = builtin.add("turn.bin", data, slow_at=4 * MiB, slow_rate=512 * 1024, honour_ranges=5)
    defaults = {"segments": 4, "min_segment_size": "1MiB"}
    result = run_cli("run", write_manifest(tmp_path, [url], defaults=defaults), cwd=tmp_path)
    assert result.code == 0, result.stdout
    assert (tmp_path / "mirror/turn.bin").read_bytes() == data
    assert any("one stream" in note for note in result.file("turn.bin")["notes"])
    assert not list((tmp_path / "mirror").glob("turn.bin.*")), "a stolen range's part was left behind"
