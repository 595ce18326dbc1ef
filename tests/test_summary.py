"""The summary and the --dry-run plan: the renderer's rules (pure), then through the real CLI."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.cells import cell_len

from bulkdl.parent.report.page import Line, Page, Row, glyph, layout, print_page
from bulkdl.parent.report.plan import plan_page
from bulkdl.parent.report.summary import About, Earlier, Totals, summary_page
from bulkdl.parent.state import Row as StateRow
from bulkdl.parent.state import State
from bulkdl.values import FileResult, Status

from .conftest import cli_env, run_cli, write_manifest
from .httpserver import FaultServer, content

DIGEST, OLD = "ab" * 32, "cd" * 32
STARTED = datetime(2026, 12, 2, 3, 0, 1, tzinfo=timezone.utc)


def _result(index: int, status: str = "downloaded", **changes: object) -> FileResult:
    base = FileResult(index, f"dir/file{index}.bin", f"http://h/{index}", Status(status), 2048, 2048, DIGEST, 1.5)
    return replace(base, **changes)  # type: ignore[arg-type]


def _summary(
    results: list[FileResult], earlier: dict[str, Earlier] | None = None, full: bool = False, encoding: str = "utf-8"
) -> list[str]:
    out = io.TextIOWrapper(io.BytesIO(), encoding=encoding, errors="backslashreplace")
    page = summary_page(results, Totals.of(results, 3.4), earlier or {}, About("title", Path("/m.yaml"), STARTED, full))
    print_page(page, out)
    out.seek(0)
    return out.read().splitlines()


def _night(changed: int = 0, unchanged: int = 0) -> list[FileResult]:
    """Results of a run: ``changed`` files downloaded, then ``unchanged`` skipped, each with a note."""
    results = [_result(i, notes=("insecure: TLS certificates were not verified",)) for i in range(changed)]
    results += [
        _result(i, "skipped", transferred=0, notes=("unchanged: size, mtime and digest match",))
        for i in range(changed, changed + unchanged)
    ]
    return results


def test_columns_are_as_wide_as_their_longest_string_and_lines_end_without_spaces() -> None:
    page = Page(
        (Line("title "), Row((("a", ""), ("1 B", ""), ("x", ""))), Row((("long name", ""), ("10 KiB", ""), ("", ""))))
    )
    lines = ["".join(text for text, _ in line) for line in layout(replace(page, right=frozenset({1})), "utf-8")]
    assert lines == ["title ", "  a             1 B  x", "  long name  10 KiB  "]
    out = io.StringIO()
    print_page(replace(page, right=frozenset({1})), out)
    assert out.getvalue().splitlines() == ["title", "  a             1 B  x", "  long name  10 KiB"]


def test_a_wide_character_takes_two_columns() -> None:
    page = Page((Row((("日本", ""), ("x", ""))), Row((("abcde", ""), ("y", "")))))
    out = io.StringIO()
    print_page(page, out)
    assert out.getvalue().splitlines() == ["  日本   x", "  abcde  y"]


_WORD = st.text(st.characters(blacklist_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs")), min_size=1)


@given(st.lists(st.tuples(_WORD, _WORD, _WORD), min_size=1, max_size=8))
def test_any_rows_line_up_whole_and_end_without_spaces(cells: list[tuple[str, str, str]]) -> None:
    page = Page(tuple(Row(((a, ""), (n, "red"), (b, ""))) for a, n, b in cells), right=frozenset({1}))
    out = io.StringIO()
    print_page(page, out)
    lines = out.getvalue().splitlines()
    assert len(lines) == len(cells)
    starts = set()
    for line, (a, n, b) in zip(lines, cells, strict=True):
        assert line.startswith("  " + a) and line.endswith(b)
        assert line[: len(line) - len(b)].endswith(n + "  "), "the middle column ends where the last begins"
        starts.add(cell_len(line) - cell_len(b))  # the column where the last cell starts
    assert len(starts) == 1


@pytest.mark.parametrize(
    ("text", "encoding", "shown"),
    [
        ("café.bin", "latin-1", "café.bin"),
        ("café.bin", "ascii", "caf\\xe9.bin"),
        ("日本.bin", "latin-1", "\\u65e5\\u672c.bin"),
        ("HTTP 404 \x1b[2Jgone\r\nx", "utf-8", "HTTP 404 \\x1b[2Jgone\\r\\nx"),
    ],
)
def test_what_the_output_cannot_show_is_escaped_before_widths_are_counted(text: str, encoding: str, shown: str) -> None:
    page = Page((Row(((text, ""), ("|", ""))), Row((("x" * len(shown), ""), ("|", "")))))
    out = io.TextIOWrapper(io.BytesIO(), encoding=encoding)
    print_page(page, out)
    out.seek(0)
    first, second = out.read().splitlines()
    assert first == f"  {shown}  |" and len(first) == len(second)


@pytest.mark.parametrize(("encoding", "arrow"), [("utf-8", "→"), ("latin-1", "->"), ("ascii", "->")])
def test_the_arrow_is_ascii_where_the_output_cannot_show_it(encoding: str, arrow: str) -> None:
    assert glyph("→", "->", io.TextIOWrapper(io.BytesIO(), encoding=encoding)) == arrow


def test_failures_first_then_interrupted_then_changes_then_a_count_and_the_verdict_last() -> None:
    results = [
        _result(0, "skipped", transferred=0),
        _result(1),  # updated
        _result(2),  # new
        _result(3, "interrupted", sha256=None, error="stopped"),
        _result(4, "failed", sha256=None, size=None, error="HTTP 404 Not Found"),
    ]
    lines = _summary(results, earlier={"dir/file1.bin": (OLD, 1024)})
    heads = [line for line in lines if not line.startswith(" ")]
    assert heads[:5] == ["title", "failed (1)", "interrupted (1)", "new (1)", "updated (1)"]
    assert heads[5:-1] == ["1 unchanged (skipped or not modified)"]
    assert lines[-1] == (
        "FAILED: interrupted, 1 of 5 files not finished (1 failed, 1 new, 1 updated, 1 unchanged), 6.00 KiB in place, "
        "8.00 KiB received, 3.4s; manifest /m.yaml; started 2026-12-02 03:00:01 UTC"
    )


def test_a_failure_and_a_change_are_one_line_each_with_the_reason_or_the_whole_digest() -> None:
    lines = _summary([_result(0, "failed", sha256=None, size=None, error="HTTP 404 Not Found"), _result(1)])
    assert lines[2].split() == ["dir/file0.bin", "failed", "-", "1.5s", "1.33", "KiB/s", "HTTP", "404", "Not", "Found"]
    assert lines[4].split() == ["dir/file1.bin", "downloaded", "2.00", "KiB", "1.5s", "1.33", "KiB/s", DIGEST]


def test_an_updated_file_shows_the_digest_and_size_it_had() -> None:
    lines = _summary([_result(0, notes=("3 retries",))], earlier={"dir/file0.bin": (OLD, 1024)})
    row = lines.index("updated (1)") + 1
    assert DIGEST in lines[row]
    assert lines[row + 1 : row + 3] == [f"      was {OLD} 1.00 KiB", "      note: 3 retries"]


def test_a_file_fetched_again_with_the_same_bytes_is_not_called_updated() -> None:
    # --force, or a file touched on disk: "updated" with "was" the same digest told the reader upstream changed.
    results = [_result(0), _result(1)]
    lines = _summary(results, earlier={"dir/file0.bin": (DIGEST, 2048), "dir/file1.bin": (DIGEST, 1024)})
    assert "1 re-fetched with the same bytes as before (--force, --revalidate, or changed or removed on disk)" in lines
    assert "updated (1)" in lines and "dir/file0.bin" not in "\n".join(lines)
    assert lines[-1].startswith("OK: 2 files (1 updated, 1 re-fetched), ")


def test_a_night_without_change_is_three_lines_and_its_notes_are_not_listed() -> None:
    lines = _summary(_night(unchanged=20_000))
    assert lines[1:-1] == ["20,000 unchanged (skipped or not modified)"]
    assert lines[-1].startswith("OK: 20,000 files (20,000 unchanged), 39.1 MiB in place, 0 B received, 3.4s;")


def test_full_lists_every_file_with_its_notes() -> None:
    lines = _summary(_night(changed=1, unchanged=3), full=True)
    assert sum(DIGEST in line for line in lines) == 4
    assert "unchanged (3)" in lines and lines.count("      note: unchanged: size, mtime and digest match") == 3


def test_notes_of_a_listed_file_stay_visible() -> None:
    lines = _summary(_night(changed=2, unchanged=5))
    assert lines.count("      note: insecure: TLS certificates were not verified") == 2
    assert not any("unchanged: size" in line for line in lines)


@pytest.mark.parametrize(
    ("results", "verdict"),
    [
        ([_result(0)], "OK: 1 file (1 new),"),
        ([], "OK: 0 files, 0 B in place,"),
        ([_result(0, "failed", error="x")] * 2, "FAILED: 2 of 2 files failed,"),
        (
            [_result(0, "corrupt", error="x"), _result(1, "verified")],
            "FAILED: 1 of 2 files failed (1 corrupt, 1 verified),",
        ),
        (
            [_result(0, "interrupted", error="stopped"), _result(1, "failed", error="x")],
            "FAILED: interrupted, 1 of 2 files not finished (1 failed),",
        ),
    ],
)
def test_the_verdict_names_the_outcome_first_with_counts_in_the_right_plural(
    results: list[FileResult], verdict: str
) -> None:
    assert _summary(results)[-1].startswith(verdict)


def test_interrupted_files_that_never_started_are_one_count_line() -> None:
    results = [_result(0, "interrupted", error="stopped", transferred=10)]
    results += [_result(i, "interrupted", error="not started", size=None, sha256=None) for i in range(1, 5)]
    lines = _summary(results)
    assert lines[1:4] == ["interrupted (5)", lines[2], "  4 not started"]
    assert "dir/file0.bin" in lines[2] and lines[2].endswith("stopped")
    assert sum("not started" in line for line in _summary(results, full=True)) == 4


@pytest.mark.parametrize(("transferred", "reason"), [(2048, "stopped after 2.00 KiB received"), (0, "stopped")])
def test_an_interrupted_file_without_a_reason_says_it_was_stopped(transferred: int, reason: str) -> None:
    lines = _summary([_result(0, "interrupted", error=None, sha256=None, transferred=transferred)])
    assert lines[2].split()[:2] == ["dir/file0.bin", "interrupted"] and lines[2].endswith(f"  {reason}")


def test_verify_lists_what_is_broken_and_counts_what_verified() -> None:
    results = [_result(i, "verified", transferred=0) for i in range(3)]
    results += [_result(3, "missing", size=None, sha256=None, error="not on disk"), _result(4, "unverified")]
    lines = _summary(results)
    assert lines[1:3] == ["failed (1)", lines[2]] and lines[2].split()[:2] == ["dir/file3.bin", "missing"]
    assert lines[3:5] == [
        "3 verified (digests match)",
        "1 unverified (no digest in the manifest or the state to compare with)",
    ]


def test_the_plan_lists_what_it_would_fetch_and_counts_the_checks_and_skips() -> None:
    plan = [("a", "skip", "digest matches"), ("b", "download", "not on disk"), ("c", "skip", "digest matches")]
    plan += [(f"d{i}", "check", "conditional GET") for i in range(2000)] + [("e", "resume", "partial")]
    out = io.StringIO()
    print_page(plan_page(plan, "title"), out)
    assert out.getvalue().splitlines() == [
        "title",
        "  b  download  not on disk",
        "  e  resume    partial",
        "2,000 to check (conditional GET)",
        "2 to skip (digest matches)",
        "dry run: 2,004 files (1 resume, 1 download, 2,000 check, 2 skip); nothing was done",
    ]
    out = io.StringIO()
    print_page(plan_page(plan, "title", full=True), out)
    lines = out.getvalue().splitlines()
    assert lines[1] == "  a      skip      digest matches" and lines[4] == "  d0     check     conditional GET"
    assert len(lines) == 2 + len(plan)


def test_the_plan_bounds_what_it_would_fetch_only_as_far_as_it_knows() -> None:
    plan = [("a", "download", "not on disk"), ("b", "check", "conditional GET"), ("c", "adopt", "on disk")]
    out = io.StringIO()
    print_page(plan_page(plan, "title", sizes=[1024, 5, 2048]), out)
    last = "dry run: 3 files (1 download, 1 adopt, 1 check), up to 3.00 KiB to fetch besides what the checks find"
    assert out.getvalue().splitlines()[-1] == f"{last} changed; nothing was done"
    out = io.StringIO()
    print_page(plan_page(plan[1:2], "title", sizes=[5]), out)
    assert (
        out.getvalue()
        .splitlines()[-1]
        .endswith("(1 check), nothing to fetch besides what the checks find changed; nothing was done")
    )


# Through the real CLI, stdout a pipe unless said otherwise.


def _checked(stdout: str) -> list[str]:
    """The lines of a summary, after the promises every summary keeps."""
    lines = stdout.splitlines()
    assert lines and lines[-1].startswith(("OK: ", "FAILED: ")), stdout
    assert [line for line in lines if line != line.rstrip()] == [], "no line ends in a space"
    assert "\x1b" not in stdout, "no escape codes"
    return lines


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _mirrored(server: FaultServer, tmp_path: Path, files: dict[str, bytes]) -> Path:
    """A manifest with digests, and its mirror as a complete earlier run left it (written here: a run of 2,000
    files takes long on a shared disk, and what is tested is the night after)."""
    entries = [{"url": server.add(name, data), "path": name, "sha256": _sha(data)} for name, data in files.items()]
    manifest = write_manifest(tmp_path, entries, workers=2)
    with State(tmp_path / "mirror") as state:
        for (name, data), entry in zip(files.items(), entries, strict=True):
            path = tmp_path / "mirror" / name
            path.write_bytes(data)
            sha, mtime_ns = _sha(data), path.stat().st_mtime_ns
            state.put(
                StateRow(name, entry["url"], len(data), None, None, sha, (("sha256", sha),), len(data), mtime_ns, 0.0)
            )
    return manifest


def test_a_night_without_change_fits_a_screen_and_full_lists_every_file(builtin: FaultServer, tmp_path: Path) -> None:
    files = {f"f{i:04d}.dat": content(f"night{i}", 64) for i in range(2000)}
    manifest = _mirrored(builtin, tmp_path, files)
    night = run_cli("run", manifest, cwd=tmp_path)
    assert night.code == 0 and len(_checked(night.stdout)) <= 40, night.stdout
    assert _checked(night.stdout)[-1].startswith("OK: 2,000 files (2,000 unchanged), 125 KiB in place, 0 B received")
    listed = run_cli("run", manifest, "--summary", "full", cwd=tmp_path)
    assert listed.code == 0
    rows = {(line.split()[0], line.split()[-1]) for line in _checked(listed.stdout)}
    assert rows >= {(name, _sha(data)) for name, data in files.items()}
    for command in (["verify"], ["run", "--dry-run"]):
        done = run_cli(*command, manifest, cwd=tmp_path)
        assert done.code == 0 and len(done.stdout.splitlines()) <= 40, done.stdout
    assert builtin.requests() == [], "the files were proven by their digests"


def test_failures_come_first_and_an_updated_file_shows_its_previous_digest(
    builtin: FaultServer, tmp_path: Path
) -> None:
    old, new = content("v1", 3000), content("v2", 5000)
    urls = [builtin.add("same.bin", content("same", 100)), builtin.add("moved.bin", old)]
    manifest = write_manifest(tmp_path, urls)
    assert run_cli("run", manifest, cwd=tmp_path).code == 0
    builtin.update("moved.bin", new)
    urls += [builtin.add_error("gone.bin", 404), builtin.add("fresh.bin", b"fresh")]
    result = run_cli("run", write_manifest(tmp_path, urls), cwd=tmp_path)
    assert result.code == 1
    lines = _checked(result.stdout)
    failed, updated = lines.index("failed (1)"), lines.index("updated (1)")
    assert failed < lines.index("new (1)") < updated
    assert lines[failed + 1].split() == [
        "gone.bin",
        "failed",
        "-",
        lines[failed + 1].split()[3],
        "-",
        "HTTP",
        "404",
        "Not",
        "Found",
    ]
    assert lines[updated + 1].split()[:2] == ["moved.bin", "downloaded"] and lines[updated + 1].endswith(_sha(new))
    assert lines[updated + 2] == f"      was {_sha(old)} 2.93 KiB"
    assert lines[-2] == "1 unchanged (skipped or not modified)"
    assert lines[-1].startswith("FAILED: 1 of 4 files failed (1 new, 1 updated, 1 unchanged), ")
    assert re.search(rf"; manifest {tmp_path}/manifest.yaml; started \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d UTC$", lines[-1])


def test_a_latin1_stdout_gets_ascii_only(builtin: FaultServer, tmp_path: Path) -> None:
    entries = [builtin.add("plain.bin", b"plain"), {"url": builtin.add("jp.bin", b"jp"), "path": "日本.bin"}]
    manifest = write_manifest(tmp_path, entries)
    for command in (["run"], ["run", "--dry-run", "--summary", "full"], ["verify"], ["run", "--summary", "full"]):
        argv = [sys.executable, "-m", "bulkdl", *command, str(manifest)]
        done = subprocess.run(
            argv, cwd=tmp_path, env=cli_env(PYTHONIOENCODING="latin-1"), capture_output=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        stdout = done.stdout.decode("ascii")  # strict: raises on any other byte
        assert stdout.splitlines()[0].endswith(f" 2 files -> {tmp_path / 'mirror'}")
        assert command == ["verify"] or "\\u65e5\\u672c.bin" in stdout, stdout
        if "--dry-run" not in command:
            _checked(stdout)


def test_nothing_is_cut_in_a_pipe_or_an_80_column_terminal(builtin: FaultServer, tmp_path: Path) -> None:
    name = "a-rather-long-directory-name-for-cron-mail/" + "x" * 150 + ".tar.gz"
    data = content("long", 2000)
    manifest = write_manifest(tmp_path, [{"url": builtin.add("long", data), "path": name}])
    piped = run_cli("run", manifest, cwd=tmp_path)
    assert piped.code == 0 and len(name) == 200
    [row] = [line for line in _checked(piped.stdout) if name in line]
    assert row.split()[:2] == [name, "downloaded"] and row.endswith(_sha(data))
    shown = _in_terminal(["run", str(manifest), "--summary", "full"], tmp_path, columns=80)
    plain = re.sub(r"\x1b\[[0-9;]*m", "", shown)
    assert plain != shown, "coloured on a terminal"
    [row] = [line for line in _checked(plain) if name in line]
    assert row.split()[:2] == [name, "skipped"] and row.endswith(_sha(data)), "one line: the terminal wraps it"


def _in_terminal(args: list[str], cwd: Path, columns: int) -> str:
    """What ``bulkdl ARGS`` writes to a terminal ``columns`` wide (a real pseudo-terminal)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    argv = [sys.executable, "-m", "bulkdl", *args, "--no-progress"]
    env = cli_env(TERM="xterm-256color")
    with subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=slave, stderr=subprocess.DEVNULL):
        os.close(slave)
        chunks = []
        with contextlib.suppress(OSError):  # EIO: every writer of the terminal has closed it
            while chunk := os.read(master, 65536):
                chunks.append(chunk)
    os.close(master)
    return b"".join(chunks).decode().replace("\r\n", "\n")


def test_what_verify_repair_downloaded_is_repaired_with_what_verify_had_found() -> None:
    results = [_result(0, notes=("repaired: verify found it missing (not on disk)",)), _result(1, "verified")]
    page = summary_page(
        results,
        Totals.of(results, 1.0),
        {"dir/file0.bin": (DIGEST, 2048)},
        About("t", Path("/m"), STARTED, repairing=True),
    )
    out = io.StringIO()
    print_page(page, out)
    lines = out.getvalue().splitlines()
    assert lines[1:4] == ["repaired (1)", lines[2], "      note: repaired: verify found it missing (not on disk)"]
    assert lines[-1].startswith("OK: 2 files (1 repaired, 1 verified),")


def test_an_interrupted_run_lists_what_had_begun_with_a_reason_and_counts_what_had_not(
    builtin: FaultServer, tmp_path: Path
) -> None:
    urls = [builtin.add(f"held{i}.bin", content(f"held{i}", 4 * 2**20), stall_after=2**20) for i in range(5)]
    # One file at a time: the others are still waiting to begin when the run stops.
    manifest = write_manifest(tmp_path, urls, workers=1, connections=1, defaults={"segments": 1, "timeout": 60})
    argv = [sys.executable, "-m", "bulkdl", "run", str(manifest)]
    part = tmp_path / "mirror/held0.bin.part0"
    with subprocess.Popen(argv, cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, text=True) as run:
        deadline = time.monotonic() + 30
        while not (part.exists() and part.stat().st_size > 0):  # the server logs a request once answered
            assert time.monotonic() < deadline and run.poll() is None
            time.sleep(0.02)
        run.send_signal(signal.SIGTERM)
        stdout, _ = run.communicate(timeout=60)
    assert run.returncode == 130
    lines = _checked(stdout)
    assert lines[1] == "interrupted (5)" and lines[-1].startswith("FAILED: interrupted, 5 of 5 files not finished, ")
    rows = [line for line in lines[2:-2] if not line.startswith("      note: ")]
    assert rows[0].split()[:2] == ["held0.bin", "interrupted"] and re.search(
        r"  stopped( after .* received)?$", rows[0]
    )
    assert all(row.split()[1] == "interrupted" and "  stopped" in row for row in rows), stdout
    idle = re.fullmatch(r"  (\d+) not started", lines[-2])
    assert idle and int(idle[1]) >= 1 and len(rows) + int(idle[1]) == 5, stdout


def test_files_fetched_again_because_their_copy_was_removed_or_changed_are_named() -> None:
    """A new user's trial: three files deleted from the mirror showed only as '3 re-fetched with the same
    bytes as before'; the morning reader needs to know that someone touched the mirror, and where."""
    same = (DIGEST, 2048)
    results = [
        _result(0, notes=("deleted from disk since the last run",)),
        _result(1, notes=("changed on disk since the last run (size or mtime)",)),
        _result(2),  # --force: still a count
    ]
    lines = _summary(results, earlier={f"dir/file{i}.bin": same for i in range(3)})
    assert "re-fetched (3)" in lines
    text = "\n".join(lines)
    assert "dir/file0.bin" in text and "dir/file1.bin" in text and "dir/file2.bin" not in text
    assert "      note: deleted from disk since the last run" in lines
    assert "  1 more with the same bytes as before" in lines
    assert lines[-1].startswith("OK: 3 files (3 re-fetched), ")
