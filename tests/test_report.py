"""The report module rendered into fixed-width, colourless consoles."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from bulkdl.parent.report.progress import ProgressView
from bulkdl.parent.report.summary import Totals, print_summary, summary_table
from bulkdl.values import FileResult, Status

from .conftest import cli_env, write_manifest
from .httpserver import FaultServer, content

DIGEST = "ab" * 32
MiB = 1024**2


def _result(index: int, status: str = "downloaded", **changes: object) -> FileResult:
    base = FileResult(index, f"dir/file{index}.bin", f"http://h/{index}", Status(status), 2048, 2048, DIGEST, 1.5)
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


@pytest.mark.parametrize("where", ["under a file", "a directory"])
@pytest.mark.parametrize("command", ["run", "verify"])
def test_an_unwritable_report_is_refused_before_anything_is_done(
    builtin: FaultServer, tmp_path: Path, where: str, command: str
) -> None:
    manifest = write_manifest(tmp_path, [builtin.add("r.bin", content("r", 5000))])
    (tmp_path / "a-file").write_text("")
    (tmp_path / "a-dir").mkdir()
    report = {"under a file": tmp_path / "a-file/report.json", "a directory": tmp_path / "a-dir"}[where]
    reason = {"under a file": "Not a directory", "a directory": "Is a directory"}[where]
    done = _bulkdl(command, manifest, "--report", report, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [f"bulkdl: cannot write the report {report}: {reason}"]
    assert builtin.requests() == [] and not (tmp_path / "mirror/r.bin").exists(), "nothing was downloaded"
    assert list((tmp_path / "a-dir").iterdir()) == [], "the probe left nothing"


def test_a_report_that_cannot_be_written_at_the_end_is_one_line(builtin: FaultServer, tmp_path: Path) -> None:
    data = content("slow", 2 * MiB)
    manifest = write_manifest(tmp_path, [builtin.add("slow.bin", data, rate=MiB)], defaults={"segments": 1})
    reports = tmp_path / "reports"
    argv = [sys.executable, "-m", "bulkdl", "run", str(manifest), "--report", str(reports / "last.json")]
    with subprocess.Popen(
        argv, cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as run:
        lock = tmp_path / "mirror/.bulkdl/lock"
        deadline = time.monotonic() + 30
        while not (lock.exists() and lock.read_text().strip() == str(run.pid)):  # past the check, downloading
            assert time.monotonic() < deadline and run.poll() is None
            time.sleep(0.02)
        shutil.rmtree(reports)
        reports.write_text("now a file: the report's directory cannot be made")
        stdout, stderr = run.communicate(timeout=60)
    assert run.returncode == 1, stderr
    assert stderr.splitlines() == [f"bulkdl: could not write the report {reports / 'last.json'}: Not a directory"]
    assert "slow.bin" in stdout and (tmp_path / "mirror/slow.bin").read_bytes() == data


def _bulkdl(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "bulkdl", *map(str, args)]
    return subprocess.run(argv, cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("encoding", "shown"), [("latin-1", "café.bin"), ("ascii", "caf\\xe9.bin")])
def test_a_stdout_that_is_not_utf8_gets_the_whole_summary(
    builtin: FaultServer, tmp_path: Path, encoding: str, shown: str
) -> None:
    manifest = write_manifest(tmp_path, [{"url": builtin.add("c.bin", content("c", 3000)), "path": "café.bin"}])
    for command in (["run"], ["run", "--dry-run"], ["verify"]):
        argv = [sys.executable, "-m", "bulkdl", *command, str(manifest)]
        done = subprocess.run(
            argv, cwd=tmp_path, env=cli_env(PYTHONIOENCODING=encoding), capture_output=True, timeout=60
        )
        stdout, stderr = done.stdout.decode(encoding), done.stderr.decode(encoding)  # strict: all of it encodable
        assert done.returncode == 0 and "Traceback" not in stderr, stderr
        assert stdout.startswith("bulkdl") and " 1 files -> " in stdout.splitlines()[0], stdout
        assert any(re.match(rf"\W*{re.escape(shown)}[ |]", row) for row in stdout.splitlines()), stdout  # its own cell
    assert (tmp_path / "mirror/café.bin").read_bytes() == content("c", 3000)
