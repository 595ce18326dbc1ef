"""Holding the destination: its lock, its state, and SIGTERM taken as Ctrl-C while a command holds it."""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from ..errors import BulkdlError
from ..parent.lock import DestinationLock
from ..parent.report.page import counted
from ..parent.state import Row, State, UnreadableState, read_rows


@contextlib.contextmanager
def stoppable() -> Iterator[None]:
    """SIGTERM winds a download down exactly like Ctrl-C: parts kept, summary printed, exit 130."""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def destination(dest: Path) -> Iterator[State]:
    """Lock the destination and open its state; a destination that cannot be written is one clear error."""
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(DestinationLock(dest))
            state = stack.enter_context(State(dest))
        except (OSError, sqlite3.Error) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise BulkdlError(f"cannot use the destination {dest}: {reason}") from None
        if state.set_aside is not None:
            print(f"bulkdl: {state.set_aside}", file=sys.stderr)
        yield state


def read_recorded(dest: Path) -> dict[str, Row]:
    """The state's rows for a read-only command; one that cannot be read is said once and read as empty."""
    try:
        return read_rows(dest)
    except UnreadableState as exc:
        print(f"bulkdl: {exc}", file=sys.stderr)
        return {}


def say_what_was_not_recorded(state: State) -> None:
    if state.problem is not None:
        print(
            f"bulkdl: could not record this run in the state ({state.problem}); the next run re-checks its files",
            file=sys.stderr,
        )
    if state.unrecorded:
        first, *others = state.unrecorded
        more, them = (f" and {counted(len(others), 'more file')}", "them") if others else ("", "it")
        print(
            f"bulkdl: could not record {first}{more} in the state; the next run downloads {them} again", file=sys.stderr
        )


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt
