"""The engine's pure decisions without a socket: response checks, the segment table, the retry policy.

These are also what mutation testing runs against (see docs/mutation.md): each case pins one boundary.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from bulkdl.errors import PermanentError, RangeNotHonoured, RemoteChanged, TransientError
from bulkdl.worker import accept, board
from bulkdl.worker.board import Board
from bulkdl.worker.net import Head
from bulkdl.worker.plan import Plan, Segment
from bulkdl.worker.retry import Cancelled, Halt, RetryPolicy, retrying

PLAN = Plan("http://a/f", "http://a/f", 100, '"e1"', "Mon, 01 Jan 2024 00:00:00 GMT", True, (Segment(0, 0, 100),))


def head(status: int = 206, start: int = 0, total: int | None = 100, **fields: str | None) -> Head:
    values: dict[str, str | None] = {"etag": '"e1"', "last_modified": PLAN.last_modified, "content_encoding": None}
    values |= fields
    return Head(status, "http://a/f", start, None, total, values["etag"], values["last_modified"], None)


@pytest.mark.parametrize(
    ("current", "first", "answer", "raised"),
    [
        (PLAN, 40, head(start=40), None),
        (None, 0, head(status=200, total=None), None),  # the probe of a server without ranges
        (PLAN, 40, head(start=39), RangeNotHonoured),
        (PLAN, 40, head(start=41), RangeNotHonoured),
        (PLAN, 40, head(status=200, start=0), RangeNotHonoured),
        (PLAN, 0, head(status=200, start=0), None),  # the whole body, asked from its first byte
        (None, 40, head(status=200, start=0), RangeNotHonoured),
        (PLAN, 40, head(start=40, total=101), RemoteChanged),
        (PLAN, 40, head(start=40, etag='"e2"'), RemoteChanged),
        (PLAN, 40, head(start=40, last_modified="Tue, 02 Jan 2024 00:00:00 GMT"), RemoteChanged),
        (PLAN, 40, head(start=40, etag=None, last_modified=None, total=None), None),  # nothing says it changed
    ],
)
def test_check_accepts_only_bytes_that_continue_the_part(
    current: Plan | None, first: int, answer: Head, raised: type[Exception] | None
) -> None:
    _expect(lambda: accept.check(current, first, answer), raised)


def test_an_unranged_plan_takes_a_whole_body_at_any_offset() -> None:
    unranged = Plan(PLAN.source, PLAN.url, None, None, None, False, (Segment(0, 0, None),))
    accept.check(unranged, 40, head(status=200, start=0, total=None, etag=None, last_modified=None))


@pytest.mark.parametrize(
    ("first", "answer", "raised"),
    [
        (40, head(start=40, etag='"theirs"'), None),  # a mirror's validators are its own
        (40, head(start=40, total=None), None),
        (40, head(start=40, total=99), PermanentError),
        (40, head(start=41), RangeNotHonoured),
        (40, head(status=200, start=0), RangeNotHonoured),
        (0, head(status=200, start=0), None),
    ],
)
def test_check_mirror(first: int, answer: Head, raised: type[Exception] | None) -> None:
    _expect(lambda: accept.check_mirror(PLAN, first, answer), raised)


def _expect(check: Callable[[], None], raised: type[Exception] | None) -> None:
    """``check`` passes, or raises exactly ``raised``."""
    if raised is None:
        check()
        return
    with pytest.raises(raised):
        check()


def test_changed_says_what_changed() -> None:
    assert accept.changed(PLAN, head(total=7)) == "size changed from 100 to 7 bytes"
    assert accept.changed(PLAN, head(etag='"x"')) == 'ETag changed from "e1" to "x"'
    assert accept.changed(PLAN, head(last_modified="y")) == f"Last-Modified changed from {PLAN.last_modified} to y"
    assert accept.changed(PLAN, head()) is None


# --- the segment table ---------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(board.time, "monotonic", fake)
    return fake


def test_claim_never_passes_a_segments_end() -> None:
    table = Board([Segment(0, 0, 10), Segment(1, 10, 20)], 1, None)
    table.start(0, 4)
    assert table.left(0) == 6
    assert table.claim(0, 5) == 5 and table.claim(0, 5) == 1 and table.claim(0, 5) == 0
    assert table.left(0) == 0 and table.left(1) == 10
    unknown = Board([Segment(0, 0, None)], 1, None)
    assert unknown.left(0) is None and unknown.claim(0, 1 << 40) == 1 << 40


def test_a_slow_range_is_split_at_half_of_what_it_has_left(clock: Clock) -> None:
    recorded: list[tuple[Segment, tuple[Segment, ...]]] = []
    table = Board([Segment(0, 0, 100), Segment(1, 100, 200)], 10, lambda s, t: recorded.append((s, t)))
    table.start(0, 0)
    table.start(1, 100)  # done
    table.claim(0, 20)
    clock.now += board.STEAL_AFTER  # 20 bytes in 0.5 s: 80 left need 2 s > STEAL_WORTH
    thief = table.steal(lambda seconds: False)
    assert thief == Segment(2, 60, 100)
    assert table.segments() == (Segment(0, 0, 60), Segment(2, 60, 100), Segment(1, 100, 200))
    assert recorded == [(thief, table.segments())]
    assert table.claim(0, 50) == 40, "the victim stops where the thief starts"


def test_a_range_is_not_split_when_it_ends_soon_or_is_small(clock: Clock) -> None:
    table = Board([Segment(0, 0, 100)], 10, lambda s, t: None)
    table.start(0, 0)
    table.claim(0, 70)
    clock.now += board.STEAL_AFTER  # 30 left at 140 B/s: done in 0.2 s
    assert table.steal(lambda seconds: False) is None
    small = Board([Segment(0, 0, 100)], 60, lambda s, t: None)  # half of what is left is under min_steal
    small.start(0, 0)
    clock.now += 10
    assert small.steal(lambda seconds: False) is None


def test_a_young_range_is_waited_on_until_the_file_stops(clock: Clock) -> None:
    table = Board([Segment(0, 0, 100)], 10, lambda s, t: None)
    table.start(0, 0)
    pauses: list[float] = []

    def pause(seconds: float) -> bool:
        pauses.append(seconds)
        return len(pauses) == 3  # the file stops on the third wait

    assert table.steal(pause) is None and pauses == [board.STEAL_AFTER / 5] * 3


def test_nothing_is_split_without_a_sidecar_to_record_it(clock: Clock) -> None:
    table = Board([Segment(0, 0, 100)], 10, None)
    table.start(0, 0)
    clock.now += 10
    assert table.steal(lambda seconds: False) is None and table.segments() == (Segment(0, 0, 100),)


# --- the retry policy ----------------------------------------------------------------------------------------


def test_backoff_doubles_up_to_its_cap_and_retry_after_wins_up_to_its_own() -> None:
    policy = RetryPolicy(retries=3, max_retry_after=60.0, base=0.5, cap=30.0)
    upper: Callable[[float, float], float] = lambda low, high: high  # noqa: E731 - the top of the jitter range
    assert [policy.delay(n, None, upper) for n in (1, 2, 3, 4, 7, 8)] == [0.5, 1.0, 2.0, 4.0, 30.0, 30.0]
    assert policy.delay(1, None, lambda low, high: low) == 0.0
    assert policy.delay(5, 7.0, upper) == 7.0
    assert policy.delay(1, 600.0, upper) == 60.0
    assert policy.delay(1, -3.0, upper) == 0.0
    assert not policy.gives_up(3) and policy.gives_up(4)


class Flag:
    def __init__(self) -> None:
        self.event = threading.Event()

    def is_set(self) -> bool:
        return self.event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self.event.wait(timeout)


def _failing(times: int, progress: list[int], step: int = 0) -> Callable[[], str]:
    calls = [0]

    def attempt() -> str:
        calls[0] += 1
        if calls[0] <= times:
            progress[0] += step
            raise TransientError(f"fail {calls[0]}", retry_after=0.0)
        return "done"

    return attempt


def test_retrying_gives_up_after_the_budget_and_says_so() -> None:
    progress, retried = [0], []
    policy = RetryPolicy(retries=2)
    with pytest.raises(TransientError, match=r"^fail 3 \(gave up after 3 attempts\)$"):
        retrying(_failing(5, progress), lambda: progress[0], policy, Halt(Flag()), retried)
    assert retried == ["fail 1", "fail 2"]
    assert retrying(_failing(2, progress), lambda: progress[0], policy, Halt(Flag()), []) == "done"


def test_progress_starts_the_budget_again() -> None:
    progress = [0]
    policy = RetryPolicy(retries=1)
    assert retrying(_failing(6, progress, step=1), lambda: progress[0], policy, Halt(Flag()), []) == "done"


def test_a_halted_file_is_not_tried_and_its_backoff_ends_at_once() -> None:
    stop = Flag()
    halt = Halt(stop)
    halt.abort()
    with pytest.raises(Cancelled):
        retrying(lambda: "never", lambda: 0, RetryPolicy(retries=1), halt, [])
    assert halt.wait(60.0) is True
    running = Halt(stop)
    assert running.wait(0.01) is False
    stop.event.set()
    assert running.is_set() and running.wait(60.0) is True
