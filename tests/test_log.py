"""The event log (-v, --log-file): JSON lines through the real CLI against the fault server."""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from bulkdl import cli
from bulkdl.parent import log, pool
from bulkdl.worker import crossing

from .conftest import REPO, cli_env, run_cli, write_manifest
from .httpserver import FaultServer, content
from .test_terminal import _run_in_pty

KiB, MiB = 1024, 1024**2
_RFC3339_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
_KEYS = {kind: {"ts", "event", *(k.split(" ")[0] for k in keys.split(", "))} for kind, keys, _ in log.EVENTS}
_PER_FILE = {"file_start", "retry", "resume", "skip", "fallback", "steal", "ramp", "file_end", "failure"}


def _lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def _ts(event: dict[str, Any]) -> datetime:
    assert _RFC3339_MS.fullmatch(event["ts"]), event["ts"]
    return datetime.fromisoformat(event["ts"].replace("Z", "+00:00"))


def _one(events: list[dict[str, Any]], kind: str, path: str) -> dict[str, Any]:
    found = [e for e in events if e["event"] == kind and e.get("path") == path]
    assert len(found) == 1, f"{kind} of {path}: {found}"
    return found[0]


def test_the_log_of_a_run_with_a_retry_a_resume_a_fallback_a_steal_a_skip_and_a_failure(
    builtin: FaultServer, tmp_path: Path
) -> None:
    same = content("same", 3 * KiB)
    pinned = {"url": builtin.add("same.bin", same), "sha256": hashlib.sha256(same).hexdigest()}
    defaults = {"segments": 4, "min_segment_size": "256KiB"}
    first = run_cli("run", write_manifest(tmp_path, [pinned], defaults=defaults), cwd=tmp_path)
    assert first.code == 0, first.stderr
    urls = [
        pinned,  # proven current by the state: skipped without a request
        builtin.add("retry.bin", content("retry", 5 * KiB), fail_first=1, retry_after="0"),  # a 503 first
        builtin.add("resume.bin", content("resume", 200 * KiB), drop_after=100_000, drops=1),  # broken mid-body
        builtin.add("whole.bin", content("whole", 1 * MiB), ranges=False),  # a 200 to the probe's Range
        # Four ranges of 1 MiB, the second trickling: alone it would take 8 s, so the others split it.
        builtin.add("tail.bin", content("tail", 4 * MiB), slow_at=1 * MiB, slow_rate=128 * KiB),
        builtin.add_error("missing.bin", 404),
    ]
    written = tmp_path / "logs" / "run.log"
    result = run_cli(
        "run", write_manifest(tmp_path, urls, defaults=defaults), "-v", "--log-file", written, cwd=tmp_path
    )
    assert result.code == 1, result.stderr
    events = _lines(written.read_text())
    on_stderr = [line for line in result.stderr.splitlines() if line.startswith("{")]
    assert _lines("\n".join(on_stderr)) == events, "-v and --log-file wrote different lines"
    for event in events:
        assert set(event) == _KEYS[event["event"]] | ({"path"} if event["event"] in _PER_FILE else set()), event
    stamps = [_ts(e) for e in events]
    assert stamps == sorted(stamps), "timestamps go back"
    assert events[0]["event"] == "run_start" and events[-1]["event"] == "run_end"
    assert events[0]["files"] == 6 and events[0]["manifest"] == str(tmp_path / "manifest.yaml")
    assert events[-1]["exit_code"] == result.code == 1
    assert events[-1]["files"] == {"unchanged": 1, "new": 4, "failed": 1}

    assert _one(events, "skip", "same.bin")["reason"].startswith("unchanged: ")
    assert not [e for e in events if e.get("path") == "same.bin" and e["event"] != "skip"]
    retry = _one(events, "retry", "retry.bin")
    assert retry["attempt"] == 1 and retry["delay"] == 0 and "503" in retry["reason"]
    assert retry["url"] == builtin.base_url + "/retry.bin"
    assert _one(events, "resume", "resume.bin")["offset"] == 100_000
    assert "ignored Range" in _one(events, "fallback", "whole.bin")["why"]
    steals = [e for e in events if e["event"] == "steal"]
    assert steals and all(e["path"] == "tail.bin" and 1 * MiB < e["start"] < e["end"] <= 2 * MiB for e in steals)
    failure = _one(events, "failure", "missing.bin")
    assert failure["code"] == "http_4xx" and "404" in failure["message"]
    for name in ("retry.bin", "resume.bin", "whole.bin", "tail.bin", "missing.bin"):
        _one(events, "file_start", name)
        end = _one(events, "file_end", name)
        assert end["status"] == result.file(name)["status"]
        assert end["sha256"] == result.file(name)["sha256"]
        begun = [i for i, e in enumerate(events) if e.get("path") == name]
        assert events[begun[0]]["event"] == "file_start" and events[begun[-1]]["event"] == "file_end"


def test_a_run_without_a_log_writes_none_and_its_workers_gather_nothing(
    builtin: FaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    configs: list[crossing.Config] = []
    made = pool.Batch.__init__

    def spy(self: pool.Batch, *args: Any, **kwargs: Any) -> None:
        made(self, *args, **kwargs)
        configs.append(self._config)

    monkeypatch.setattr(pool.Batch, "__init__", spy)
    monkeypatch.chdir(tmp_path)
    manifest = write_manifest(tmp_path, [builtin.add("a.bin", b"a" * 100, fail_first=1, retry_after="0")])
    assert cli.main(["run", str(manifest)]) == 0
    assert configs and not any(c.events for c in configs), "workers were told to gather events"
    assert "{" not in capfd.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.yaml", "mirror"]
    # And the same run with a log turns gathering on: the spy would see it.
    assert cli.main(["run", str(manifest), "--force", "--log-file", str(tmp_path / "x.log")]) == 0
    assert configs[-1].events


def test_sigterm_ends_the_log_with_its_exit_code_and_the_next_run_logs_where_it_resumes(
    builtin: FaultServer, tmp_path: Path
) -> None:
    data = content("slow", 1 * MiB)
    url = builtin.add("slow.bin", data, rate=64 * KiB)  # four ranges of 256 KiB, 4 s each: running when stopped
    manifest = write_manifest(tmp_path, [url], defaults={"segments": 4, "min_segment_size": "256KiB"})
    written = tmp_path / "run.log"
    argv = [sys.executable, "-m", "bulkdl", "run", str(manifest), "--log-file", str(written)]
    parts = [tmp_path / f"mirror/slow.bin.part{k}" for k in range(4)]
    run = subprocess.Popen(argv, cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        # The log reaches the file while the run goes on (each poll), not only at its end.
        while not (written.exists() and '"file_start"' in written.read_text() and all(p.exists() for p in parts)):
            assert run.poll() is None and time.monotonic() < deadline, "the log never said the file started"
            time.sleep(0.02)
        while not all(p.stat().st_size for p in parts):
            assert run.poll() is None and time.monotonic() < deadline, "a segment never began"
            time.sleep(0.02)
        run.send_signal(signal.SIGTERM)
        code = run.wait(timeout=30)
    finally:
        run.kill()
        run.communicate()
    events = _lines(written.read_text())
    assert code == 130 and events[-1]["event"] == "run_end" and events[-1]["exit_code"] == 130
    assert _one(events, "file_end", "slow.bin")["status"] == "interrupted"

    have = {k: p.stat().st_size for k, p in enumerate(parts)}
    builtin.change("slow.bin", rate=None)
    again = run_cli("run", manifest, "--log-file", written, cwd=tmp_path)
    assert again.code == 0, again.stderr
    events = _lines(written.read_text())[len(events) :]  # appended after the first run's
    assert events[0]["event"] == "run_start" and events[-1]["exit_code"] == 0
    resumed = {e["segment"]: e["offset"] for e in events if e["event"] == "resume" and e["path"] == "slow.bin"}
    assert resumed == {k: k * 256 * KiB + n for k, n in have.items() if n < 256 * KiB}, (have, resumed)
    assert resumed, "no segment was left to resume"


def test_verify_repair_logs_its_downloads_as_the_report_names_them(builtin: FaultServer, tmp_path: Path) -> None:
    data = content("fixme", 10 * KiB)
    manifest = write_manifest(tmp_path, [builtin.add("fixme.bin", data)])
    assert run_cli("run", manifest, cwd=tmp_path).code == 0
    (tmp_path / "mirror/fixme.bin").write_bytes(b"x" * len(data))  # bit rot
    written, report = tmp_path / "verify.log", tmp_path / "verify.json"
    argv = ["verify", str(manifest), "--repair", "--log-file", str(written), "--report", str(report)]
    done = subprocess.run([sys.executable, "-m", "bulkdl", *argv], cwd=tmp_path, env=cli_env(), capture_output=True)
    assert done.returncode == 0, done.stderr
    events = _lines(written.read_text())
    assert events[0]["event"] == "run_start" and events[0]["command"] == "verify"
    end = _one(events, "file_end", "fixme.bin")
    assert end["status"] == json.loads(report.read_text())["files"][0]["status"] == "repaired"
    assert end["sha256"] == hashlib.sha256(data).hexdigest() and events[-1]["exit_code"] == 0


@pytest.mark.parametrize(("flags", "drawn"), [(["-v"], False), (["--log-file", "run.log"], True)])
def test_a_log_on_the_terminal_turns_live_progress_off(
    builtin: FaultServer, tmp_path: Path, flags: list[str], drawn: bool
) -> None:
    # Redraws would tear the lines -v writes to the same terminal; a log going to a file leaves progress on.
    urls = [builtin.add(f"tty{i}.bin", content(f"tty{i}", 2_000_000)) for i in range(3)]
    builtin.change("tty0.bin", delay=0.6)  # slow enough that the view refreshes at least once
    manifest = write_manifest(tmp_path, urls, workers=1, defaults={"segments": 1})
    code, output = _run_in_pty(["run", str(manifest), *flags], tmp_path)
    assert code == 0, output
    assert ("all files" in output) is drawn, output
    logged = [line.strip() for line in output.splitlines() if '"event":' in line]
    assert len(_lines("\n".join(logged))) == (0 if drawn else 3 * 2 + 2), output  # every line whole


@pytest.mark.parametrize(
    ("where", "says"),
    [
        ("a-file/run.log", "cannot write the log file"),  # its directory would be a regular file
        ("mirror/a.bin", "would overwrite a file of the mirror"),
        ("mirror/.bulkdl/run.log", "which holds the state of the mirror"),
        ("dangling.log", "cannot write the log file"),  # a symlink into a directory that does not exist
    ],
)
def test_an_unusable_log_file_is_one_line_and_exit_2_before_any_request(
    builtin: FaultServer, tmp_path: Path, where: str, says: str
) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    (tmp_path / "dangling.log").symlink_to(tmp_path / "no-such-directory" / "run.log")
    manifest = write_manifest(tmp_path, [builtin.add("a.bin", b"a")])
    done = subprocess.run(
        [sys.executable, "-m", "bulkdl", "run", str(manifest), "--log-file", str(tmp_path / where)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(),
    )
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1 and says in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert not builtin.requests("a.bin"), "something was fetched"


def test_help_and_the_readme_list_every_event(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    shown = capsys.readouterr().out
    section = (REPO / "README.md").read_text().split("\n### The event log", 1)[1].split("\n## ", 1)[0]
    for kind, keys, _ in log.EVENTS:
        assert kind in shown
        assert f"| `{kind}` | {keys} |" in section, kind


def test_a_line_is_never_stamped_before_the_one_above_it() -> None:
    # A worker's events arrive up to 50 ms late, after lines the parent wrote meanwhile.
    out = io.StringIO()
    written = log.Log([(out, "test")])
    for when, kind in ((1_700_000_000.250, "a"), (1_700_000_000.200, "b"), (1_700_000_001.0004, "c")):
        written.add(when, kind, None, {})
    written.flush()
    assert [e["ts"] for e in _lines(out.getvalue())] == [
        "2023-11-14T22:13:20.250Z",
        "2023-11-14T22:13:20.250Z",
        "2023-11-14T22:13:21.000Z",
    ]


@pytest.mark.parametrize("value", ['a"\\é\n', "", 0, -3, 2**70, None, True, False, 1.5, 0.1, 1e300, {"new": 3}, [1]])
def test_each_value_is_written_as_json_reads_it_back(value: Any) -> None:
    assert json.loads(log._value(value)) == value and type(json.loads(log._value(value))) is type(value)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_float_json_has_no_word_for_is_null(value: float) -> None:
    assert log._value(value) == "null"  # json.dumps would write NaN or Infinity, which jq refuses


class _Full(io.StringIO):
    def write(self, text: str) -> int:
        raise OSError(28, "No space left on device")


def test_a_log_that_cannot_be_written_any_more_is_said_once_and_dropped(capsys: pytest.CaptureFixture[str]) -> None:
    kept = io.StringIO()
    written = log.Log([(_Full(), "the log file full.log"), (kept, "the other")])
    for when in (1.0, 2.0):
        written.add(when, "skip", "a.bin", {"reason": "unchanged: test"})
        written.flush()  # the first flush fails on the full one; the second no longer tries it
    said = capsys.readouterr().err.splitlines()
    assert said == [
        "bulkdl: cannot write the log file full.log any more (No space left on device); the run goes on without it"
    ]
    assert len(_lines(kept.getvalue())) == 2, "the other sink lost lines"
