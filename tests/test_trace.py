"""What a run leaves for others: last-run.json, the ftpsync-style trace, the --changes file; each valid after
a kill -9 at any moment of its writing (the old one or the new)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from bulkdl import __version__
from bulkdl.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main
from bulkdl.parent import changes, trace
from bulkdl.values import FileResult, Status

from .conftest import REPO, Server, cli_env, run_cli, write_manifest
from .httpserver import FaultServer, content

TRACE = "project/trace/mirror.example.org"
# How mirror checkers read a trace (Debian's mirror tooling): the date line, then "Key: value" lines.
_DATE = re.compile(r"\w{3} +\w{3} +\d{1,2} +(?:\d{2}:){2}\d{2} +UTC +\d{4}")
_FIELD = re.compile(r"([\w -]+): (.*)")


def _files(server: Server, n: int = 4) -> tuple[list[dict[str, Any]], dict[str, bytes]]:
    data = {f"pool/f{i}.bin": content(f"trace{i}", 5000 + i) for i in range(n)}
    return [{"url": server.add(name, body), "path": name} for name, body in data.items()], data


def _record(tmp_path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((tmp_path / "mirror/.bulkdl/last-run.json").read_text())
    return loaded


def _trace(tmp_path: Path) -> dict[str, str]:
    first, *fields = (tmp_path / "mirror" / TRACE).read_text().splitlines()
    assert _DATE.fullmatch(first), first
    parsed = dict(m.groups() for m in map(_FIELD.fullmatch, fields) if m)
    assert len(parsed) == len(fields), fields
    return parsed


def test_a_run_leaves_its_record_its_trace_and_its_changes(server: Server, tmp_path: Path) -> None:
    entries, data = _files(server)
    manifest = write_manifest(tmp_path, entries, trace=TRACE)
    listed = tmp_path / "out/changes.txt"
    before = datetime.now(timezone.utc).replace(microsecond=0)
    first = run_cli("run", manifest, "--changes", listed, cwd=tmp_path)
    assert first.code == EXIT_OK, first.stdout + first.stderr
    record = _record(tmp_path)
    digest = hashlib.sha256(manifest.read_bytes()).hexdigest()
    assert record["manifest"] == str(manifest) and record["manifest_sha256"] == digest
    assert record["bulkdl_version"] == __version__ and record["host"] == os.uname().nodename
    assert record["files"] == {"downloaded": 4, "skipped": 0, "failed": 0, "interrupted": 0, "gone": 0, "removed": 0}
    assert record["bytes_in_place"] == record["bytes_received"] == sum(map(len, data.values()))
    assert record["exit_code"] == EXIT_OK
    started = datetime.fromisoformat(record["started"].replace("Z", "+00:00"))
    assert before <= started <= datetime.fromisoformat(record["ended"].replace("Z", "+00:00"))
    fields = _trace(tmp_path)
    assert fields["Creator"] == f"bulkdl {__version__}" and fields["Manifest-SHA256"] == digest
    assert fields["Files"] == "4" and fields["Bytes"] == str(sum(map(len, data.values())))
    assert listed.read_text() == "".join(f"+ {name}\n" for name in data)

    changed = "pool/f1.bin"
    server.update(changed, b"a new version")
    second = run_cli("run", manifest, "--changes", listed, cwd=tmp_path)
    assert second.code == EXIT_OK
    assert listed.read_text() == f"M {changed}\n", "only what changed upstream"
    assert _record(tmp_path)["files"]["skipped"] == 3
    third = run_cli("run", manifest, "--changes", listed, cwd=tmp_path)
    assert third.code == EXIT_OK and listed.read_text() == "", "nothing changed: an empty file, not last night's"


def test_a_failed_run_keeps_the_old_trace_and_records_its_failure(builtin: FaultServer, tmp_path: Path) -> None:
    entries, _ = _files(builtin)
    manifest = write_manifest(tmp_path, entries, trace=TRACE)
    assert run_cli("run", manifest, cwd=tmp_path).code == EXIT_OK
    good = (tmp_path / "mirror" / TRACE).read_bytes()
    broken = {"url": builtin.add_error("gone.bin", 500), "path": "pool/broken.bin", "retries": 0}
    manifest = write_manifest(tmp_path, [*entries, broken], trace=TRACE)
    failed = run_cli("run", manifest, cwd=tmp_path)
    assert failed.code == EXIT_FAILED
    record = _record(tmp_path)
    assert record["exit_code"] == EXIT_FAILED and record["files"]["failed"] == 1
    assert record["manifest_sha256"] == hashlib.sha256(manifest.read_bytes()).hexdigest()
    assert (tmp_path / "mirror" / TRACE).read_bytes() == good, "a downstream mirror must not trust this run"


def test_trace_on_the_command_line_wins_over_the_manifest(builtin: FaultServer, tmp_path: Path) -> None:
    entries, _ = _files(builtin, 1)
    manifest = write_manifest(tmp_path, entries, trace=TRACE)
    assert run_cli("run", manifest, "--trace", "elsewhere/trace", cwd=tmp_path).code == EXIT_OK
    assert (tmp_path / "elsewhere/trace").read_text().startswith(trace.date_line(datetime.now(timezone.utc))[:10])
    assert not (tmp_path / "mirror" / TRACE).exists()


def test_a_trace_is_never_written_through_a_symlink_out_of_dest(builtin: FaultServer, tmp_path: Path) -> None:
    entries, _ = _files(builtin, 1)
    manifest = write_manifest(tmp_path, entries, trace=TRACE)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "mirror").mkdir()
    (tmp_path / "mirror/project").symlink_to(elsewhere)
    result = run_cli("run", manifest, cwd=tmp_path)
    # Refused before anything is fetched, as the checksums file is: a run that could not leave its trace
    # would leave a downstream mirror reading an old one.
    assert result.code == EXIT_USAGE, result.stdout + result.stderr
    assert list(elsewhere.iterdir()) == []
    expected = f"bulkdl: cannot write the trace {tmp_path / 'mirror' / TRACE}: {tmp_path / 'mirror/project'} is a"
    assert result.stderr.startswith(expected) and "outside dest" in result.stderr, result.stderr


def test_an_unwritable_changes_file_is_refused_before_anything_is_fetched(builtin: FaultServer, tmp_path: Path) -> None:
    entries, _ = _files(builtin, 1)
    manifest = write_manifest(tmp_path, entries)
    (tmp_path / "a-file").write_text("")
    result = run_cli("run", manifest, "--changes", tmp_path / "a-file/changes.txt", cwd=tmp_path)
    assert result.code == 2
    assert "cannot write the changes file" in result.stderr and "Not a directory" in result.stderr
    assert builtin.requests() == [] and not (tmp_path / "mirror/.bulkdl/last-run.json").exists()


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("../trace", "'..'; it would escape dest"),
        ("/srv/trace", "relative to dest"),
        ("pool/f0.bin", "'pool/f0.bin' is also a file of the manifest"),
        (".bulkdl", "collides with the names bulkdl uses"),
    ],
)
def test_a_trace_must_be_a_file_of_its_own_below_dest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str, problem: str
) -> None:
    manifest = write_manifest(tmp_path, [{"url": "http://127.0.0.1:9/x", "path": "pool/f0.bin"}], trace=value)
    assert main(["check", str(manifest)]) == 2
    err = capsys.readouterr().err
    assert "trace: " in err and problem in err, err


@pytest.mark.parametrize(
    ("mark", "name", "line"),
    [
        ("+", "pool/a b.bin", "+ pool/a b.bin\n"),
        ("M", "ünïcode/名前.txt", "M ünïcode/名前.txt\n"),
        ("-", "back\\slash", "\\- back\\\\slash\n"),
        ("+", "new\nline", "\\+ new\\nline\n"),
        ("M", "carriage\rreturn\\", "\\M carriage\\rreturn\\\\\n"),
    ],
)
def test_a_name_cannot_forge_a_line(mark: str, name: str, line: str) -> None:
    assert changes.line(mark, name) == line
    assert line.count("\n") == 1


def _result(index: int, name: str, status: Status, sha256: str = "a" * 64, size: int = 1) -> FileResult:
    return FileResult(index, name, f"http://127.0.0.1/{name}", status, size, 0, sha256, 0.0)


def test_what_counts_as_a_change() -> None:
    results = [
        _result(0, "new", Status.DOWNLOADED),
        _result(1, "updated", Status.DOWNLOADED, sha256="b" * 64),
        _result(2, "same-bytes-again", Status.DOWNLOADED),  # --force, or touched on disk: nothing new downstream
        _result(3, "unchanged", Status.SKIPPED),
        _result(4, "failed", Status.FAILED),
        _result(5, "interrupted", Status.INTERRUPTED),
        _result(6, "gone", Status.GONE),
        _result(7, "pruned", Status.REMOVED),
    ]
    earlier = {r.name: ("a" * 64, 1) for r in results if r.name != "new"}
    assert changes.lines(results, earlier) == ["+ new\n", "M updated\n", "- pruned\n"]


@pytest.mark.parametrize("stamp", [1_700_000_000, 1_764_633_600, 1_796_083_200, 946_684_799])
def test_the_date_line_is_what_date_prints(stamp: int) -> None:
    done = subprocess.run(
        ["date", "-u", "-d", f"@{stamp}"], capture_output=True, text=True, check=True, env={"LC_ALL": "C"}
    )
    assert trace.date_line(datetime.fromtimestamp(stamp, timezone.utc)) == done.stdout.strip()


# Kills bulkdl (SIGKILL, as kill -9) at one moment of writing one record: its temp file opened, its data
# synced, just before its rename, or just after (at the fsync of its directory).
_KILLER = """
import os, signal, sys

_name, _at = os.environ["BULKDL_KILL_NAME"], os.environ["BULKDL_KILL_AT"]
_temp = "." + _name + ".bulkdl-tmp"
_renamed = False


def _kill():
    os.kill(os.getpid(), signal.SIGKILL)


def _hook(event, args):
    global _renamed
    if _renamed and event != "os.kill":  # os.kill is audited too
        _kill()
    path = args[0] if event in ("open", "bulkdl.sync") else args[1] if event == "os.rename" else None
    if not isinstance(path, str):
        return
    base = os.path.basename(path)
    if (_at, event, base) in (("open", "open", _temp), ("sync", "bulkdl.sync", _temp), ("rename", "os.rename", _name)):
        _kill()
    if (_at, event, base) == ("after", "os.rename", _name):
        _renamed = True


sys.addaudithook(_hook)
"""


@pytest.mark.parametrize(("target", "name"), [("record", "last-run.json"), ("trace", TRACE.rpartition("/")[2])])
def test_a_kill_9_leaves_the_old_record_or_the_new(
    builtin: FaultServer, tmp_path: Path, target: str, name: str
) -> None:
    entries, _ = _files(builtin, 2)
    manifest = write_manifest(tmp_path, entries, trace=TRACE)
    assert run_cli("run", manifest, cwd=tmp_path).code == EXIT_OK
    kept = tmp_path / "mirror" / (".bulkdl/last-run.json" if target == "record" else TRACE)
    old = kept.read_bytes()
    entries.append({"url": builtin.add("more.bin", b"one more file"), "path": "pool/more.bin"})
    manifest = write_manifest(tmp_path, entries, trace=TRACE)
    new_digest = hashlib.sha256(manifest.read_bytes()).hexdigest()
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_KILLER)
    for at in ("open", "sync", "rename", "after"):
        env = cli_env(PYTHONPATH=f"{site}:{REPO}", BULKDL_KILL_NAME=name, BULKDL_KILL_AT=at)
        argv = [sys.executable, "-m", "bulkdl", "run", str(manifest)]
        done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
        assert done.returncode == -signal.SIGKILL, f"killed {at}: {done.returncode} {done.stderr}"
        now = kept.read_bytes()
        if target == "record":
            json.loads(now)  # valid JSON whenever it was killed
        else:
            _trace(tmp_path)  # a trace a mirror checker can read
        if at == "after":
            assert new_digest in now.decode(), "the rename had happened: the new one"
        else:
            assert now == old, f"killed {at}: the old one, as it was"


def test_a_run_interrupted_before_its_downloads_is_recorded(builtin: FaultServer, tmp_path: Path) -> None:
    # Ctrl-C while the run decides, before the pool defers signals: the run ends by KeyboardInterrupt, which
    # its record says as 130. Eight files in one directory make it list that directory by its descriptor,
    # which imports never do.
    entries, _ = _files(builtin, 8)
    manifest = write_manifest(tmp_path, entries, trace=TRACE)
    assert run_cli("run", manifest, cwd=tmp_path).code == EXIT_OK
    good = (tmp_path / "mirror" / TRACE).read_bytes()
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_INTERRUPTER)
    env = cli_env(PYTHONPATH=f"{site}:{REPO}")
    argv = [sys.executable, "-m", "bulkdl", "run", str(manifest)]
    done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
    assert done.returncode == 130, done.stderr
    record = _record(tmp_path)
    assert record["exit_code"] == 130 and sum(record["files"].values()) == 0, "no file got as far as a result"
    assert (tmp_path / "mirror" / TRACE).read_bytes() == good


_INTERRUPTER = """
import sys


def _hook(event, args):
    if event == "os.listdir" and isinstance(args[0], int):
        raise KeyboardInterrupt


sys.addaudithook(_hook)
"""


def test_a_changes_file_that_cannot_be_written_fails_the_run_and_leaves_no_trace(
    builtin: FaultServer, tmp_path: Path
) -> None:
    # From review: it was one line on stderr, exit 0 and a fresh trace, so a downstream sync read last night's
    # list after a run that said it went well. Its directory becomes a file while the run downloads.
    manifest = write_manifest(tmp_path, [builtin.add("a", b"a", delay=2.0)], trace="trace")
    (tmp_path / "out").mkdir()
    argv = [sys.executable, "-m", "bulkdl", "run", str(manifest), "--changes", "out/changes"]
    with subprocess.Popen(argv, cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        while not (tmp_path / "mirror/.bulkdl").exists() and proc.poll() is None:
            time.sleep(0.01)
        (tmp_path / "out").rmdir()
        (tmp_path / "out").write_bytes(b"")
        stdout, stderr = proc.communicate(timeout=60)
    assert "bulkdl: could not write the changes file out/changes" in stderr.decode()
    assert stdout.decode().splitlines()[-1].startswith("FAILED: the changes file out/changes could not be written")
    assert (proc.returncode, (tmp_path / "mirror/trace").exists()) == (EXIT_FAILED, False)
