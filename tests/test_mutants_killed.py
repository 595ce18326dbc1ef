"""Boundaries the other server-free tests left open, found by mutation testing (docs/mutation.md).

Each test pins one behaviour of the modules that decide which bytes may be kept: a resume that keeps its
bytes, a discard that leaves none, the modes and fsyncs of what is created, the exact messages a user sees,
and the arithmetic of the segment table, the backoff and the speed guard.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from bulkdl import durable
from bulkdl.errors import PermanentError, RangeNotHonoured, RemoteChanged, TransientError
from bulkdl.parent.decide import decide
from bulkdl.values import Condition
from bulkdl.worker import accept, board, parts, plan, retry
from bulkdl.worker.assemble import Assembly
from bulkdl.worker.board import Board
from bulkdl.worker.parts import Parts, part_path, sidecar_path
from bulkdl.worker.plan import Plan, Segment
from bulkdl.worker.retry import Halt, RetryPolicy, SpeedGuard, retrying

from .test_decide import JOB, ROW, _stat
from .test_engine_units import PLAN, Clock, Flag, head

DATA = bytes(range(100))


def _current(count: int = 2, data: bytes = DATA) -> Plan:
    return Plan("u", "u", len(data), '"v"', None, True, plan.split(len(data), count, 1))


@pytest.fixture
def final(tmp_path: Path) -> Path:
    return tmp_path / "f.bin"


@pytest.fixture
def started(final: Path) -> Iterator[Parts]:
    """A recorded two-part download of DATA with the first 10 bytes of each part written."""
    owner = Parts(final)
    owner.start(_current(), record=True)
    owner.append(0, 0, DATA[:10])
    owner.append(1, 50, DATA[50:60])
    yield owner
    owner.close()


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


# --- parts.py: resume, restart, discard -----------------------------------------------------------------------


def test_a_resume_keeps_the_bytes_its_sidecar_vouches_for(final: Path, started: Parts) -> None:
    started.close()
    again = Parts(final)
    try:
        assert again.adopt("u", 100) == (_current(), None)
        assert again.recorded is True
        assert (again.length(0), again.length(1)) == (10, 10)
        again.append(0, 10, DATA[10:50])
        again.append(1, 60, DATA[60:])
        with Assembly(again, []) as assembly:
            assert assembly.finish(_current(), 100, ())[0] == 100
        assert final.read_bytes() == DATA
    finally:
        again.close()


@pytest.mark.parametrize(
    ("source", "size", "reason"),
    [
        ("other", 100, "the URL in the manifest changed"),
        ("u", 99, "its size differs from the manifest's"),
        ("u", 100, "part 1 is longer than its segment"),
    ],
)
def test_a_doubted_resume_removes_the_sidecar_and_every_part_it_names(
    final: Path, started: Parts, source: str, size: int, reason: str
) -> None:
    started.close()
    if reason.startswith("part 1"):
        with part_path(final, 1).open("ab") as part:
            part.write(b"x" * 41)  # 51 bytes in a 50-byte segment
    part_path(final, 2).write_bytes(b"a steal's part, created just before the sidecar would have named it")
    assert Parts(final).adopt(source, size) == (None, reason)
    assert sorted(p.name for p in final.parent.iterdir()) == []


def test_a_sidecar_that_cannot_be_read_is_a_reason_not_a_crash(final: Path) -> None:
    sidecar_path(final).symlink_to(sidecar_path(final).name)  # a loop: reading it fails with ELOOP
    part_path(final, 0).write_bytes(b"stale")
    owner = Parts(final)
    saved, reason = owner.adopt("u", None)
    assert saved is None and reason is not None
    assert reason.startswith("its sidecar could not be read (") and reason.endswith(")")
    assert sorted(p.name for p in final.parent.iterdir()) == []


def test_a_fresh_owner_vouches_for_nothing_and_knows_no_bytes(final: Path) -> None:
    owner = Parts(final)
    assert owner.recorded is False and owner.length(3) == 0


def test_an_unrecorded_start_is_not_recorded(final: Path) -> None:
    owner = Parts(final)
    owner.start(_current(1), record=False)
    try:
        assert owner.recorded is False and not sidecar_path(final).exists()
    finally:
        owner.close()


def test_a_new_plan_removes_the_parts_of_the_plan_before_it(final: Path) -> None:
    owner = Parts(final)
    owner.start(_current(3), record=False)
    owner.start(_current(1), record=True)
    try:
        assert sorted(p.name for p in final.parent.iterdir()) == ["f.bin.bulkdl", "f.bin.part0"]
    finally:
        owner.close()


def test_discard_removes_every_part_even_after_two_steals(final: Path, started: Parts) -> None:
    started.split(Segment(2, 80, 100), (Segment(0, 0, 50), Segment(1, 50, 80), Segment(2, 80, 100)))
    table = (Segment(0, 0, 30), Segment(3, 30, 50), Segment(1, 50, 80), Segment(2, 80, 100))
    started.split(Segment(3, 30, 50), table)
    assert plan.decode(sidecar_path(final).read_bytes()) == replace(_current(), segments=table)
    started.discard()
    assert started.recorded is False
    assert sorted(p.name for p in final.parent.iterdir()) == []


def test_discarding_an_unrecorded_download_needs_no_sidecar(final: Path) -> None:
    owner = Parts(final)
    owner.start(_current(1), record=False)
    owner.discard()
    assert sorted(p.name for p in final.parent.iterdir()) == []


def test_discarding_an_empty_files_plan_removes_a_stray_part0(final: Path) -> None:
    owner = Parts(final)
    owner.start(Plan("u", "u", 0, '"v"', None, True, ()), record=True)
    part_path(final, 0).write_bytes(b"stray")
    owner.discard()
    assert sorted(p.name for p in final.parent.iterdir()) == []


def test_a_file_without_a_sidecar_cannot_be_split(final: Path) -> None:
    owner = Parts(final)
    owner.start(_current(1), record=False)
    try:
        with pytest.raises(AssertionError):
            owner.split(Segment(1, 50, 100), (Segment(0, 0, 50), Segment(1, 50, 100)))
        assert not sidecar_path(final).exists()
    finally:
        owner.close()


# --- parts.py: writing, emptying, installing ------------------------------------------------------------------


def test_a_short_write_is_continued(final: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    owner = Parts(final)
    owner.start(_current(1), record=False)
    real = os.pwrite
    monkeypatch.setattr(parts.os, "pwrite", lambda fd, data, offset: real(fd, bytes(data[:3]), offset))
    try:
        owner.append(0, 0, DATA[:10])
        assert owner.length(0) == 10 and part_path(final, 0).read_bytes() == DATA[:10]
    finally:
        owner.close()


def test_emptying_a_part_tells_its_listeners_which_segment(started: Parts) -> None:
    emptied: list[tuple[Segment, int]] = []

    @contextlib.contextmanager
    def listener(segment: Segment) -> Iterator[None]:
        yield
        emptied.append((segment, started.length(1)))

    assert started.length(1) > 0
    started.on_empty(listener)
    started.empty(1)
    assert emptied == [(Segment(1, 50, 100), 0)] and started.length(1) == 0


@pytest.mark.usefixtures("umask_022")
def test_a_one_part_file_gets_a_new_files_mode(final: Path) -> None:
    owner = Parts(final)
    owner.start(_current(1), record=False)
    owner.append(0, 0, DATA)
    assert part_path(final, 0).stat().st_mode & 0o777 == 0o644
    with Assembly(owner, []) as assembly:
        assembly.finish(_current(1), 100, ())
    owner.close()
    assert final.stat().st_mode & 0o777 == 0o644


@pytest.mark.usefixtures("umask_022")
def test_a_stolen_part_and_the_assembled_file_get_a_new_files_mode(final: Path, started: Parts) -> None:
    table = (Segment(0, 0, 50), Segment(1, 50, 75), Segment(2, 75, 100))
    started.split(Segment(2, 75, 100), table)
    assert part_path(final, 2).stat().st_mode & 0o777 == 0o644
    started.append(0, 10, DATA[10:50])
    started.append(1, 60, DATA[60:75])
    started.append(2, 75, DATA[75:])
    with Assembly(started, []) as assembly:
        assembly.finish(replace(_current(), segments=table), 100, ())
    assert final.stat().st_mode & 0o777 == 0o644


def test_recording_and_installing_leave_the_directory_fsync_to_the_run(
    final: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    monkeypatch.setattr(durable.os, "fsync", synced.append)

    def no_dir_sync(directory: Path) -> None:
        raise AssertionError("the run fsyncs the directory, once per commit")

    monkeypatch.setattr(durable, "fsync_dir", no_dir_sync)
    for count in (1, 2):
        owner = Parts(final)
        owner.start(_current(count), record=True)
        assert synced == [], "a sidecar is bookkeeping: no fsync"
        for s in _current(count).segments:
            owner.append(s.index, s.start, DATA[s.start : s.end])
        with Assembly(owner, []) as assembly:
            assembly.finish(_current(count), 100, ())
        owner.close()
        assert len(synced) == 1, "only the installed file itself"
        synced.clear()


def test_install_and_close_tolerate_files_removed_behind_their_back(final: Path, started: Parts) -> None:
    started.append(0, 10, DATA[10:50])
    started.append(1, 60, DATA[60:])
    with Assembly(started, []) as assembly:
        sidecar_path(final).unlink()
        part_path(final, 1).unlink()  # the open descriptor still reads it
        assembly.finish(_current(), 100, ())
    assert started.recorded is False
    assert sorted(p.name for p in final.parent.iterdir()) == ["f.bin"] and final.read_bytes() == DATA


def test_closing_removes_an_uninstalled_temp_and_may_be_repeated(final: Path, started: Parts) -> None:
    started.temp()
    started.close()
    started.close()
    assert not durable.temp_path(final).exists()


# --- plan.py ----------------------------------------------------------------------------------------------


def test_one_byte_minimum_segments_split_as_far_as_asked() -> None:
    assert plan.split(7, 16, 1) == tuple(Segment(i, i, i + 1) for i in range(7))


@pytest.mark.parametrize(("size", "segments"), [(None, (Segment(0, 0, None),)), (5, (Segment(0, 0, 5),)), (0, ())])
def test_single_is_one_segment_for_the_whole_file(size: int | None, segments: tuple[Segment, ...]) -> None:
    assert plan.single(size) == segments


def test_a_sidecar_with_mirrors_round_trips() -> None:
    with_mirrors = replace(PLAN, mirrors=("http://m1/f", "http://m2/f"))
    assert plan.decode(plan.encode(with_mirrors)) == with_mirrors


def _doc(**changes: object) -> bytes:
    doc = {"bulkdl_sidecar": 1, "source": "u", "url": "u", "size": 10, "etag": None, "last_modified": None}
    return json.dumps({**doc, "ranged": True, "segments": [[0, 4], [4, 10]], "mirrors": [], **changes}).encode()


@pytest.mark.parametrize(
    "data",
    [
        _doc(size=0, segments=[[0, 5]]),
        _doc(size=5, segments=[]),
        _doc(size=1, segments=[]),
        _doc(size=10.0),
        _doc(size=True, segments=[[0, 1]]),
        _doc(size=-1, segments=[[0, None]]),
    ],
    ids=["empty file with a segment", "no segments", "one byte, no segments", "float", "bool", "negative"],
)
def test_a_sidecar_whose_numbers_do_not_tile_the_file_is_ignored(data: bytes) -> None:
    assert plan.decode(data) is None


def test_either_validator_lets_a_resume_ask_if_range() -> None:
    assert plan.doubt(replace(PLAN, last_modified=None), PLAN.source, 100, {}) is None
    assert plan.doubt(replace(PLAN, etag=None), PLAN.source, 100, {}) is None


# --- accept.py: what a user reads -----------------------------------------------------------------------------


def test_check_says_why_an_answer_is_refused() -> None:
    with pytest.raises(RemoteChanged, match=r'^ETag changed from "e1" to "e2"$'):
        accept.check(PLAN, 40, head(start=40, etag='"e2"'))
    with pytest.raises(RangeNotHonoured, match=r"^asked for bytes 40- and got bytes 41-$"):
        accept.check(PLAN, 40, head(start=41))
    with pytest.raises(RangeNotHonoured, match=r"^server ignored Range$"):
        accept.check(PLAN, 1, head(status=200, start=0))  # even one byte in
    with pytest.raises(PermanentError, match=r"^disagrees on the size: 99 bytes, not 100$"):
        accept.check_mirror(PLAN, 40, head(start=40, total=99))
    with pytest.raises(RangeNotHonoured, match=r"^asked for bytes 40- and got bytes 41-$"):
        accept.check_mirror(PLAN, 40, head(start=41))


# --- decide.py ----------------------------------------------------------------------------------------------


def test_a_conditional_get_carries_everything_a_304_needs() -> None:
    decision = decide(replace(JOB, digests=()), ROW, _stat(), False, False)
    assert decision.condition == Condition(ROW.etag, ROW.last_modified, ROW.size, ROW.digests, ROW.local_mtime_ns)


# --- board.py -----------------------------------------------------------------------------------------------


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(board.time, "monotonic", fake)
    return fake


def _never(seconds: float) -> bool:
    return False


def _stopped(seconds: float) -> bool:
    return True


def test_a_range_is_split_when_half_of_what_is_left_is_exactly_min_steal(clock: Clock) -> None:
    table = Board([Segment(0, 0, 100)], 40, lambda s, t: None)
    table.start(0, 0)
    table.claim(0, 20)
    clock.now += 2  # 10 B/s: the 80 left need 8 s
    assert table.steal(_never) == Segment(1, 60, 100)
    assert table.left(1) == 40, "a new range is owed every byte of it"


def test_a_range_that_ends_in_exactly_steal_worth_is_left_alone(clock: Clock) -> None:
    table = Board([Segment(0, 0, 150)], 10, lambda s, t: None)
    table.start(0, 0)
    table.claim(0, 50)
    clock.now += board.STEAL_AFTER  # 100 B/s, 100 left: 1.0 s
    assert table.steal(_never) is None


def test_the_cut_is_a_whole_byte(clock: Clock) -> None:
    table = Board([Segment(0, 0, 101)], 10, lambda s, t: None)
    table.start(0, 0)
    clock.now += 1
    thief = table.steal(_never)
    assert thief == Segment(1, 51, 101) and isinstance(thief.start, int)


def test_the_slowest_range_is_split_first_and_a_stalled_one_is_slowest(clock: Clock) -> None:
    table = Board([Segment(0, 0, 100), Segment(1, 100, 200), Segment(2, 200, 300)], 10, lambda s, t: None)
    for index in (0, 1, 2):
        table.start(index, 0)
    table.claim(0, 1)  # 0.5 B/s: 99 left need 198 s
    table.claim(2, 10)  # 5 B/s: 90 left need 18 s
    clock.now += 2  # range 1 sent nothing at all
    assert table.steal(_never) == Segment(3, 150, 200)


def test_a_range_no_thread_has_started_is_not_judged(clock: Clock) -> None:
    table = Board([Segment(0, 0, 100), Segment(1, 100, 200)], 10, lambda s, t: None)
    table.start(0, 0)
    clock.now += 1  # range 0 is stalled; range 1 has not begun
    assert table.steal(_stopped) == Segment(2, 50, 100)


def test_a_resumed_range_is_judged_by_this_attempts_bytes(clock: Clock) -> None:
    table = Board([Segment(0, 0, 100)], 10, lambda s, t: None)
    table.start(0, 20)  # 20 bytes from an earlier attempt
    table.claim(0, 40)
    clock.now += 2  # 20 B/s now; the 40 left need 2 s
    assert table.steal(_never) == Segment(1, 80, 100)


# --- retry.py -----------------------------------------------------------------------------------------------


def test_a_halt_wait_waits_its_time() -> None:
    began = time.monotonic()
    assert Halt(Flag()).wait(0.2) is False
    assert time.monotonic() - began >= 0.2


def test_retrying_backs_off_with_jitter_unless_the_server_said_when(monkeypatch: pytest.MonkeyPatch) -> None:
    draws: list[tuple[float, float]] = []
    monkeypatch.setattr(retry.random, "uniform", lambda low, high: draws.append((low, high)) or 0.0)
    calls = [0]

    def attempt(retry_after: float | None) -> str:
        calls[0] += 1
        if calls[0] % 3:
            raise TransientError("busy", retry_after=retry_after)
        return "done"

    policy = RetryPolicy(retries=2)
    assert retrying(lambda: attempt(None), lambda: 0, policy, Halt(Flag()), []) == "done"
    assert draws == [(0, 0.5), (0, 1.0)]
    assert retrying(lambda: attempt(0.0), lambda: 0, policy, Halt(Flag()), []) == "done"
    assert draws == [(0, 0.5), (0, 1.0)], "Retry-After, not a draw"


@pytest.fixture
def retry_clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(retry.time, "monotonic", fake)
    return fake


def test_the_speed_guard_judges_a_whole_window(retry_clock: Clock) -> None:
    guard = SpeedGuard(min_speed=100, window=10.0)
    retry_clock.now += 5
    guard.add(1)  # half a window: no verdict yet
    retry_clock.now += 5
    with pytest.raises(TransientError, match=r"^too slow: 100 B/s over 10 s \(min_speed is 100 B/s\)$"):
        guard.add(998)  # 999 bytes in exactly 10 s: 99.9 B/s


def test_the_speed_guard_counts_every_chunk_and_starts_each_window_afresh(retry_clock: Clock) -> None:
    guard = SpeedGuard(min_speed=100, window=10.0)
    retry_clock.now += 5
    guard.add(500)
    retry_clock.now += 5
    guard.add(500)  # 1000 bytes in exactly 10 s: 100 B/s is enough
    retry_clock.now += 5
    guard.add(499)  # half of the next window
    retry_clock.now += 5
    with pytest.raises(TransientError, match=r"^too slow: 100 B/s"):
        guard.add(500)
