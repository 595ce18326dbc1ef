"""Behaviour that depends on stdout being a terminal, checked under a real pseudo-terminal."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from .conftest import cli_env, write_manifest
from .httpserver import FaultServer, content


def _run_in_pty(args: list[str], cwd: Path) -> tuple[int, str]:
    master, slave = pty.openpty()
    env = cli_env(COLUMNS="120", LINES="40", TERM="xterm")
    process = subprocess.Popen(
        [sys.executable, "-m", "bulkdl", *args], cwd=cwd, stdout=slave, stderr=slave, stdin=slave, env=env
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
    code = process.wait(timeout=60)
    reader.join(timeout=10)
    os.close(master)
    return code, b"".join(chunks).decode(errors="replace")


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
    assert "total" in output and "3 downloaded" in output  # the summary is always printed


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
