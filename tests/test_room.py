"""The free-space check before a file's first byte (room.py): right figures, and no statvfs per small file."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from bulkdl.errors import LocalError
from bulkdl.worker import room


@pytest.fixture
def readings(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Directories whose free space was read; the real statvfs answers."""
    read: list[Path] = []
    real = shutil.disk_usage

    def counting(path: Any) -> Any:
        read.append(Path(path))
        return real(path)

    monkeypatch.setattr(room.shutil, "disk_usage", counting)
    return read


def test_small_files_read_the_free_space_once(tmp_path: Path, readings: list[Path]) -> None:
    for _ in range(200):
        room.check(tmp_path, 16 * 1024, 0, 1, None)
    assert readings == [tmp_path]


def test_a_file_larger_than_a_share_of_the_free_space_reads_it_again(tmp_path: Path, readings: list[Path]) -> None:
    room.check(tmp_path, 1, 0, 1, None)
    free = _free(tmp_path)
    room.check(tmp_path, free // 4, 0, 1, None)
    assert readings == [tmp_path, tmp_path]


def test_a_file_that_cannot_fit_fails_with_the_figures_every_time(tmp_path: Path, readings: list[Path]) -> None:
    room.check(tmp_path, 1, 0, 1, None)
    huge = _free(tmp_path) * 4
    for _ in range(2):
        with pytest.raises(LocalError, match=r"^not enough space: needs .* free$"):
            room.check(tmp_path, huge, 0, 1, None)
    room.check(tmp_path, 1, 0, 1, None)  # refused bytes were never counted as admitted
    assert readings == [tmp_path] * 3


def _free(directory: Path) -> int:
    found = os.statvfs(directory)  # not shutil's: that one is counted
    return found.f_bavail * found.f_frsize
