"""The run's shared budgets, kept in shared memory that every worker process of one pool sees.

- **Connections**: at most ``connections`` sockets open over the whole run, and at most ``per_host`` to one
  host (curl's ``--parallel-max-host``, libcurl's CURLMOPT_MAX_HOST_CONNECTIONS: open connections, idle
  kept-alive ones included). A permit is taken when a socket connects and given back when it closes
  (net.py calls ``connecting``/``closed``); a thread that finds none waits, stoppably, and says so in the
  table, so that a worker holding idle connections closes them for it (``surplus``, net.close_idle).
- **Host health**: connections to a host that fail ``DOWN_AFTER`` times in a row (refused, timed out, no
  such name), in any worker, mark it down for the rest of the run: its remaining files fail at once with
  "host unreachable" instead of each spending its retries (12 files on a closed port took 27.6 s).
- **Rate**: ``limit_rate`` bytes a second for every body byte of the run together, as a shared virtual
  clock (GCRA): each read books its bytes after those booked before it and sleeps until its turn.

Hosts are known in advance from the manifest (its URLs and mirrors), each with its own slot; a host met only
later (a redirect, a proxy) shares one of a few overflow slots, chosen by a stable hash, whose cap is then
shared with the hosts that hash alike: stricter than asked, never looser.

The table is plain integers under one lock. A worker killed while it holds permits leaks them, so a pool
that loses a worker starts again with a new table (pool.py does).
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Callable
from multiprocessing.context import BaseContext
from typing import Any

from ..errors import HOST_UNREACHABLE, PermanentError
from ..values import Budget
from .retry import Cancelled, StopFlag

DOWN_AFTER = 3  # connection failures in a row, to one host, that mark it down
OVERFLOW = 16  # slots shared by hosts the manifest did not name
_WAIT_FIRST, _WAIT_MAX = 0.002, 0.05  # seconds between looks while waiting for a permit
_BURST = 0.05  # seconds of unused rate a quiet moment may save up

# The table: [open in all, waiting in all, then per slot: open, waiting, failures in a row].
_TOTAL, _WAITING, _SLOTS = 0, 1, 2


def host_key(host: str, port: int | None, scheme: str = "http") -> str:
    return f"{host.lower()}:{port or (443 if scheme == 'https' else 80)}"


class HostDown(PermanentError):
    """A host failed too many connections in a row: no more are tried in this run."""

    code = HOST_UNREACHABLE


class Shared:
    """The budget and its table, created in the parent before the workers and handed to each."""

    def __init__(self, budget: Budget, context: BaseContext) -> None:
        self.budget = budget
        self._slots = {host: i for i, host in enumerate(budget.hosts)}
        self._table: Any = context.Array("q", _SLOTS + 3 * (len(budget.hosts) + OVERFLOW), lock=False)
        self._lock = context.Lock()
        self._clock: Any = context.Value("d", 0.0, lock=False)  # when the rate's next byte is due
        self._rate_lock = context.Lock()
        self._why: dict[int, str] = {}  # this process's last connection failure per slot, for the message

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_why"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _why={})

    def slot(self, key: str) -> int:
        found = self._slots.get(key)
        if found is None:
            found = len(self._slots) + zlib.crc32(key.encode()) % OVERFLOW
        return _SLOTS + 3 * found

    def acquire(self, key: str, stop: StopFlag, meanwhile: Callable[[], None] = lambda: None) -> None:
        """Take a permit for a new connection to ``key``, waiting while the budget is spent (calling
        ``meanwhile`` between looks)."""
        s, t = self.slot(key), self._table
        waiting, delay = False, _WAIT_FIRST
        try:
            while True:
                with self._lock:
                    if t[s + 2] >= DOWN_AFTER:
                        raise HostDown(self._down(key, s))
                    if t[_TOTAL] < self.budget.connections and t[s] < self.budget.per_host:
                        t[_TOTAL] += 1
                        t[s] += 1
                        return
                    if not waiting:
                        t[_WAITING] += 1
                        t[s + 1] += 1
                        waiting = True
                meanwhile()
                if stop.wait(delay):
                    raise Cancelled
                delay = min(delay * 2, _WAIT_MAX)
        finally:
            if waiting:
                with self._lock:
                    t[_WAITING] -= 1
                    t[s + 1] -= 1

    def release(self, key: str) -> None:
        s, t = self.slot(key), self._table
        with self._lock:
            t[_TOTAL] -= 1
            t[s] -= 1

    def connected(self, key: str) -> None:
        s = self.slot(key)
        if self._table[s + 2]:
            with self._lock:
                self._table[s + 2] = 0

    def failed(self, key: str, reason: str) -> None:
        s = self.slot(key)
        self._why[s] = reason
        with self._lock:
            self._table[s + 2] += 1

    def _down(self, key: str, s: int) -> str:
        last = self._why.get(s)
        return (
            f"host unreachable: {DOWN_AFTER} connections to {key} in a row failed"
            + (f" (last: {last})" if last else "")
            + "; its other files are not tried in this run"
        )

    def surplus(self, key: str) -> bool:
        """Whether an idle connection to ``key`` should close: someone waits that it would let through."""
        s, t = self.slot(key), self._table
        if not t[_WAITING]:
            return False
        with self._lock:
            if t[s + 1]:
                return True
            # Someone waits on the run's total, not on a host of their own at its cap: any idle socket helps.
            return t[_TOTAL] >= self.budget.connections and any(
                t[i + 1] and t[i] < self.budget.per_host for i in range(_SLOTS, len(t), 3)
            )

    def waiting(self) -> bool:
        return bool(self._table[_WAITING])

    def read_size(self, wanted: int) -> int:
        """How much one read may ask for: at most a tenth of a second of the rate, so turns stay short."""
        rate = self.budget.limit_rate
        return wanted if rate is None else max(1024, min(wanted, rate // 10))

    def pace(self, n: int, stop: StopFlag) -> None:
        """Book ``n`` bytes just read against the rate and sleep until they are due."""
        rate = self.budget.limit_rate
        if rate is None:
            return
        with self._rate_lock:
            now = time.monotonic()  # CLOCK_MONOTONIC: one clock for every process of the machine
            due = max(self._clock.value, now - _BURST) + n / rate
            self._clock.value = due
        if due > now and stop.wait(due - now):
            raise Cancelled

    def open_connections(self) -> int:
        """Sockets open in the whole run now (for tests)."""
        return int(self._table[_TOTAL])


class SharedFlag:
    """The run's stop flag, one byte of shared memory with no lock: a worker killed at any moment cannot
    leave it held (a multiprocessing Event is a lock and a condition, and every worker reads it per chunk)."""

    def __init__(self, context: BaseContext) -> None:
        self._value: Any = context.RawValue("b", 0)

    def set(self) -> None:
        self._value.value = 1

    def is_set(self) -> bool:
        return bool(self._value.value)

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._value.value:
            left = _WAIT_MAX if deadline is None else deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(left, _WAIT_MAX / 2))
        return True


# Set in each worker process at its start (pool.py); None elsewhere, where nothing is limited.
_shared: Shared | None = None
_stop: StopFlag = threading.Event()


def install(shared: Shared | None, stop: StopFlag) -> None:
    global _shared, _stop
    _shared, _stop = shared, stop


def current() -> Shared | None:
    return _shared


def stop_flag() -> StopFlag:
    return _stop
