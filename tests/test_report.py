"""The report module rendered into fixed-width, colourless consoles."""

from __future__ import annotations

import io

from rich.console import Console

from bulkdl.fetch import FileResult
from bulkdl.report import ProgressView, Totals, print_summary, summary_table

DIGEST = "ab" * 32


def _result(index: int, status: str = "downloaded", **changes: object) -> FileResult:
    base = FileResult(index, f"dir/file{index}.bin", f"http://h/{index}", status, 2048, 2048, DIGEST, 1.5)
    return FileResult(**{**{f: getattr(base, f) for f in FileResult.__dataclass_fields__}, **changes})  # type: ignore[arg-type]


def test_late_tick_does_not_resurrect_a_finished_file() -> None:
    view = ProgressView(True, {0: "a", 1: "b"}, {0: 10, 1: None})  # not started: draws nothing
    view.tick(0, 5, 10)
    view.tick(1, 5, None)
    assert view.active == ["a", "b"]
    view.finished(_result(0))
    view.tick(0, 5, 10)  # the last tick, overtaken by the result
    assert view.active == ["b"]


def test_summary_in_a_narrow_pipe_keeps_digests_whole() -> None:
    results = [
        _result(0),
        _result(1, "failed", sha256=None, size=None, error="HTTP 404 Not Found"),
        _result(2, notes=("x",)),
    ]
    out = io.StringIO()  # not a terminal
    print_summary(summary_table(results, Totals.of(results, 3.0), "title"), file=out)
    lines = out.getvalue().splitlines()
    assert sum(DIGEST in line for line in lines) == 2
    assert any("dir/file1.bin" in line and "HTTP 404 Not Found" in line for line in lines)
    assert any(line.strip().startswith("note: x") for line in lines)
    total = next(line for line in lines if line.strip().startswith("total"))
    assert "3 files" in total and "4.00 KiB" in total
    assert any(line.strip() == "2 downloaded, 1 failed" for line in lines)


def test_summary_fits_a_terminal_without_wrapping_digests() -> None:
    results = [_result(i, status) for i, status in enumerate(["downloaded", "skipped", "interrupted"])]
    results.append(_result(3, "failed", sha256=None, size=None, error="HTTP 404 Not Found"))
    out = io.StringIO()
    Console(file=out, width=120).print(summary_table(results, Totals.of(results, 3.0), "title"))
    assert out.getvalue().count(DIGEST) == 3, out.getvalue()


def test_summary_in_a_narrow_terminal_folds_digests_but_never_cuts_them() -> None:
    results = [_result(0), _result(1, "failed", sha256=None, size=None, error="HTTP 404 Not Found")]
    out = io.StringIO()
    Console(file=out, width=80).print(summary_table(results, Totals.of(results, 3.0), "title"))
    assert "".join(line.strip() for line in out.getvalue().splitlines()).count(DIGEST) == 1, out.getvalue()
