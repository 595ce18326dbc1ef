"""The owner of a file's bytes on disk (parts.py) and the sidecar format, without a socket.

The state machine at the end drives one file's parts the way runs do (plan, write, steal, empty, kill,
resume, a remote change, a corrupt sidecar, stray leftovers, install) and checks the invariants after
every step: every part holds exactly the bytes of the version its plan was made for, never more than its
segment; a sidecar on disk always describes such parts; what is installed and hashed is that version.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from bulkdl.worker import plan
from bulkdl.worker.assemble import Assembly
from bulkdl.worker.board import Board
from bulkdl.worker.parts import Parts, part_path, sidecar_path
from bulkdl.worker.plan import Plan, Segment


def _plan(**changes: object) -> Plan:
    base = Plan(
        "http://h/f",
        "http://h/f",
        10,
        '"e"',
        "Tue, 14 Nov 2023 22:13:20 GMT",
        True,
        (Segment(0, 0, 4), Segment(1, 4, 10)),
    )
    return Plan(**{**{f: getattr(base, f) for f in Plan.__dataclass_fields__}, **changes})  # type: ignore[arg-type]


def test_sidecar_round_trip() -> None:
    for original in (_plan(), _plan(size=None, ranged=False, segments=(Segment(0, 0, None),), etag=None)):
        assert plan.decode(plan.encode(original)) == original


def _doc(**changes: object) -> str:
    doc = {
        "bulkdl_sidecar": 1,
        "source": "u",
        "url": "u",
        "size": 10,
        "etag": None,
        "last_modified": None,
        "ranged": True,
    }
    return json.dumps({**doc, "segments": [[0, 4], [4, 10]], "mirrors": [], **changes})


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        "[]",
        _doc(bulkdl_sidecar=2),
        _doc(segments=[[0, 4], [5, 10]]),  # a gap
        _doc(segments=[[0, 4]]),  # does not reach the end
        _doc(size=-1, segments=[]),
        _doc(url=5),
        _doc(etag=["x"]),
        json.dumps(
            {
                "bulkdl_sidecar": 1,
                "source": "u",
                "url": "u",
                "size": 4,
                "ranged": True,
                "segments": [[0, 4]],
                "mirrors": [],
            }
        ),
        _doc(source=None),
        _doc(mirrors=[1]),
    ],
)
def test_sidecar_that_cannot_be_trusted_is_ignored(text: str) -> None:
    assert plan.decode(text.encode()) is None


def test_an_unreadable_sidecar_removes_only_our_parts(tmp_path: Path) -> None:
    final = tmp_path / "f.bin"
    ours = [part_path(final, i) for i in (0, 1, 12)] + [sidecar_path(final)]
    theirs = [tmp_path / "f.bin.partial", tmp_path / "f.bin.part1.keep", tmp_path / "g.bin.part0", final]
    for p in ours + theirs:
        p.write_bytes(b"x")
    assert Parts(final).adopt("u", None) == (None, "its sidecar could not be read")
    assert [p for p in ours if p.exists()] == []
    assert all(p.exists() for p in theirs)


def _started(final: Path, data: bytes, count: int, record: bool = True) -> tuple[Parts, Plan]:
    current = Plan("u", "u", len(data), '"v"', None, True, plan.split(len(data), count, 1))
    parts = Parts(final)
    parts.start(current, record=record)
    return parts, current


def test_bytes_are_only_appended_where_the_part_ends_and_within_its_segment(tmp_path: Path) -> None:
    data = bytes(range(100))
    parts, _ = _started(tmp_path / "f.bin", data, 2)
    try:
        parts.append(1, 50, data[50:60])
        with pytest.raises(AssertionError, match="ends at byte 60, not at 59"):
            parts.append(1, 59, data[59:70])  # an answer for bytes already there
        with pytest.raises(AssertionError, match="ends at byte 60, not at 61"):
            parts.append(1, 61, data[61:70])  # a gap
        with pytest.raises(AssertionError, match="would grow past its segment"):
            parts.append(1, 60, data[60:100] + b"!")
        assert part_path(tmp_path / "f.bin", 1).read_bytes() == data[50:60] and parts.length(1) == 10
    finally:
        parts.close()


def test_a_new_plan_empties_what_an_unrecorded_run_left(tmp_path: Path) -> None:
    final = tmp_path / "f.bin"
    part_path(final, 0).write_bytes(b"stale")
    sidecar_path(final).write_bytes(b"")  # an empty sidecar vouches for nothing either
    parts, _ = _started(final, bytes(10), 1, record=False)
    parts.close()
    assert part_path(final, 0).read_bytes() == b"" and not sidecar_path(final).exists()


def test_a_small_file_unlinks_nothing_that_cannot_exist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # adopt found no sidecar, the file had one part and no sidecar: start and install remove nothing.
    final = tmp_path / "f.bin"
    unlinked: list[str] = []
    real = os.unlink
    monkeypatch.setattr(os, "unlink", lambda path, **kw: (unlinked.append(os.fspath(path)), real(path, **kw)))
    parts = Parts(final)
    assert parts.adopt("u", 10) == (None, None)
    current = Plan("u", "u", 10, '"v"', None, True, plan.single(10))
    parts.start(current, record=False)
    parts.append(0, 0, bytes(10))
    with Assembly(parts, []) as assembly:
        assembly.finish(current, 10, ())
    parts.close()
    assert unlinked == [] and final.read_bytes() == bytes(10)


def test_a_steal_that_cannot_be_recorded_changes_nothing(tmp_path: Path) -> None:
    final = tmp_path / "f.bin"
    data = bytes(range(100))
    parts, current = _started(final, data, 1)
    board = Board(current.segments, 10, parts.split)
    try:
        (tmp_path / ".f.bin.bulkdl.bulkdl-tmp").mkdir()  # where the sidecar's temp must go
        assert board._split(0, {0: 100}) is None
        assert board.segments() == current.segments
        assert not part_path(final, 1).exists(), "no empty part left behind"
        assert plan.decode(sidecar_path(final).read_bytes()) == current
        assert board.steal(lambda seconds: False) is None, "and no further steal is tried"
    finally:
        parts.close()


def test_install_removes_the_parts_and_the_sidecar(tmp_path: Path) -> None:
    final = tmp_path / "f.bin"
    data = bytes(range(100))
    parts, current = _started(final, data, 3)
    for s in current.segments:
        assert s.end is not None
        parts.append(s.index, s.start, data[s.start : s.end])
    with Assembly(parts, ["md5"]) as assembly:
        size, digests = assembly.finish(current, 100, (("md5", hashlib.md5(data).hexdigest()),))
    parts.close()
    assert (size, digests["sha256"]) == (100, hashlib.sha256(data).hexdigest())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"] and final.read_bytes() == data


def test_doubt_names_what_forbids_a_resume() -> None:
    saved = _plan()
    assert plan.doubt(saved, "http://h/f", 10, {0: 4, 1: 6}) is None
    assert plan.doubt(saved, "http://h/g", 10, {}) == "the URL in the manifest changed"
    assert plan.doubt(_plan(etag=None, last_modified=None), "http://h/f", 10, {}) == (
        "the server gave no ETag or Last-Modified to resume against"
    )
    assert plan.doubt(saved, "http://h/f", 11, {}) == "its size differs from the manifest's"
    assert plan.doubt(saved, "http://h/f", None, {1: 7}) == "part 1 is longer than its segment"


class PartsLife(RuleBasedStateMachine):
    """One destination name across runs: each 'process' is a Parts; a kill drops it mid-way."""

    def __init__(self) -> None:
        super().__init__()
        self.root = Path(self._tmp())
        self.final = self.root / "f.bin"
        self.version = 0
        self.remote = b"version 0"
        self.versions = {'"v0"': self.remote}
        self.parts: Parts | None = None
        self.current: Plan | None = None
        self.installed: bytes | None = None

    @staticmethod
    def _tmp() -> str:
        import tempfile

        return tempfile.mkdtemp(prefix="parts-life-")

    def teardown(self) -> None:
        import shutil

        if self.parts is not None:
            self.parts.close()
        shutil.rmtree(self.root, ignore_errors=True)

    # --- the world ---------------------------------------------------------------------------------------
    @rule(size=st.integers(0, 60), seed=st.integers(0, 255))
    def the_remote_changes(self, size: int, seed: int) -> None:
        self.version += 1
        self.remote = bytes((seed + i * 7) % 256 for i in range(size))
        self.versions[f'"v{self.version}"'] = self.remote

    @precondition(lambda self: self.parts is None)
    @rule(index=st.integers(0, 5), junk=st.binary(min_size=1, max_size=80))
    def litter(self, index: int, junk: bytes) -> None:
        """Bytes nobody vouches for where a part would go: a small file's part0, a crash before the sidecar
        named a stolen range's part. (A part the sidecar names only bulkdl writes.)"""
        try:
            saved = plan.decode(sidecar_path(self.final).read_bytes())
        except FileNotFoundError:
            saved = None
        if saved is None or index not in {s.index for s in saved.segments}:
            part_path(self.final, index).write_bytes(junk)

    @precondition(lambda self: self.parts is None)
    @rule(junk=st.binary(max_size=40))
    def corrupt_the_sidecar(self, junk: bytes) -> None:
        sidecar_path(self.final).write_bytes(junk)

    # --- a run ----------------------------------------------------------------------------------------------
    @precondition(lambda self: self.parts is None)
    @rule(count=st.integers(1, 4), small=st.booleans())
    def a_run_starts(self, count: int, small: bool) -> None:
        self.parts = Parts(self.final)
        saved, _ = self.parts.adopt("u", None)
        etag = f'"v{self.version}"'
        if saved is not None and saved.etag == etag:  # If-Range would confirm it: continue
            self.current = saved
            return
        if saved is not None:
            self.parts.discard()  # If-Range answered with another version: RemoteChanged
        self.current = Plan("u", "u", len(self.remote), etag, None, True, plan.split(len(self.remote), count, 1))
        # A file in several parts always has a sidecar; a one-part file has one unless it is small.
        self.parts.start(self.current, record=len(self.current.segments) > 1 or not small)

    @precondition(lambda self: self.parts is not None and self.current is not None)
    @rule(pick=st.integers(0, 10), n=st.integers(1, 30))
    def bytes_arrive(self, pick: int, n: int) -> None:
        assert self.parts is not None and self.current is not None
        segment = self.current.segments[pick % len(self.current.segments)] if self.current.segments else None
        if segment is None or segment.end is None:
            return
        data = self.versions[self.current.etag or ""]
        offset = segment.start + self.parts.length(segment.index)
        self.parts.append(segment.index, offset, data[offset : min(segment.end, offset + n)])

    @precondition(lambda self: self.parts is not None and self.current is not None)
    @rule(pick=st.integers(0, 10))
    def a_stream_starts_over(self, pick: int) -> None:
        assert self.parts is not None and self.current is not None
        if self.current.segments:
            self.parts.empty(self.current.segments[pick % len(self.current.segments)].index)

    @precondition(lambda self: self.parts is not None and self.current is not None and self.parts.recorded)
    @rule(pick=st.integers(0, 10))
    def a_thread_steals(self, pick: int) -> None:
        assert self.parts is not None and self.current is not None
        if not self.current.segments:
            return
        victim = self.current.segments[pick % len(self.current.segments)]
        assert victim.end is not None
        left = victim.end - victim.start - self.parts.length(victim.index)
        if left < 2:
            return
        thief = Segment(max(s.index for s in self.current.segments) + 1, victim.end - left // 2, victim.end)
        table = tuple(
            sorted(
                [
                    *(s for s in self.current.segments if s is not victim),
                    Segment(victim.index, victim.start, thief.start),
                    thief,
                ],
                key=lambda s: s.start,
            )
        )
        self.parts.split(thief, table)
        self.current = Plan(**{**{f: getattr(self.current, f) for f in Plan.__dataclass_fields__}, "segments": table})  # type: ignore[arg-type]

    @precondition(lambda self: self.parts is not None)
    @rule(leave_temp=st.booleans())
    def kill_9(self, leave_temp: bool) -> None:
        assert self.parts is not None
        self.parts.close()
        if leave_temp:
            (self.root / ".f.bin.bulkdl-tmp").write_bytes(b"half an assembly")
        self.parts, self.current = None, None

    @precondition(lambda self: self.parts is not None and self.current is not None)
    @rule()
    def the_last_byte_arrives_and_it_is_installed(self) -> None:
        assert self.parts is not None and self.current is not None
        data = self.versions[self.current.etag or ""]
        for segment in self.current.segments:
            assert segment.end is not None
            offset = segment.start + self.parts.length(segment.index)
            self.parts.append(segment.index, offset, data[offset : segment.end])
        with Assembly(self.parts, ["md5"]) as assembly:
            size, digests = assembly.finish(self.current, None, ())
        self.parts.close()
        self.installed = self.final.read_bytes()
        assert self.installed == data and size == len(data)
        assert digests == {"sha256": hashlib.sha256(data).hexdigest(), "md5": hashlib.md5(data).hexdigest()}
        named = [part_path(self.final, s.index) for s in self.current.segments]
        self.parts, self.current = None, None
        assert not sidecar_path(self.final).exists() and not any(p.exists() for p in named)

    # --- what must always hold ------------------------------------------------------------------------------
    @invariant()
    def parts_hold_their_versions_bytes(self) -> None:
        if self.parts is None or self.current is None:
            return
        data = self.versions[self.current.etag or ""]
        for segment in self.current.segments:
            assert segment.end is not None
            held = part_path(self.final, segment.index).read_bytes()
            assert len(held) <= segment.end - segment.start
            assert held == data[segment.start : segment.start + len(held)], f"part {segment.index}"

    @invariant()
    def a_sidecar_vouches_only_for_true_parts(self) -> None:
        try:
            saved = plan.decode(sidecar_path(self.final).read_bytes())
        except FileNotFoundError:
            return
        if saved is None or saved.etag not in self.versions:
            return  # unreadable or not ours: the next run discards it
        data = self.versions[saved.etag]
        for segment in saved.segments:
            assert segment.end is not None
            held = part_path(self.final, segment.index)
            if held.exists():
                got = held.read_bytes()
                assert got == data[segment.start : segment.start + len(got)], (
                    f"sidecar vouches for part {segment.index}"
                )

    @invariant()
    def the_final_path_holds_a_whole_version_or_nothing(self) -> None:
        if self.final.exists():
            assert self.final.read_bytes() in self.versions.values()


# Under the mutation profile (conftest.py) the profile's short, fixed sample; otherwise 150 lives.
_LIVES = {} if settings.get_current_profile_name() == "mutation" else {"max_examples": 150}
PartsLife.TestCase.settings = settings(stateful_step_count=30, deadline=None, **_LIVES)
test_parts_life = PartsLife.TestCase
