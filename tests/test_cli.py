"""The command line as a person meets it: --version, --help, --quiet, NO_COLOR, plurals, the dry run's totals,
and which of the command line, an entry, defaults: and the built-in value wins."""

from __future__ import annotations

import argparse
import importlib.metadata
import io
import os
import pty
import re
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest

from bulkdl import cli
from bulkdl.commands.hold import say_what_was_not_recorded
from bulkdl.parent import manifest
from bulkdl.parent.manifest import Overrides
from bulkdl.parent.report.page import print_page
from bulkdl.parent.report.plan import plan_page
from bulkdl.parent.report.summary import About, Left, Totals, summary_page, verdict
from bulkdl.values import FileResult, Settings, Status

from .conftest import cli_env, run_cli, write_manifest
from .httpserver import FaultServer, content

COMMANDS = [[], ["run"], ["check"], ["verify"], ["manifest"], ["manifest", "from-sums"], ["manifest", "from-urls"]]
COMMANDS += [["report-schema"]]
_SGR = re.compile(r"\x1b\[([0-9;]*)m")


def _bulkdl(*args: str | Path, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "bulkdl", *map(str, args)]
    return subprocess.run(argv, cwd=cwd, env=cli_env(**env), capture_output=True, text=True, timeout=60)


def test_version_is_the_package_metadata(tmp_path: Path) -> None:
    done = _bulkdl("--version", cwd=tmp_path)
    assert done.returncode == 0 and done.stdout == f"bulkdl {importlib.metadata.version('bulkdl')}\n"


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "bulkdl")
def test_help_of_every_command_has_examples(tmp_path: Path, command: list[str]) -> None:
    done = _bulkdl(*command, "--help", cwd=tmp_path)
    assert done.returncode == 0 and done.stderr == ""
    examples = done.stdout.split("examples:\n", 1)[1].splitlines()
    assert examples[0].startswith("  bulkdl "), done.stdout
    if command in (["run"], ["verify"]):
        assert done.stdout.rstrip().endswith(cli.exit_code_table())


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += _parsers(sub)
    return found


def test_every_option_and_argument_is_described() -> None:
    undescribed = [
        f"{parser.prog} {action.dest}"
        for parser in _parsers(cli.build_parser())
        for action in parser._actions
        if not action.help and not isinstance(action, argparse._SubParsersAction)
    ]
    assert undescribed == []


def _failing_and_fine(builtin: FaultServer, tmp_path: Path) -> Path:
    return write_manifest(tmp_path, [builtin.add_error("missing.bin", 404), builtin.add("fine.bin", b"f" * 300)])


def test_quiet_prints_the_failures_and_the_verdict_only(builtin: FaultServer, tmp_path: Path) -> None:
    manifest_path = _failing_and_fine(builtin, tmp_path)
    quiet = run_cli("run", manifest_path, "--quiet", cwd=tmp_path)
    assert quiet.code == 1
    lines = quiet.stdout.splitlines()
    assert lines[0] == "failed (1)" and lines[1].split()[:2] == ["missing.bin", "failed"], quiet.stdout
    assert len(lines) == 3 and lines[2].startswith("FAILED: 1 of 2 files failed (1 new)"), quiet.stdout
    fine = write_manifest(tmp_path, [builtin.add("fine.bin", b"f" * 300)])
    nothing_new = run_cli("run", fine, "--quiet", cwd=tmp_path)
    assert nothing_new.code == 0 and len(nothing_new.stdout.splitlines()) == 1, nothing_new.stdout
    assert nothing_new.stdout.startswith("OK: 1 file ") and nothing_new.stderr == ""


def test_no_progress_is_not_quiet(builtin: FaultServer, tmp_path: Path) -> None:
    shown = run_cli("run", _failing_and_fine(builtin, tmp_path), "--no-progress", cwd=tmp_path)
    lines = shown.stdout.splitlines()
    assert lines[0].startswith("bulkdl: 2 files") and "new (1)" in lines, shown.stdout


def _on_a_terminal(results: list[FileResult], about: About) -> str:
    leader, follower = pty.openpty()
    with open(follower, "w", encoding="utf-8") as terminal:
        print_page(summary_page(results, Totals.of(results, 1.0), {}, about), terminal)
    shown = os.read(leader, 65536).decode()
    os.close(leader)
    return shown


def _results() -> list[FileResult]:
    return [
        FileResult(0, "a.bin", "http://h/a", Status.DOWNLOADED, 10, 10, "ab" * 32, 1.0),
        FileResult(1, "b.bin", "http://h/b", Status.FAILED, None, 0, None, 1.0, "HTTP 404", code="http_4xx"),
    ]


@pytest.mark.parametrize("no_color", ["", "1"])
def test_no_color_takes_the_colours_away_and_keeps_bold(monkeypatch: pytest.MonkeyPatch, no_color: str) -> None:
    monkeypatch.setenv("NO_COLOR", no_color)
    monkeypatch.setenv("TERM", "xterm-256color")
    shown = _on_a_terminal(_results(), About("title", Path("/m.yaml"), datetime.now(timezone.utc)))
    codes = {int(n) for params in _SGR.findall(shown) for n in params.split(";") if n}
    colours = {n for n in codes if 30 <= n <= 38 or 90 <= n <= 97}
    assert 1 in codes, "bold in both cases"
    assert bool(colours) != bool(no_color), shown


def _about(**changes: object) -> About:
    return About("t", Path("/m.yaml"), datetime.now(timezone.utc), **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "about",
    [_about(), _about(stopped=True), _about(left=Left(60.0, 1, 5, 0)), _about(refused="3 files")],
    ids=["plain", "stopped", "out-of-time", "refused"],
)
def test_the_verdict_is_never_dim(about: About, monkeypatch: pytest.MonkeyPatch) -> None:
    from collections import Counter

    for results in ([], _results(), _results()[:1]):
        line = verdict(Counter(r.status.value for r in results), Totals.of(results, 1.0), about)
        assert "dim" not in line.style and line.style.startswith("bold"), line
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    last = _on_a_terminal(_results(), about).splitlines()[-1]
    assert not any("2" in params.split(";") for params in _SGR.findall(last)), repr(last)


def test_check_says_1_file_not_1_files(builtin: FaultServer, tmp_path: Path) -> None:
    done = _bulkdl("check", write_manifest(tmp_path, [builtin.add("a.bin", b"a")]), cwd=tmp_path)
    assert done.returncode == 0 and " 1 file into " in done.stdout, done.stdout


def test_dry_run_ends_with_what_it_would_fetch(builtin: FaultServer, tmp_path: Path) -> None:
    sized = [{"url": builtin.add(f"{n}.bin", content(n, 1024)), "size": 1024} for n in ("a", "b")]
    done = _bulkdl("run", write_manifest(tmp_path, sized), "--dry-run", cwd=tmp_path)
    assert done.stdout.splitlines()[-1] == "dry run: 2 files (2 download), up to 2.00 KiB to fetch; nothing was done"
    unknown = _bulkdl("run", write_manifest(tmp_path, [*sized, builtin.add("c.bin", b"c")]), "--dry-run", cwd=tmp_path)
    assert unknown.stdout.splitlines()[-1] == (
        "dry run: 3 files (3 download), up to 2.00 KiB to fetch and 1 file of unknown size; nothing was done"
    )
    assert builtin.requests() == []


def test_the_plan_of_files_whose_sizes_nobody_knows() -> None:
    out = io.StringIO()
    print_page(plan_page([("a", "download", "new")], "title", sizes=[None]), out)
    assert out.getvalue().splitlines()[-1] == "dry run: 1 file (1 download), size to fetch unknown; nothing was done"


# Precedence, for one setting (segments): the command line > the file's entry > defaults: > built-in.
@pytest.mark.parametrize(
    ("defaults", "entry", "command_line", "wins"),
    [
        (None, None, None, Settings().segments),
        ({"segments": 3}, None, None, 3),
        ({"segments": 3}, 2, None, 2),
        ({"segments": 3}, 2, 5, 5),
    ],
    ids=["built-in", "defaults", "entry", "command line"],
)
def test_precedence(
    tmp_path: Path, defaults: dict[str, int] | None, entry: int | None, command_line: int | None, wins: int
) -> None:
    file: dict[str, object] = {"url": "http://127.0.0.1:9/a.bin"}
    if entry is not None:
        file["segments"] = entry
    top = {"defaults": defaults} if defaults else {}
    loaded = manifest.load(write_manifest(tmp_path, [file], **top), Overrides(segments=command_line))
    assert [job.settings.segments for job in loaded.jobs] == [wins]


def test_segments_on_the_command_line_win_over_the_entry_in_a_real_run(builtin: FaultServer, tmp_path: Path) -> None:
    """The run command hands --segments to the manifest as the override the precedence test gives it."""
    data = content("big", 2 * 1024**2)
    entry = {"url": builtin.add("big.bin", data), "segments": 1, "min_segment_size": "256K"}
    path = write_manifest(tmp_path, [entry], defaults={"min_speed": 0})
    assert run_cli("run", path, cwd=tmp_path).code == 0
    one = len({r.range for r in builtin.requests("big.bin")})  # the probe's range, then the rest of the file
    (tmp_path / "mirror/big.bin").unlink()
    builtin.reset()
    builtin.add("big.bin", data)
    assert run_cli("run", path, "--segments", "4", "--force", cwd=tmp_path).code == 0
    assert len({r.range for r in builtin.requests("big.bin")}) >= max(4, one + 2), builtin.requests("big.bin")


def test_verify_quiet_prints_what_is_broken_and_the_verdict(builtin: FaultServer, tmp_path: Path) -> None:
    path = write_manifest(tmp_path, [builtin.add("a.bin", b"a" * 100), builtin.add("b.bin", b"b" * 100)])
    assert run_cli("run", path, cwd=tmp_path).code == 0
    (tmp_path / "mirror/b.bin").unlink()
    done = _bulkdl("verify", path, "--quiet", cwd=tmp_path)
    lines = done.stdout.splitlines()
    assert done.returncode == 1 and len(lines) == 3, done.stdout
    assert lines[0] == "failed (1)" and lines[1].split()[:2] == ["b.bin", "missing"], done.stdout
    assert lines[2].startswith("FAILED: 1 of 2 files failed (1 missing, 1 verified)"), done.stdout


@pytest.mark.parametrize(("unrecorded", "said"), [(2, "and 1 more file in"), (3, "and 2 more files in")])
def test_what_the_state_could_not_record_is_counted_in_words(
    capsys: pytest.CaptureFixture[str], unrecorded: int, said: str
) -> None:
    state = SimpleNamespace(problem=None, unrecorded=[f"f{i}.bin" for i in range(unrecorded)])
    say_what_was_not_recorded(state)  # type: ignore[arg-type]
    assert f"could not record f0.bin {said} the state; the next run downloads them again" in capsys.readouterr().err
