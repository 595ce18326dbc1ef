"""What a worker process tells the run's log (-v, --log-file): one call, ``emit``, into this process's sink.

The sink is the worker's reporter (serve.py), installed by serve.main only when the run asked for a log
(``Config.events``); until then, and in every run without -v or --log-file, ``emit`` returns at once, so
nothing is gathered, copied or pickled. An event is a small plain tuple (wall time, kind, fields) that
rides up to the parent in the reporter's next message; the parent's log (parent/log.py) writes it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..credentials import redact_url

# (seconds since the epoch, event kind, its fields): plain data, as everything crossing to the parent is.
Event = tuple[float, str, dict[str, Any]]
# One file's events: ``tell(kind, **fields)``, the file's path (and scrubbing of its secrets) added by fetch.py.
Tell = Callable[..., None]

_sink: Callable[[Event], None] | None = None


def install(sink: Callable[[Event], None] | None) -> None:
    """Send this process's events to ``sink`` (None: drop them, the default)."""
    global _sink
    _sink = sink


def emit(kind: str, **fields: Any) -> None:
    """Record event ``kind`` now; a no-op unless a log was asked for. Fields must be plain JSON values."""
    sink = _sink
    if sink is not None:
        sink((time.time(), kind, fields))


def on() -> bool:
    """Whether events are gathered: lets a caller skip work done only for an event."""
    return _sink is not None


def silent(kind: str, **fields: Any) -> None:
    """A Tell that tells nobody: for code that runs without a file's teller (tests, tools)."""


def retries(tell: Tell, source: Callable[[], str]) -> Callable[[str, float, int], None] | None:
    """What tells ``tell`` of each retry (retry.retrying's on_retry) of ``source()``: the URL it asked, which a
    mirror's drop may change between attempts. None when no log gathers events."""
    if _sink is None:
        return None

    def told(reason: str, delay: float, failures: int) -> None:
        tell("retry", url=redact_url(source()), reason=reason, delay=round(delay, 3), attempt=failures)

    return told
