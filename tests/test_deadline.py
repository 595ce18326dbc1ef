"""The deadline watchdog: it wakes a blocked reader when due, never after cancel, and its memory stays bounded."""

from __future__ import annotations

import socket
import threading
import time

from bulkdl.worker import deadline


def test_a_due_deadline_wakes_a_blocked_reader() -> None:
    a, b = socket.socketpair()
    with a, b:
        watch = deadline.watch(a, 0.3)
        assert watch is not None
        started = time.monotonic()
        assert a.recv(10) == b"", "the shut-down socket reads as the end of the stream"
        assert 0.25 <= time.monotonic() - started < 2
        assert deadline.cancel(watch) is True, "cancel says the deadline fired"


def test_a_cancelled_deadline_never_fires() -> None:
    a, b = socket.socketpair()
    with a, b:
        watch = deadline.watch(a, 0.2)
        assert watch is not None
        assert deadline.cancel(watch) is False
        time.sleep(0.4)
        b.sendall(b"still open")
        assert a.recv(10) == b"still open"


def test_many_deadlines_share_one_thread_and_bounded_memory() -> None:
    a, b = socket.socketpair()
    with a, b:
        before = {t.name for t in threading.enumerate()}
        for _ in range(20_000):  # as many requests as a batch of small files makes, each head quick
            watch = deadline.watch(a, 30)
            assert watch is not None and not deadline.cancel(watch)
        assert deadline.pending() <= 2 * 256 + 2, "cancelled deadlines are compacted away"
        names = [t.name for t in threading.enumerate() if t.name not in before]
        assert names.count("bulkdl-deadlines") <= 1


def test_deadlines_fire_in_order_of_their_time_not_of_their_arrival() -> None:
    pairs = [socket.socketpair() for _ in range(3)]
    try:
        late = deadline.watch(pairs[0][0], 5)
        soon = deadline.watch(pairs[1][0], 0.2)
        sooner = deadline.watch(pairs[2][0], 0.1)
        assert late is not None and soon is not None and sooner is not None
        time.sleep(0.6)
        assert (deadline.cancel(sooner), deadline.cancel(soon), deadline.cancel(late)) == (True, True, False)
    finally:
        for x, y in pairs:
            x.close()
            y.close()


def test_something_that_is_no_socket_is_not_watched() -> None:
    assert deadline.watch(object(), 1) is None
