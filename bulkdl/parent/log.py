"""The run's event log, in the parent: ``-v`` (JSON lines on stderr) and ``--log-file FILE`` (appended), or both.

One JSON object a line, for jq and cron logs: ``ts`` (RFC 3339, UTC, milliseconds), ``event``, the file's
``path`` where there is one, then the event's own keys (EVENTS, which --help and the README list). The
parent's events (run_start, skip, file_end, failure, run_end) are made here; a worker's (file_start, retry,
resume, fallback, steal, ramp) come up in its reporter's messages (worker/events.py) and are written as they
arrive. ``ts`` is when the event happened in its process, but never earlier than the line above it: a
worker's message arrives up to 50 ms after its first event, and a log stays ordered for whoever reads it by time.

Lines are written in batches, never one write per line: every _BATCH lines, and at each poll of the pool
(about ten a second, so that ``-v`` keeps up with the run), so 100,000 skips are 100 writes. What is left is
written when the command ends, however it ends: cli.py calls ``finish`` with the exit code. A log that can
no longer be written is said once on stderr and dropped; the run goes on. Only the main thread logs.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections import Counter
from json.encoder import encode_basestring_ascii as _string  # json's own (in C): a str as a JSON string
from pathlib import Path
from typing import Any, TextIO

from .. import __version__
from ..errors import UsageError
from ..values import FileResult, Status
from ..worker.events import Event
from . import outputs
from .manifest import Manifest

# Every event, its keys besides ts, event and path, and what it says: the one list --help and the README show.
EVENTS = (
    ("run_start", "command, manifest, dest, version, files, workers", "the command has read its manifest"),
    ("file_start", "url", "a worker begins the file"),
    ("retry", "url, reason, delay (seconds), attempt", "a request failed and is tried again after delay"),
    ("resume", "segment, offset", "a segment continues from the bytes its part holds"),
    ("skip", "reason", "no request needed: the state proves the copy current"),
    ("fallback", "why", "the file comes as one stream instead of segments"),
    ("steal", "segment, start, end, victim", "a slow segment's range was split: the new one is [start, end)"),
    ("ramp", "connections, measured (bytes/s)", "a big file now uses this many; measured: its last window"),
    ("file_end", "status, bytes, transferred, sha256, elapsed", "the file is done; status as in the report"),
    ("failure", "code, message", "the file failed (code as in the report)"),
    ("run_end", "exit_code, files, transferred, elapsed", "the command ends; files counts each status"),
)
_BATCH = 1000  # lines per write, at most
_encode = json.JSONEncoder(separators=(",", ":")).encode  # ASCII (\u escapes): any stderr can take it


class Log:
    """The lines not yet written, and where they go."""

    def __init__(self, sinks: list[tuple[TextIO, str]]) -> None:
        self._sinks = sinks  # (stream, what to call it in a message)
        self._lines: list[str] = []
        self._last = 0.0  # the latest ts written: none goes before it
        self._second = -1
        self._prefix = ""
        self._began = time.monotonic()
        self._counts: Counter[str] = Counter()
        self._transferred = 0

    def add(self, when: float, kind: str, path: str | None, fields: dict[str, Any]) -> None:
        line = f'{{"ts":"{self._stamp(when)}","event":"{kind}"'
        if path is not None:
            line += ',"path":' + _string(path)
        for key, value in fields.items():  # keys are ours, plain words: no escaping
            line += f',"{key}":{_value(value)}'
        self._lines.append(line + "}\n")
        if len(self._lines) >= _BATCH:
            self.flush()

    def _stamp(self, when: float) -> str:
        self._last = when = max(when, self._last)
        second, milli = divmod(int(when * 1000), 1000)
        if second != self._second:  # one strftime a second, not one a line
            self._second, self._prefix = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{milli:03d}Z"

    def count(self, status: str, transferred: int) -> None:
        self._counts[status] += 1
        self._transferred += transferred

    def end(self, code: int) -> None:
        elapsed = round(time.monotonic() - self._began, 3)
        totals = {"exit_code": code, "files": dict(self._counts), "transferred": self._transferred}
        self.add(time.time(), "run_end", None, {**totals, "elapsed": elapsed})
        self.flush()

    def flush(self) -> None:
        if not self._lines:
            return
        text, self._lines = "".join(self._lines), []
        for sink in list(self._sinks):
            stream, what = sink
            try:
                stream.write(text)
                stream.flush()
            except (OSError, ValueError) as exc:  # a full disk, a closed pipe: the run matters more than its log
                self._sinks.remove(sink)
                reason = getattr(exc, "strerror", None) or exc
                print(f"bulkdl: cannot write {what} any more ({reason}); the run goes on without it", file=sys.stderr)

    def close(self) -> None:
        for stream, _ in self._sinks:
            if stream is not sys.stderr:
                stream.close()


def _value(value: Any) -> str:
    """``value`` as JSON. Strings, numbers and None go the short way: encoding a dict costs 4 us, which 100,000
    skip lines would feel (0.44 s against 0.1 s)."""
    kind = type(value)  # exact types: a bool is no int here, json spells it true
    if kind is str:
        return _string(value)
    if kind is int:
        return int.__repr__(value)
    if value is None:
        return "null"
    if kind is float:  # NaN and the infinities are no JSON: jq would refuse the line
        return float.__repr__(value) if math.isfinite(value) else "null"
    return _encode(value)


_log: Log | None = None


def start(verbose: bool, path: Path | None, loaded: Manifest, command: str) -> None:
    """Open the log the command line asks for and write run_start; nothing when it asks for none.

    An unusable --log-file is a UsageError (exit 2) here, before anything is fetched."""
    global _log
    if not (verbose or path):
        return
    outputs.check(loaded, path, "the log file")  # never a file of the mirror or of its state
    sinks: list[tuple[TextIO, str]] = [(sys.stderr, "the log on stderr")] if verbose else []
    if path is not None:
        try:
            sinks.append((path.open("a", encoding="ascii"), f"the log file {path}"))
        except OSError as exc:
            raise UsageError(f"cannot write the log file {path}: {exc.strerror or exc}") from None
    _log = Log(sinks)
    fields = {"command": command, "manifest": str(loaded.source.absolute()), "dest": str(loaded.dest)}
    more = {"version": __version__, "files": len(loaded.jobs), "workers": loaded.workers}
    _log.add(time.time(), "run_start", None, {**fields, **more})


def wanted() -> bool:
    """Whether a log is kept: the pool then has its workers gather events."""
    return _log is not None


def on_terminal() -> bool:
    """Whether the log goes to a terminal's stderr, where live progress would garble it (run turns that off)."""
    return _log is not None and any(s is sys.stderr for s, _ in _log._sinks) and sys.stderr.isatty()


def emit(kind: str, path: str | None = None, **fields: Any) -> None:
    if _log is not None:
        _log.add(time.time(), kind, path, fields)


def skipped(path: str, reason: str) -> None:
    if _log is not None:
        _log.add(time.time(), "skip", path, {"reason": reason})
        _log.count("unchanged", 0)


def received(events: list[Event]) -> None:
    """A worker's events, as its message brought them."""
    if _log is not None:
        for when, kind, fields in events:
            path = fields.pop("path", None)
            _log.add(when, kind, path, fields)


def result(r: FileResult, status: str) -> None:
    """A file's end (``status``: its word in the report), and its failure if it failed."""
    if _log is None:
        return
    now = time.time()
    if r.status == Status.FAILED:
        _log.add(now, "failure", r.name, {"code": r.code, "message": r.error})
    fields = {"status": status, "bytes": r.size, "transferred": r.transferred, "sha256": r.sha256}
    _log.add(now, "file_end", r.name, {**fields, "elapsed": round(r.elapsed, 3)})
    _log.count(status, r.transferred)


def flush() -> None:
    if _log is not None:
        _log.flush()


def finish(code: int) -> None:
    """run_end with the command's exit code; everything written, the file closed."""
    global _log
    if _log is None:
        return
    log, _log = _log, None
    try:
        log.end(code)
    finally:
        log.close()
