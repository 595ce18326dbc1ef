"""The run's time budget (--max-duration, max_duration:): it stops a run that would take longer, with exit 5,
and the next run finishes it without fetching again what was complete."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bulkdl.cli import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OUT_OF_TIME, main
from bulkdl.parent import schema
from bulkdl.parent.pool import OUT_OF_TIME
from bulkdl.parent.report.summary import Left

from .conftest import cli_env, run_cli, watermark, write_manifest
from .httpserver import FaultServer, content

KiB, MiB = 1024, 1024**2
BUDGET = 5  # seconds: room for the start of bulkdl and its workers on a loaded machine


def _mirror(builtin: FaultServer, tmp_path: Path, **top: object) -> tuple[Path, dict[str, bytes]]:
    """Small files first, then one that would take 16 s, then more small ones: one file at a time."""
    files = {f"early/{i}.bin": content(f"early{i}", 10 * KiB + i) for i in range(3)}
    files["slow.bin"] = content("slow", 8 * MiB)
    files |= {f"late/{i}.bin": content(f"late{i}", 10 * KiB + i) for i in range(3)}
    entries = []
    for name, data in files.items():
        rate = 512 * KiB if name == "slow.bin" else None
        entries.append({"url": builtin.add(name, data, rate=rate), "path": name, "size": len(data)})
    manifest = write_manifest(
        tmp_path, entries, workers=1, connections=1, defaults={"segments": 1, "min_speed": 0}, **top
    )
    return manifest, files


def test_the_budget_stops_the_run_and_the_next_run_finishes_it(builtin: FaultServer, tmp_path: Path) -> None:
    manifest, files = _mirror(builtin, tmp_path)
    started = time.monotonic()
    first = run_cli("run", manifest, "--max-duration", f"{BUDGET}s", cwd=tmp_path)
    assert time.monotonic() - started >= BUDGET, "it ran its budget"
    assert first.code == EXIT_OUT_OF_TIME, first.stdout + first.stderr
    slow = first.file("slow.bin")
    assert slow["outcome"] == "interrupted" and OUT_OF_TIME in slow["notes"]
    assert slow["transferred"] > 0, "it had begun: stopped, not killed before a byte"
    left = [f for f in first.report["files"] if f["outcome"] == "interrupted"] if first.report else []
    assert {f["path"] for f in left} >= {"slow.bin", *(n for n in files if n.startswith("late/"))}
    assert all(OUT_OF_TIME in f["notes"] for f in left), "each file left says why"
    assert f"time budget {BUDGET}.0s reached: {len(left)} files," in first.stdout
    assert first.stdout.splitlines()[-1].startswith(
        f"FAILED: out of time, {len(left)} of 7 files left for the next run"
    )
    parts = list((tmp_path / "mirror").glob("slow.bin.part*"))
    assert parts and sum(p.stat().st_size for p in parts) > 0, "its parts are kept"
    done = {f["path"] for f in first.report["files"] if f["outcome"] == "downloaded"} if first.report else set()

    builtin.change("slow.bin", rate=None)
    mark = watermark(builtin)
    second = run_cli("run", manifest, cwd=tmp_path)
    assert second.code == 0, second.stdout + second.stderr
    for name, data in files.items():
        assert (tmp_path / "mirror" / name).read_bytes() == data, name
    assert all(second.file(name)["transferred"] == 0 for name in done), "nothing complete fetched again"
    resumed = [r for r in builtin.requests("slow.bin") if r.conn > mark and r.method == "GET"]
    assert resumed and all(r.range is not None and r.if_range is not None for r in resumed), resumed
    assert second.file("slow.bin")["transferred"] < len(files["slow.bin"]), "resumed, not started over"


def test_a_failure_outranks_the_budget(builtin: FaultServer, tmp_path: Path) -> None:
    # 130 > 1 > 5 > 4: a failed file is what the operator must see first.
    broken = {"url": builtin.add_error("broken.bin", 500), "path": "a-broken.bin"}
    manifest, _ = _mirror(builtin, tmp_path)
    text = manifest.read_text().replace(
        "files:\n", f"files:\n- url: {broken['url']}\n  path: a-broken.bin\n  retries: 0\n"
    )
    manifest.write_text(text)
    result = run_cli("run", manifest, "--max-duration", f"{BUDGET}s", cwd=tmp_path)
    assert result.code == EXIT_FAILED, result.stdout + result.stderr
    assert result.file("a-broken.bin")["outcome"] == "failed"
    assert f"time budget {BUDGET}.0s reached" in result.stdout, "the summary still says what is left"
    assert result.stdout.splitlines()[-1].startswith("FAILED: 1 of 8 files failed")


def test_a_stop_outranks_the_budget(builtin: FaultServer, tmp_path: Path) -> None:
    # SIGTERM within the budget: 130 (interrupted), not 5, in the exit code and in the run's record.
    manifest, _ = _mirror(builtin, tmp_path)
    argv = [sys.executable, "-m", "bulkdl", "run", str(manifest), "--max-duration", "1h"]
    run = subprocess.Popen(argv, cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not any(p.stat().st_size for p in (tmp_path / "mirror").glob("slow.bin.part*")):
            assert run.poll() is None and time.monotonic() < deadline, "the slow file never began"
            time.sleep(0.02)
        run.send_signal(signal.SIGTERM)
        assert run.wait(timeout=30) == EXIT_INTERRUPTED
    finally:
        run.kill()
        run.communicate()
    assert json.loads((tmp_path / "mirror/.bulkdl/last-run.json").read_text())["exit_code"] == EXIT_INTERRUPTED


def test_the_manifest_key_sets_the_budget(builtin: FaultServer, tmp_path: Path) -> None:
    manifest, _ = _mirror(builtin, tmp_path, max_duration=f"{BUDGET}s")
    result = run_cli("run", manifest, cwd=tmp_path)
    assert result.code == EXIT_OUT_OF_TIME, result.stdout + result.stderr
    record = json.loads((tmp_path / "mirror/.bulkdl/last-run.json").read_text())
    assert record["exit_code"] == EXIT_OUT_OF_TIME and record["files"]["interrupted"] >= 1


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("30m", 1800), ("2h", 7200), ("1h30m", 5400), ("1h0m5s", 3605), (" 45m ", 2700)],
)
def test_durations(text: str, seconds: float) -> None:
    assert schema.duration(text) == seconds


@pytest.mark.parametrize("text", ["", "90", "1.5h", "2d", "m", "30m1h", "0s", "-5m", "2 h"])
def test_what_is_no_duration(text: str) -> None:
    with pytest.raises(ValueError, match=r"duration such as|at least 1s"):
        schema.duration(text)


def test_a_bare_number_is_refused_on_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = write_manifest(tmp_path, ["http://127.0.0.1:9/x"])
    with pytest.raises(SystemExit) as exited:
        main(["run", str(manifest), "--max-duration", "90"])
    assert exited.value.code == 2
    assert "expected a duration such as 90s, 30m, 2h or 1h30m, got '90'" in capsys.readouterr().err


def test_the_manifest_says_which_key_is_wrong(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = write_manifest(tmp_path, ["http://127.0.0.1:9/x"], max_duration=90)
    assert main(["check", str(manifest)]) == 2
    assert "max_duration: expected a duration such as 90s" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("left", "text"),
    [
        (Left(7200, 1234, 6 * 1024**3, 0), "time budget 2h00m reached: 1,234 files, 6.00 GiB left for the next run"),
        (
            Left(90, 3, 2 * MiB, 1),
            "time budget 1m30s reached: 3 files, 2.00 MiB and 1 of unknown size left for the next run",
        ),
        (Left(2, 2, 0, 2), "time budget 2.0s reached: 2 files of unknown size left for the next run"),
        (Left(2, 1, 10, 0), "time budget 2.0s reached: 1 file, 10 B left for the next run"),
    ],
)
def test_the_left_line(left: Left, text: str) -> None:
    assert left.line().text == text
