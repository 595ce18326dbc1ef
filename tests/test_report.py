"""The report package: progress, the summary in a pipe and on a terminal, the JSON report's path, encodings."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import shutil
import struct
import subprocess
import sys
import termios
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

import pytest

from bulkdl.parent.report.page import print_page
from bulkdl.parent.report.summary import About, Totals, summary_page
from bulkdl.values import FileResult, Status

from .conftest import cli_env, write_manifest
from .httpserver import FaultServer, content

DIGEST = "ab" * 32
MiB = 1024**2


def _result(index: int, status: str = "downloaded", **changes: object) -> FileResult:
    base = FileResult(index, f"dir/file{index}.bin", f"http://h/{index}", Status(status), 2048, 2048, DIGEST, 1.5)
    return FileResult(**{**{f: getattr(base, f) for f in FileResult.__dataclass_fields__}, **changes})  # type: ignore[arg-type]


def _summary_of(results: list[FileResult], file: TextIO) -> None:
    about = About("title", Path("/m.yaml"), datetime.now(timezone.utc))
    print_page(summary_page(results, Totals.of(results, 3.0), {}, about), file)


def test_summary_in_a_pipe_keeps_paths_and_digests_whole_with_reasons_and_notes_beside_them() -> None:
    results = [
        _result(0, name="d/" + "n" * 200),
        _result(1, "failed", sha256=None, size=None, transferred=0, error="HTTP 404 Not Found"),
        _result(2, notes=("x",)),
    ]
    out = io.StringIO()  # not a terminal
    _summary_of(results, out)
    lines = out.getvalue().splitlines()
    assert sum(line.split()[0] in ("d/" + "n" * 200, "dir/file2.bin") and line.endswith(DIGEST) for line in lines) == 2
    assert any(
        line.split()[:2] == ["dir/file1.bin", "failed"] and line.endswith("HTTP 404 Not Found") for line in lines
    )
    assert lines[lines.index(next(line for line in lines if "dir/file2.bin" in line)) + 1].strip() == "note: x"
    assert lines[-1].startswith("FAILED: 1 of 3 files failed (2 new), 4.00 KiB in place, 4.00 KiB received, 3.0s;")


def test_summary_on_a_narrow_terminal_is_coloured_and_never_folds_or_cuts() -> None:
    results = [_result(0, name="d/" + "n" * 200), _result(1, "failed", sha256=None, size=None, error="HTTP 404")]
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    with open(slave, "w", encoding="utf-8") as terminal:
        _summary_of(results, terminal)
    shown = os.read(master, 65536).decode()
    os.close(master)
    plain = re.sub(r"\x1b\[[0-9;]*m", "", shown)
    assert plain != shown, "coloured"
    assert any(line.startswith("  d/" + "n" * 200) and line.endswith(DIGEST) for line in plain.splitlines()), plain


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
    assert stdout.splitlines()[-1].startswith(
        f"FAILED: the report {reports / 'last.json'} could not be written; 1 file"
    )


def _bulkdl(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "bulkdl", *map(str, args)]
    return subprocess.run(argv, cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("encoding", "shown"), [("latin-1", "café.bin"), ("ascii", "caf\\xe9.bin")])
def test_a_stdout_that_is_not_utf8_gets_the_whole_summary(
    builtin: FaultServer, tmp_path: Path, encoding: str, shown: str
) -> None:
    manifest = write_manifest(tmp_path, [{"url": builtin.add("c.bin", content("c", 3000)), "path": "café.bin"}])
    for command in (["run"], ["run", "--dry-run"], ["verify", "--summary", "full"]):
        argv = [sys.executable, "-m", "bulkdl", *command, str(manifest)]
        done = subprocess.run(
            argv, cwd=tmp_path, env=cli_env(PYTHONIOENCODING=encoding), capture_output=True, timeout=60
        )
        stdout, stderr = done.stdout.decode(encoding), done.stderr.decode(encoding)  # strict: all of it encodable
        assert done.returncode == 0 and "Traceback" not in stderr, stderr
        assert stdout.startswith("bulkdl") and " 1 file -> " in stdout.splitlines()[0], stdout
        assert any(re.match(rf"\W*{re.escape(shown)}[ |]", row) for row in stdout.splitlines()), stdout  # its own cell
    assert (tmp_path / "mirror/café.bin").read_bytes() == content("c", 3000)
