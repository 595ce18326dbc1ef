"""The free-space check before a file's first byte (room.py): right figures, and no statvfs per small file."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from bulkdl.errors import LocalError
from bulkdl.parent.schema import positive_size
from bulkdl.worker import plan, room


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
        with pytest.raises(LocalError, match=r"^not enough space: needs .* free in .*; free .* more there$"):
            room.check(tmp_path, huge, 0, 1, None)
    room.check(tmp_path, 1, 0, 1, None)  # refused bytes were never counted as admitted
    assert readings == [tmp_path] * 3


def _free(directory: Path) -> int:
    found = os.statvfs(directory)  # not shutil's: that one is counted
    return found.f_bavail * found.f_frsize


@pytest.mark.parametrize("size", [8 * 2**20 + 1, 3 * 2**40])
def test_a_segmented_file_that_cannot_fit_says_it_is_on_disk_twice_and_how_to_have_it_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    free = size * 3 // 2  # room for the file once, not twice
    monkeypatch.setattr(room.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(free * 2, free, free))
    with pytest.raises(LocalError) as refused:
        room.check(tmp_path, size, 0, 2, None)
    said = str(refused.value)
    twice, once = room.format_size(2 * size), room.format_size(size)
    assert said.startswith(f"not enough space: needs {twice}, "), said
    assert f"free in {tmp_path}: in 2 parts the file is on disk twice until it is renamed into place" in said
    assert f"as its parts ({once}) and as the assembled copy ({once})" in said
    assert f"; free {room.format_size(2 * size - free)} more there, or give this file segments: 1 and " in said
    assert f"and needs {once}" in said
    # What it suggests is true: the manifest's segments: 1 and that chunk_size plan one part, which needs no copy.
    chunk = positive_size(said.split("chunk_size: ", 1)[1].split(":", 1)[0])
    assert len(plan.layout(size, 1, 4 * 2**20, chunk)) == 1
    assert len(plan.layout(size, 1, 4 * 2**20, 8 * 2**20)) > 1, "segments: 1 alone would not have done"


def test_a_resumed_segmented_file_counts_what_it_has_and_suggests_no_new_layout(tmp_path: Path) -> None:
    size = _free(tmp_path) * 2
    have = size // 4
    with pytest.raises(LocalError) as refused:
        room.check(tmp_path, size, have, 3, None)
    said = str(refused.value)
    assert said.startswith(f"not enough space: needs {room.format_size(2 * size - have)}, "), said
    assert f"({room.format_size(size)}, {room.format_size(have)} of it on disk already)" in said
    assert said.endswith(" more there") and "segments" not in said
