"""The live progress view rendered into a recording console, and the batch loop that feeds it and stops."""

from __future__ import annotations

import io
import os
import re
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from rich.console import Console
from rich.progress_bar import ProgressBar

from bulkdl import cli
from bulkdl.parent import executor, manifest, pool
from bulkdl.parent.pool import Batch
from bulkdl.parent.report.progress import _BAR_WIDTH, RATE_WINDOW_SECONDS, ProgressView
from bulkdl.values import FileResult, Status
from bulkdl.worker.meter import Send

from .conftest import write_manifest
from .httpserver import FaultServer, content

MiB = 1024**2
_UNITS = {"B": 1, "KiB": 1024, "MiB": MiB, "GiB": 1024 * MiB, "TiB": 1024**4}


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _view(sizes: list[int | None], clock: _Clock | None = None) -> ProgressView:
    names = {i: f"file{i}.bin" for i in range(len(sizes))}
    return ProgressView(True, names, dict(enumerate(sizes)), clock=clock or time.monotonic)


def _frame(view: ProgressView, height: int = 40) -> list[str]:
    console = Console(file=io.StringIO(), width=120, height=height, color_system=None, legacy_windows=False)
    console.print(view)
    out = console.file.getvalue()  # type: ignore[attr-defined]
    return [line.rstrip() for line in out.splitlines()]


def _result(index: int, status: Status = Status.DOWNLOADED, size: int | None = MiB) -> FileResult:
    return FileResult(index, f"file{index}.bin", f"http://h/{index}", status, size, size or 0, None, 1.0)


def _rate(line: str) -> float:
    found = re.search(r"([\d.]+) (\w+)/s", line)
    assert found is not None and found.group(2) in _UNITS, f"no rate in the summary's units: {line}"
    return float(found.group(1)) * _UNITS[found.group(2)]


def test_counts_files_done_whatever_their_status() -> None:
    view = _view([MiB, MiB, MiB, None])
    assert _frame(view)[0].startswith("all files 0/4")
    view.finished(_result(0))
    view.finished(_result(1, Status.FAILED, size=None))
    view.finished(_result(2, Status.INTERRUPTED, size=None))
    view.finished(_result(2, Status.INTERRUPTED, size=None))  # reported twice: still one file
    assert _frame(view)[0].startswith("all files 3/4")
    view.finished(_result(3, Status.SKIPPED))
    assert _frame(view)[0].startswith("all files 4/4")


def test_rate_is_the_bytes_of_the_last_seconds_in_the_summary_s_units() -> None:
    clock = _Clock()
    view = _view([64 * MiB] * 4, clock)
    for second in range(1, 4):
        clock.now += 1
        view.tick(second % 4, 2 * MiB, 64 * MiB)
        assert "2.00 MiB/s" in _frame(view)[0]  # binary units, as format_size and the summary
    clock.now += 1
    for _ in range(1024):  # a burst drained at once after a second without any: still 2 MiB in a second
        view.tick(0, 2 * 1024, 64 * MiB)
    assert "2.00 MiB/s" in _frame(view)[0]
    clock.now += RATE_WINDOW_SECONDS + 1  # nothing for longer than the window: the rate falls to nothing
    assert "0 B/s" in _frame(view)[0]


def test_rate_of_bursts_never_exceeds_what_arrived_in_the_time_it_took() -> None:
    # The parent drains ticks in bursts: rich's own speed (the last 1,000 ticks over the time between them)
    # showed a burst's bytes over its microseconds, 136.5 GB/s on a loopback that moved 70 MiB/s.
    view = _view([None] * 10)
    started = time.monotonic()  # after the view's own start, so the view's span is at least as long
    for burst in range(3):
        for i in range(1000):
            view.tick(i % 10, 64 * 1024, None)
        if burst < 2:
            time.sleep(0.05)  # the parent busy elsewhere between two drains
    elapsed = time.monotonic() - started
    line = _frame(view)[0]
    assert _rate(line) <= 3000 * 64 * 1024 / elapsed * 1.01, line  # 1%: format_size's rounding


def test_rows_are_the_files_in_flight_and_leave_when_they_end() -> None:
    view = _view([MiB, MiB, None])
    view.tick(0, MiB // 2, MiB)
    view.tick(2, 1000, None)
    rows = _frame(view)[1:]
    assert [row.split()[0] for row in rows] == ["file0.bin", "file2.bin"]
    assert rows[0].endswith("512 KiB/1.00 MiB") and rows[1].endswith("1000 B")
    view.finished(_result(0))
    assert [row.split()[0] for row in _frame(view)[1:]] == ["file2.bin"]


def test_late_tick_does_not_resurrect_a_finished_file() -> None:
    view = ProgressView(True, {0: "a", 1: "b"}, {0: 10, 1: None})  # not started: draws nothing
    view.tick(0, 5, 10)
    view.tick(1, 5, None)
    assert view.active == ["a", "b"]
    view.finished(_result(0))
    view.tick(0, 5, 10)  # the last tick, overtaken by the result
    assert view.active == ["b"]


def test_rows_fit_the_terminal_and_say_how_many_more() -> None:
    view = _view([MiB] * 5000)
    for i in range(5000):
        view.tick(i, 1, MiB)
    lines = _frame(view, height=12)
    assert len(lines) <= 12
    assert lines[0].startswith("all files 0/5000") and lines[-1] == f"and {5000 - (len(lines) - 2)} more in flight"


def test_bytes_and_eta_from_known_sizes() -> None:
    clock = _Clock()
    view = _view([4 * MiB, 4 * MiB], clock)
    clock.now += 2
    view.tick(0, 2 * MiB, 4 * MiB)
    view.tick(0, 9 * MiB, 4 * MiB)  # a restarted segment sends bytes again: the file still has 4 MiB
    line = _frame(view)[0]
    assert "4.00 MiB/8.00 MiB" in line and "ETA 0:00:01" in line  # 4 MiB left at 5.5 MiB/s
    view.finished(_result(0, size=4 * MiB))
    view.finished(_result(1, Status.FAILED, size=None))  # nothing came: the total keeps what arrived
    assert "4.00 MiB/4.00 MiB" in _frame(view)[0]


def test_while_sizes_are_unknown_the_bar_counts_files_and_the_bytes_no_total() -> None:
    # Bytes over the sizes known so far filled the bar at once: 156 MiB/156 MiB with 608 of 3,003 files done.
    view = _view([None, None, None, MiB])
    view.tick(0, 1000, None)
    view.finished(_result(0, size=1000))
    line = _frame(view)[0]
    assert "1000 B so far" in line and "/1.00 MiB" not in line, line
    bar = line.split("all files 1/4", 1)[1].split("1000 B", 1)[0].strip()
    assert bar == _bar(1, 4) != _bar(1, 1), "a quarter full: one file of four"


def _bar(completed: int, total: int) -> str:
    console = Console(file=io.StringIO(), width=120, color_system=None, legacy_windows=False)
    console.print(ProgressBar(total=total, completed=completed, width=_BAR_WIDTH))
    return console.file.getvalue().strip()  # type: ignore[attr-defined,no-any-return]


def test_eta_from_files_while_sizes_are_unknown() -> None:
    clock = _Clock()
    view = _view([None, None, None, None], clock)
    assert "ETA -:--:--" in _frame(view)[0]
    clock.now += 10
    view.finished(_result(0))
    assert "ETA 0:00:30" in _frame(view)[0]  # three files left at ten seconds a file


def _jobs(builtin: FaultServer, tmp_path: Path, count: int, size: int) -> list[pool.Task]:
    urls = [builtin.add(f"p{i}.bin", content(f"p{i}", size)) for i in range(count)]
    jobs = manifest.load(write_manifest(tmp_path, urls, workers=1, defaults={"segments": 1})).jobs
    return [(job, None) for job in jobs]


class _LateInterrupt(Batch):
    """A batch that gets a Ctrl-C just after its last result was reported, before its loop looks again:
    as the signal, or (off the main thread, where no handler can be set) as KeyboardInterrupt itself."""

    def __init__(self, how: str) -> None:
        self.how = how
        super().__init__(1)

    def _step(self, open_: dict[int, pool.Task], on_tick: Send, on_result: Callable[[FileResult], None]) -> None:
        super()._step(open_, on_tick, on_result)
        if open_:
            return
        if self.how == "signal":
            os.kill(os.getpid(), signal.SIGINT)
        else:
            raise KeyboardInterrupt


def test_an_interrupt_after_the_last_result_still_ends_the_run_as_interrupted(
    builtin: FaultServer, tmp_path: Path
) -> None:
    # It used to be counted and then forgotten: every file had finished, so the run ended with exit 0.
    tasks = _jobs(builtin, tmp_path, 3, 4096)
    results: list[FileResult] = []
    batch = _LateInterrupt("signal")
    try:
        assert batch.run(tasks, lambda *_: None, results.append, lambda: None), "the stop was forgotten"
    finally:
        batch.close()
    assert sorted(r.status for r in results) == [Status.DOWNLOADED] * 3, "every result still reported, once"


def test_an_interrupt_off_the_main_thread_after_the_last_result_too(builtin: FaultServer, tmp_path: Path) -> None:
    tasks = _jobs(builtin, tmp_path, 2, 4096)
    raised: list[bool] = []

    def run() -> None:
        batch = _LateInterrupt("exception")
        try:
            raised.append(batch.run(tasks, lambda *_: None, lambda _: None, lambda: None))
        finally:
            batch.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=60)
    assert raised == [True], "the stop it asked for was forgotten"


def test_a_signal_while_the_handlers_go_in_leaves_none_of_them_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    # A SIGTERM right after SIGINT's handler went in raises there (cli's handler): SIGINT kept a handler
    # that only counts, and every later Ctrl-C of the process was counted by a batch long gone.
    install = signal.signal

    def sigterm_arrives(number: int, handler: object) -> object:
        if number == signal.SIGTERM:
            raise KeyboardInterrupt
        return install(number, handler)  # type: ignore[arg-type]

    before = signal.getsignal(signal.SIGINT)
    batch = Batch(1)
    monkeypatch.setattr(signal, "signal", sigterm_arrives)
    try:
        with pytest.raises(KeyboardInterrupt):
            batch.run([], lambda *_: None, lambda _: None, lambda: None)
    finally:
        monkeypatch.undo()
        batch.close()
    assert signal.getsignal(signal.SIGINT) is before


def test_a_stop_after_the_last_result_still_prints_the_summary_and_writes_the_report(
    builtin: FaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # It raised KeyboardInterrupt out of the batch: exit 130, but no summary and no report, so a failure among
    # the finished files was never shown.
    urls = [builtin.add("ok.bin", content("ok", 4096)), builtin.add_error("bad.bin", 404)]
    manifest_path = write_manifest(tmp_path, urls, workers=1)
    monkeypatch.setattr(executor, "Batch", lambda *_: _LateInterrupt("signal"))
    code = cli.main(["run", str(manifest_path), "--report", str(tmp_path / "r.json")])
    lines = capsys.readouterr().out.splitlines()
    assert code == 130
    assert lines[-1].startswith("FAILED: interrupted after every file had finished; 2 files"), lines
    assert any("bad.bin" in line and "HTTP 404" in line for line in lines), lines
    assert (tmp_path / "r.json").exists()
