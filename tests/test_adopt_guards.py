"""Adoption's guards (worker/fetch.py): what it reads must be the regular file at the path, unchanged from
the first byte to the last, and a run asked to stop does not wait for the hash of a big file.

Proposed by a review: a writer that sets the mtime back (rsync -t --inplace, touch -r) slipped past a check
of size, mtime and inode, and the row then vouched for bytes no one had hashed.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from bulkdl.values import Condition, Job, Settings
from bulkdl.worker.fetch import _Download, _hashed
from bulkdl.worker.meter import Meter
from bulkdl.worker.retry import Cancelled

SIZE = 8 * 1024 * 1024  # several of hashing's 1 MiB buffers


def _sparse(tmp_path: Path) -> Path:
    path = tmp_path / "f.bin"
    with open(path, "wb") as f:
        f.truncate(SIZE)
    return path


def test_a_file_written_in_place_while_hashed_mtime_set_back_is_not_adopted(tmp_path: Path) -> None:
    path = _sparse(tmp_path)
    before = os.stat(path)
    written = []

    def write_after_the_first_buffer() -> None:
        if not written:
            fd = os.open(path, os.O_WRONLY)
            os.pwrite(fd, b"x", SIZE - 1)  # a part not read yet: the hash would cover the new byte
            os.close(fd)
            os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
            written.append(True)

    assert _hashed(path, ["sha256"], write_after_the_first_buffer) == "changed while it was hashed"


def test_a_file_growing_while_it_is_hashed_is_not_adopted(tmp_path: Path) -> None:
    path = _sparse(tmp_path)

    grown: list[bool] = []

    def append() -> None:  # once, after the first buffer: as a download still writing the file would
        if not grown:
            with open(path, "ab") as f:
                f.write(b"x")
            grown.append(True)

    assert _hashed(path, ["sha256"], append) == "changed while it was hashed"


def test_a_symlink_is_not_followed(tmp_path: Path) -> None:
    target = _sparse(tmp_path)
    link = tmp_path / "link.bin"
    link.symlink_to(target)
    assert _hashed(link, ["sha256"], lambda: None) == "is not a regular file"


def test_a_stop_ends_the_hash_of_an_adoption(tmp_path: Path) -> None:
    path = _sparse(tmp_path)
    job = Job(
        0,
        "http://127.0.0.1:9/f.bin",
        "http://127.0.0.1:9/f.bin",
        (),
        "f.bin",
        (),
        path,
        SIZE,
        (("sha256", "0" * 64),),
        Settings(),
    )
    stop = threading.Event()
    stop.set()
    download = _Download(job, Condition(None, None, SIZE, (), 0, adopt=True), stop, Meter(0, None))
    halt, looks = download._halt, []

    def looked() -> None:
        looks.append(True)
        halt()

    download._halt = looked  # type: ignore[method-assign]
    with pytest.raises(Cancelled):
        download.run()
    assert len(looks) == 1, "stopped after the first buffer, not after the file's last"


def test_a_path_that_names_another_file_once_hashed_is_not_adopted(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    path = _sparse(tmp_path / "d")

    def swap_the_directory() -> None:  # the file read stays untouched (its ctime too); the path moves on
        if not (tmp_path / "d-old").exists():
            os.rename(tmp_path / "d", tmp_path / "d-old")
            (tmp_path / "d").mkdir()
            (tmp_path / "d/f.bin").write_bytes(b"y" * 10)

    assert _hashed(path, ["sha256"], swap_the_directory) == "changed while it was hashed"


def test_a_fifo_in_the_files_place_does_not_block(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    os.mkfifo(path)
    said: list[object] = []
    reader = threading.Thread(target=lambda: said.append(_hashed(path, ["sha256"], lambda: None)), daemon=True)
    reader.start()
    reader.join(10)  # an open() that waited for a writer would wait for ever
    assert said == ["is not a regular file"]
