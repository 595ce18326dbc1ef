"""The report package: progress, the summary in a pipe and on a terminal, the JSON report and its schema, encodings."""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import pty
import re
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

import jsonschema
import pytest

import bulkdl
from bulkdl.parent.lock import DestinationLock
from bulkdl.parent.pool import OUT_OF_TIME
from bulkdl.parent.report import jsonreport, reportschema
from bulkdl.parent.report.page import print_page
from bulkdl.parent.report.summary import About, Totals, summary_page
from bulkdl.values import NOT_MODIFIED, FileResult, Status

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
    for command in (["run"], ["run", "--dry-run", "--summary", "full"], ["verify", "--summary", "full"]):
        argv = [sys.executable, "-m", "bulkdl", *command, str(manifest)]
        done = subprocess.run(
            argv, cwd=tmp_path, env=cli_env(PYTHONIOENCODING=encoding), capture_output=True, timeout=60
        )
        stdout, stderr = done.stdout.decode(encoding), done.stderr.decode(encoding)  # strict: all of it encodable
        assert done.returncode == 0 and "Traceback" not in stderr, stderr
        assert stdout.startswith("bulkdl") and " 1 file -> " in stdout.splitlines()[0], stdout
        assert any(re.match(rf"\W*{re.escape(shown)}[ |]", row) for row in stdout.splitlines()), stdout  # its own cell
    assert (tmp_path / "mirror/café.bin").read_bytes() == content("c", 3000)


# The JSON report, a stable interface: its schema in every exit path, a report replacing an earlier one even
# when the command fails before it looks at any file, and the error codes.

_SCHEMA = reportschema.schema()
_OLD = '{"files": [], "old": "last night\'s report"}\n'  # a report, which an early failure may replace


def _valid(report: Path, code: int) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(report.read_text())
    jsonschema.validate(doc, _SCHEMA)
    assert doc["exit_code"] == code and doc["schema_version"] == 1 and doc["bulkdl_version"] == bulkdl.__version__
    assert set(doc["totals"]) >= {name for name, _ in jsonreport.STATUSES}, "every total, zero or not"
    assert doc["started"] <= doc["ended"]
    return doc


def _report_of(manifest: Path, cwd: Path, *extra: str | Path) -> tuple[subprocess.CompletedProcess[str], Path]:
    report = cwd / "out/report.json"
    report.parent.mkdir(exist_ok=True)
    report.write_text(_OLD)
    return _bulkdl("run", manifest, "--report", report, *extra, cwd=cwd), report


def test_report_of_a_run_that_succeeds(builtin: FaultServer, tmp_path: Path) -> None:
    data = content("a", 5000)
    manifest = write_manifest(
        tmp_path, [{"url": builtin.add("a.bin", data), "sha256": hashlib.sha256(data).hexdigest()}]
    )
    done, report = _report_of(manifest, tmp_path)
    assert done.returncode == 0, done.stderr
    doc = _valid(report, 0)
    assert doc["command"] == "run" and doc["manifest"] == str(manifest.absolute()) and doc["error"] is None
    assert [(f["status"], f["outcome"], f["code"]) for f in doc["files"]] == [("new", "downloaded", None)]
    assert doc["totals"]["new"] == 1 and doc["totals"]["failed"] == doc["totals"]["removed"] == 0
    again, report = _report_of(manifest, tmp_path)  # the pinned digest proves the copy: no request
    assert [f["status"] for f in _valid(report, 0)["files"]] == ["unchanged"], again.stdout
    asked, report = _report_of(manifest, tmp_path, "--revalidate")
    assert [f["status"] for f in _valid(report, 0)["files"]] == ["not modified"], asked.stdout


def test_report_of_a_run_with_failures_gives_each_its_code(builtin: FaultServer, tmp_path: Path) -> None:
    entries = [
        builtin.add_error("missing.bin", 404),
        {"url": builtin.add("wrong.bin", content("w", 3000)), "sha256": "0" * 64},
        {"url": builtin.add("short.bin", content("s", 3000)), "size": 4000},
        "http://127.0.0.1:9/refused.bin",  # the discard port: nothing listens
        builtin.add("fine.bin", content("f", 3000)),
    ]
    manifest = write_manifest(tmp_path, entries, defaults={"retries": 0})
    done, report = _report_of(manifest, tmp_path)
    assert done.returncode == 1, done.stderr
    doc = _valid(report, 1)
    codes = {f["path"]: (f["status"], f["code"]) for f in doc["files"]}
    assert codes == {
        "missing.bin": ("failed", "http_4xx"),
        "wrong.bin": ("failed", "checksum"),
        "short.bin": ("failed", "size"),
        "refused.bin": ("failed", "host_unreachable"),
        "fine.bin": ("new", None),
    }, doc["files"]
    assert doc["totals"]["failed"] == 4 and doc["totals"]["new"] == 1


@pytest.mark.parametrize("why", ["bad manifest", "unwritable --changes"])
def test_a_run_refused_at_the_start_replaces_the_report_with_its_error(
    builtin: FaultServer, tmp_path: Path, why: str
) -> None:
    manifest = write_manifest(tmp_path, [builtin.add("a.bin", content("a", 500))])
    extra: list[str | Path] = []
    if why == "bad manifest":
        manifest.write_text("version: 1\ndest: mirror\nfiles: 3\n")
    else:
        (tmp_path / "a-file").write_text("")
        extra = ["--changes", tmp_path / "a-file/changes.txt"]
    done, report = _report_of(manifest, tmp_path, *extra)
    assert done.returncode == 2, done.stderr
    doc = _valid(report, 2)
    assert doc["files"] == [] and doc["error"]["code"] == ("manifest" if why == "bad manifest" else "usage")
    assert doc["error"]["message"].splitlines()[0] in done.stderr
    assert builtin.requests() == []


def test_a_run_that_finds_the_destination_locked_replaces_the_report(builtin: FaultServer, tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, [builtin.add("a.bin", content("a", 500))])
    with DestinationLock(tmp_path / "mirror"):
        done, report = _report_of(manifest, tmp_path)
    assert done.returncode == 3, done.stderr
    doc = _valid(report, 3)
    assert doc["files"] == [] and doc["error"]["code"] == "locked" and builtin.requests() == []


def test_report_of_a_run_whose_prune_the_cap_refused(builtin: FaultServer, tmp_path: Path) -> None:
    both = [builtin.add("a.bin", content("a", 500)), builtin.add("b.bin", content("b", 600))]
    assert _report_of(write_manifest(tmp_path, both), tmp_path)[0].returncode == 0
    done, report = _report_of(write_manifest(tmp_path, both[:1], prune=True), tmp_path, "--max-delete", "0")
    assert done.returncode == 4, done.stderr
    assert [f["status"] for f in _valid(report, 4)["files"]] == ["not modified"]


def test_report_of_a_run_out_of_time(builtin: FaultServer, tmp_path: Path) -> None:
    slow = {"url": builtin.add("slow.bin", content("slow", 4 * MiB), rate=256 * 1024), "size": 4 * MiB}
    manifest = write_manifest(tmp_path, [slow], defaults={"segments": 1, "min_speed": 0})
    done, report = _report_of(manifest, tmp_path, "--max-duration", "2s")
    assert done.returncode == 5, done.stdout + done.stderr
    assert [(f["status"], f["code"]) for f in _valid(report, 5)["files"]] == [("interrupted", "out_of_time")]


def test_report_of_a_run_stopped_by_sigterm(builtin: FaultServer, tmp_path: Path) -> None:
    slow = builtin.add("slow.bin", content("slow", 4 * MiB), rate=256 * 1024)
    manifest = write_manifest(tmp_path, [slow], defaults={"segments": 1, "min_speed": 0})
    report = tmp_path / "report.json"
    report.write_text(_OLD)
    argv = [sys.executable, "-m", "bulkdl", "run", str(manifest), "--report", str(report)]
    with subprocess.Popen(argv, cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE) as run:
        deadline = time.monotonic() + 30
        while not list((tmp_path / "mirror").glob("slow.bin.*")):  # downloading
            assert time.monotonic() < deadline and run.poll() is None
            time.sleep(0.02)
        run.send_signal(signal.SIGTERM)
        _, stderr = run.communicate(timeout=60)
    assert run.returncode == 130, stderr
    assert [(f["status"], f["code"]) for f in _valid(report, 130)["files"]] == [("interrupted", "interrupted")]


def test_report_of_verify(builtin: FaultServer, tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, [builtin.add("a.bin", content("a", 500)), builtin.add("b.bin", b"b")])
    assert _report_of(manifest, tmp_path)[0].returncode == 0
    (tmp_path / "mirror/a.bin").write_bytes(b"x" * 500)
    (tmp_path / "mirror/b.bin").unlink()
    report = tmp_path / "verify.json"
    done = _bulkdl("verify", manifest, "--report", report, cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    doc = _valid(report, 1)
    assert doc["command"] == "verify"
    assert [(f["status"], f["code"]) for f in doc["files"]] == [("corrupt", "checksum"), ("missing", "missing")]


_NOT_INSTALLED = ("failed", "interrupted", "gone", "removed")


def _every_kind() -> list[FileResult]:
    """A result of each kind a report can hold, with the state rows (earlier) that make their labels."""
    return [
        _result(0),
        _result(1, name="updated"),
        _result(2, name="same"),
        _result(3, "skipped"),
        _result(4, "skipped", notes=(NOT_MODIFIED,)),
        _result(5, "failed", sha256=None, size=None, transferred=0, error="HTTP 503", code="http_5xx"),
        _result(6, "interrupted", sha256=None, size=None, notes=(OUT_OF_TIME,)),
        _result(7, "gone", error="gone upstream (HTTP 404); local copy kept", code="http_4xx"),
        _result(8, "removed"),
    ]


def test_every_status_a_run_makes_validates_and_is_counted() -> None:
    results = _every_kind()
    earlier = {"updated": ("cd" * 32, 2048), "same": (DIGEST, 2048)}
    header = jsonreport.Header("run", Path("/m.yaml"), datetime.now(timezone.utc), 1)
    doc = jsonreport.document(header, results, Totals.of(results, 1.0), earlier, repairing=False)
    jsonschema.validate(doc, _SCHEMA)
    statuses = [f["status"] for f in doc["files"]]  # type: ignore[index]
    assert statuses == [*("new", "updated", "re-fetched", "unchanged", "not modified"), *_NOT_INSTALLED]
    assert [f["code"] for f in doc["files"]][5:7] == ["http_5xx", "out_of_time"]  # type: ignore[index]
    assert all(doc["totals"][s] == 1 for s in statuses)  # type: ignore[index]


def test_the_schema_refuses_a_failure_without_a_code_and_a_missing_total() -> None:
    results = [_result(0, "failed", error="HTTP 404")]
    header = jsonreport.Header("run", Path("/m.yaml"), datetime.now(timezone.utc), 1)
    doc: Any = jsonreport.document(header, results, Totals.of(results, 1.0), {}, repairing=False)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, _SCHEMA)
    doc["files"][0]["code"] = "http_4xx"
    jsonschema.validate(doc, _SCHEMA)
    del doc["totals"]["gone"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, _SCHEMA)


def test_report_schema_is_printed_by_the_cli(tmp_path: Path) -> None:
    done = _bulkdl("report-schema", cwd=tmp_path)
    assert done.returncode == 0 and json.loads(done.stdout) == _SCHEMA
    jsonschema.Draft202012Validator.check_schema(_SCHEMA)


def test_a_run_refused_at_the_start_never_replaces_a_file_that_is_no_report(tmp_path: Path) -> None:
    # A bad manifest cannot say where the mirror is: --report pointed at one of its files must not replace it.
    (tmp_path / "bad.yaml").write_text("version: 1\nfiles: [1]\n")
    precious = tmp_path / "a.iso"
    precious.write_bytes(b"not a report")
    argv = [sys.executable, "-m", "bulkdl", "run", "bad.yaml", "--report", "a.iso"]
    done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, env=cli_env(), stdin=subprocess.DEVNULL)
    assert done.returncode == 2, done.stderr
    assert precious.read_bytes() == b"not a report"
