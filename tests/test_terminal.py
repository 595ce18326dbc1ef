"""Behaviour that depends on stdout being a terminal, checked under a real pseudo-terminal."""

from __future__ import annotations

import os
import pty
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import cli_env, write_manifest
from .httpserver import FaultServer, content

_ERASE = re.compile(r"\r\x1b\[2K(?:\x1b\[1A\x1b\[2K)*")  # rich's Live going back over its last frame
_STYLE = re.compile(r"\x1b\[[0-9;]*m")


def _run_in_pty(args: list[str], cwd: Path, interrupt_when: Callable[[str], bool] | None = None) -> tuple[int, str]:
    """Run bulkdl on a pseudo-terminal; once ``interrupt_when(output so far)`` holds, Ctrl-C it: SIGINT to its
    whole process group, as the terminal sends it."""
    master, slave = pty.openpty()
    env = cli_env(COLUMNS="120", LINES="40", TERM="xterm")
    process = subprocess.Popen(
        [sys.executable, "-m", "bulkdl", *args],
        cwd=cwd,
        stdout=slave,
        stderr=slave,
        stdin=slave,
        env=env,
        start_new_session=True,
    )
    os.close(slave)
    chunks: list[bytes] = []

    def pump() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child side closed
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=pump)
    reader.start()
    if interrupt_when is not None:
        while process.poll() is None and not interrupt_when(b"".join(chunks).decode(errors="replace")):
            time.sleep(0.05)
        os.killpg(process.pid, signal.SIGINT)
    code = process.wait(timeout=60)
    reader.join(timeout=10)
    os.close(master)
    return code, b"".join(chunks).decode(errors="replace")


def _frames(output: str) -> tuple[list[list[str]], str]:
    """The progress frames drawn (each a list of lines, styles removed), and what was printed after them."""
    drawn, _, after = output.partition("\x1b[?25h")  # Live hides the cursor while it draws
    drawn = drawn.partition("\x1b[?25l")[2]
    frames = [
        [line for line in re.split(r"\r?\n", _STYLE.sub("", text)) if line.strip()] for text in _ERASE.split(drawn)
    ]
    return [frame for frame in frames if frame], after


@pytest.mark.parametrize(("flags", "drawn"), [([], True), (["--no-progress"], False), (["--quiet"], False)])
def test_progress_only_on_a_terminal_and_when_wanted(
    builtin: FaultServer, tmp_path: Path, flags: list[str], drawn: bool
) -> None:
    # Slow enough that the view refreshes at least once: each response is held back by the server.
    urls = [
        builtin.add(
            f"tty{i}.bin",
            content(f"tty{i}", 2_000_000),
        )
        for i in range(3)
    ]
    manifest = write_manifest(tmp_path, urls, workers=1, defaults={"segments": 1})
    builtin.change("tty0.bin", delay=0.6)
    code, output = _run_in_pty(["run", str(manifest), *flags], tmp_path)
    assert code == 0, output
    assert ("all files" in output) is drawn, output
    assert "OK: 3 files (3 new)" in output  # the summary is always printed


def test_names_that_look_like_markup_are_shown_as_they_are(builtin: FaultServer, tmp_path: Path) -> None:
    # rich reads "[...]" in a plain string as markup: "[/]" raised MarkupError (a traceback where the summary
    # should be) and "[bold]" vanished from the name it was part of, in the progress view and the tables.
    names = ["odd[/]name.bin", "x[bold]y.bin"]
    entries = [
        {"url": builtin.add(f"m{i}.bin", content(f"m{i}", 2_000_000)), "path": name} for i, name in enumerate(names)
    ]
    manifest = write_manifest(tmp_path, entries, workers=1, defaults={"segments": 1})
    code, planned = _run_in_pty(["run", str(manifest), "--dry-run"], tmp_path)
    assert code == 0 and all(name in planned for name in names), planned
    builtin.change("m0.bin", delay=0.6)  # so that the progress view draws its bars, names included
    code, output = _run_in_pty(["run", str(manifest)], tmp_path)
    assert code == 0 and "Traceback" not in output, output
    assert "all files" in output and all(name in output for name in names), output


def _slow_batch(builtin: FaultServer, tmp_path: Path, count: int, workers: int) -> Path:
    # Each file comes in three pieces over about 0.4 s: its bytes so far reach the view in a tick well before
    # its result does (when both arrive in one step, no frame can show its row), even on a loaded machine.
    urls = [builtin.add(f"t{i:03}.bin", content(f"t{i}", 48 * 1024), rate=128 * 1024) for i in range(count)]
    return write_manifest(tmp_path, urls, workers=workers, defaults={"segments": 1})


def test_the_view_counts_every_file_and_draws_only_the_files_in_flight(builtin: FaultServer, tmp_path: Path) -> None:
    workers = 20
    code, output = _run_in_pty(["run", str(_slow_batch(builtin, tmp_path, 300, workers))], tmp_path)
    assert code == 0, output[-3000:]
    frames, _ = _frames(output)
    assert all(frame[0].startswith("all files ") for frame in frames), frames
    assert frames[-1][0].startswith("all files 300/300"), frames[-1]
    rows = [[line.split()[0] for line in frame[1:]] for frame in frames]
    assert any(rows), "no frame caught a file in flight: the test proves nothing"
    assert max(map(len, rows)) <= workers, "rows of finished files stayed"
    for name in {name for frame in rows for name in frame}:
        shown = [i for i, frame in enumerate(rows) if name in frame]
        assert shown == list(range(shown[0], shown[-1] + 1)), f"{name}'s row came back after it left"


def test_ctrl_c_mid_run_ends_it_as_interrupted(builtin: FaultServer, tmp_path: Path) -> None:
    def mid_run(output: str) -> bool:
        done = re.findall(r"all files (\d+)/300", output)
        return bool(done) and int(done[-1]) >= 20

    code, output = _run_in_pty(["run", str(_slow_batch(builtin, tmp_path, 300, 8))], tmp_path, mid_run)
    assert code == 130, output[-3000:]
    _, summary = _frames(output)
    assert "interrupted" in summary and "Traceback" not in output, summary
