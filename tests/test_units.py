"""Pure parts: size strings, segment arithmetic, the sidecar format, destination names."""

from __future__ import annotations

import contextlib
import itertools
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from bulkdl import paths
from bulkdl.parent.state import Row, State, read_rows
from bulkdl.paths import check_relpath, name_from_url, outside
from bulkdl.sizes import format_size, parse_size
from bulkdl.worker import plan
from bulkdl.worker.assemble import _copy_range

MiB = 1024**2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (0, 0),
        (512, 512),
        ("512", 512),
        ("512B", 512),
        ("4KiB", 4096),
        ("4 KiB", 4096),
        ("4kb", 4000),
        ("4MiB", 4 * MiB),
        ("4MB", 4_000_000),
        ("1.5GiB", int(1.5 * 1024**3)),
        ("2GB", 2_000_000_000),
        ("1TiB", 1024**4),
    ],
)
def test_parse_size_accepts(text: object, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "MiB", "4 parsecs", "-1", -1, "1e3", True, 1.5, None, [1], "\u0663MiB", "\u00b2", "\uff14KiB"],
)
def test_parse_size_rejects(text: object) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


@pytest.mark.parametrize("text", ["9" * 400 + "MiB", "1" + "0" * 5000, 2**63, "9223372036854775808", "8589934592 GiB"])
def test_parse_size_refuses_sizes_no_file_has(text: object) -> None:
    # float("9" * 400) is inf, and int(inf) raised OverflowError: a traceback from `bulkdl check`.
    with pytest.raises(ValueError, match=r"is larger than any file can be \(at most 9223372036854775807 bytes\)$"):
        parse_size(text)


def test_parse_size_is_exact_up_to_the_largest_file() -> None:
    assert parse_size("9223372036854775807") == parse_size(2**63 - 1) == 2**63 - 1
    assert parse_size("8589934591.5 GiB") == 8589934591 * 1024**3 + 512 * 1024**2  # float would round it


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.00 KiB"),
        (1536, "1.50 KiB"),
        (25 * MiB, "25.0 MiB"),
        (1023 * MiB, "1023 MiB"),
        (1024**3, "1.00 GiB"),
    ],
)
def test_format_size(n: int, expected: str) -> None:
    assert format_size(n) == expected


@pytest.mark.parametrize(
    ("size", "segments", "minimum", "expected"),
    [
        (0, 8, MiB, []),
        (1, 8, MiB, [(0, 1)]),
        (MiB - 1, 8, MiB, [(0, MiB - 1)]),
        (2 * MiB - 1, 8, MiB, [(0, 2 * MiB - 1)]),  # two segments would be below the minimum
        (2 * MiB, 8, MiB, [(0, MiB), (MiB, 2 * MiB)]),
        (10, 3, 1, [(0, 4), (4, 7), (7, 10)]),  # the remainder goes to the first segments
        (100 * MiB, 8, 4 * MiB, [(i * 100 * MiB // 8, (i + 1) * 100 * MiB // 8) for i in range(8)]),
        (5, 1, 1, [(0, 5)]),
    ],
)
def test_split(size: int, segments: int, minimum: int, expected: list[tuple[int, int]]) -> None:
    got = plan.split(size, segments, minimum)
    assert [(s.start, s.end) for s in got] == expected
    assert [s.index for s in got] == list(range(len(expected)))


@pytest.mark.parametrize("size", [1, 7, 1000, 12_345_678, 2**40 + 3])
@pytest.mark.parametrize("segments", [1, 2, 7, 16, 64])
def test_split_tiles_the_file(size: int, segments: int) -> None:
    got = plan.split(size, segments, 1)
    assert got[0].start == 0 and got[-1].end == size
    assert all(a.end == b.start for a, b in itertools.pairwise(got))
    lengths = [s.length or 0 for s in got]
    assert max(lengths) - min(lengths) <= 1


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a.iso", "a.iso"),
        ("isos/a.iso", "isos/a.iso"),
        ("./a//b/./c", "a/b/c"),
        ("über/ünï.txt", "über/ünï.txt"),
        ("a..b", "a..b"),
    ],
)
def test_relpath_accepts(raw: str, expected: str) -> None:
    assert check_relpath(raw) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "empty"),
        ("/etc/passwd", "relative"),
        ("C:/x", "relative"),
        ("../x", "'..'"),
        ("a/../../x", "'..'"),
        ("a\x00b", "control"),
        ("a\nb", "control"),
        ("a\\b", "backslash"),
        ("dir/", "directory"),
        (".", "no file"),
        ("x.iso.part3", "partial"),
        ("x.iso.bulkdl", "partial"),
        (".x.iso.bulkdl-tmp", "partial"),
        (".bulkdl/state.db", "partial"),
    ],
)
def test_relpath_rejects(raw: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        check_relpath(raw)


@pytest.mark.parametrize(
    "raw",
    [
        "a.iso",
        "pool/00/pkg_1.0-1+b2~rc1_amd64.deb",
        "a..b",
        "...",
        ".x",
        "x.partA",
        "x.bulkdl.iso",
        "..",
        ".",
        "a/./b",
        "a/../b",
        "x.part1",
        "d.bulkdl/y",
        ".bulkdl",
        "x.bulkdl-tmp",
        "a/",
        "/a",
        "c:x",
        "a" * 236,
        "a" * 237,
    ],
)
def test_relpath_shortcut_agrees_with_the_full_check(raw: str) -> None:
    """The one-match shortcut for plain names gives what the step-by-step check gives, or leaves it to it."""

    def outcome(check: Callable[[str], str]) -> str:
        try:
            return check(raw)
        except ValueError as exc:
            return f"refused: {exc}"

    assert outcome(check_relpath) == outcome(paths._normalised)


LONGEST = 255 - len(".") - len(".bulkdl.bulkdl-tmp")  # the sidecar's temp is the longest name beside a file


@pytest.mark.parametrize(
    "raw",
    [
        "a" * LONGEST,
        "\u00e9" * (LONGEST // 2),  # two bytes each in UTF-8
        "d" * 255 + "/" + "a" * LONGEST,
        "/".join(["d" * 255] * 20) + "/f",
    ],
    ids=["ascii", "two-byte", "long-directory", "deep"],
)
def test_relpath_accepts_the_longest_names(raw: str) -> None:
    assert check_relpath(raw) == raw


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("a" * (LONGEST + 1), f"file name too long: {LONGEST + 1} bytes, at most {LONGEST}"),
        ("\u00e9" * (LONGEST // 2 + 1), f"file name too long: {LONGEST + 2} bytes, at most {LONGEST}"),
        ("\U0001f600" * 60, f"file name too long: 240 bytes, at most {LONGEST}"),  # 60 characters, 240 bytes
        ("sub/" + "a" * 300, f"file name too long: 300 bytes, at most {LONGEST}"),
        ("d" * 256 + "/f", "directory name too long: 256 bytes, at most 255"),
        ("a/" + "\u00e9" * 128 + "/f", "directory name too long: 256 bytes, at most 255"),
        ("a\ud800b", "path contains a character that is not valid Unicode text"),
    ],
    ids=["ascii", "two-byte", "four-byte", "in-a-directory", "directory", "two-byte-directory", "surrogate"],
)
def test_relpath_rejects_names_the_file_system_would(raw: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        check_relpath(raw)
    assert str(caught.value).startswith(message), caught.value


def test_the_longest_accepted_name_and_everything_beside_it_can_be_created(tmp_path: Path) -> None:
    name = check_relpath("\u00e9" * (LONGEST // 2) + "a" * (LONGEST % 2))
    beside = [name, f".{name}.bulkdl-tmp", f"{name}.bulkdl", f".{name}.bulkdl.bulkdl-tmp", f"{name}.part63"]
    for each in beside:
        (tmp_path / each).write_bytes(b"x")  # OSError: File name too long, if the bound were wrong
    assert len(f".{name}.bulkdl.bulkdl-tmp".encode()) == 255


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    """A dest (mirror/) and a directory outside it (elsewhere/)."""
    (tmp_path / "mirror").mkdir()
    (tmp_path / "elsewhere").mkdir()
    return tmp_path / "mirror", tmp_path / "elsewhere"


def test_directories_inside_dest_are_inside(tree: tuple[Path, Path]) -> None:
    dest, _ = tree
    (dest / "real/deeper").mkdir(parents=True)
    assert outside(dest, dest) is None
    assert outside(dest, dest / "real/deeper") is None
    assert outside(dest, dest / "real/not/yet/made") is None, "bulkdl creates those as real directories"
    (dest / "alias").symlink_to("real")  # a symlink that stays inside dest is fine
    assert outside(dest, dest / "alias/deeper") is None


def test_dest_itself_may_be_a_symlink(tree: tuple[Path, Path]) -> None:
    dest, elsewhere = tree
    chosen = dest.parent / "chosen"
    chosen.symlink_to(elsewhere)
    (elsewhere / "sub").mkdir()
    assert outside(chosen, chosen / "sub") is None


@pytest.mark.parametrize("target", ["absolute", "relative", "dangling"])
def test_a_symlink_out_of_dest_is_refused(tree: tuple[Path, Path], target: str) -> None:
    dest, elsewhere = tree
    link = {"absolute": elsewhere, "relative": Path("../elsewhere"), "dangling": elsewhere / "gone"}[target]
    (dest / "sub").symlink_to(link)
    resolved = (elsewhere / "gone" if target == "dangling" else elsewhere).resolve()
    assert outside(dest, dest / "sub/deeper") == (
        f"{dest}/sub is a symlink to {resolved}, outside dest; bulkdl does not write through it"
    )


def test_a_symlink_reached_through_another_is_found(tree: tuple[Path, Path]) -> None:
    dest, elsewhere = tree
    (dest / "b").mkdir()
    (dest / "a").symlink_to("b")  # inside, harmless by itself
    (dest / "b/c").symlink_to(elsewhere)
    assert outside(dest, dest / "a/c") == (
        f"{dest}/a/c is a symlink to {elsewhere.resolve()}, outside dest; bulkdl does not write through it"
    )


def test_a_symlink_loop_is_refused_or_left_to_mkdir(tree: tuple[Path, Path]) -> None:
    dest, _ = tree
    (dest / "loop").symlink_to("loop")
    reason = outside(dest, dest / "loop/x")
    assert (
        reason is None or reason == f"{dest}/loop is a symlink that does not resolve; bulkdl does not write through it"
    )


def test_a_directory_not_below_dest(tree: tuple[Path, Path]) -> None:
    dest, elsewhere = tree
    assert outside(dest, elsewhere) == f"{elsewhere} is not inside dest {dest}"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://h/pub/a.iso", "a.iso"),
        ("http://h/a%20b.txt?x=1", "a b.txt"),
        ("https://h/%C3%BC.bin", "ü.bin"),
        ("http://h/%2e%2e", ".."),
    ],
)
def test_name_from_url(url: str, expected: str) -> None:
    assert name_from_url(url) == expected


@pytest.mark.parametrize("url", ["http://h/", "http://h", "http://h/a%2Fb"])
def test_name_from_url_rejects(url: str) -> None:
    with pytest.raises(ValueError):
        name_from_url(url)


def _row(path: str) -> Row:
    return Row(path, "http://x/" + path, 3, None, None, "ab" * 32, (("sha256", "ab" * 32),), 3, 1, 0.0)


def test_state_commits_a_row_only_once_its_directory_is_synced(tmp_path: Path) -> None:
    (tmp_path / "kept").mkdir()
    (tmp_path / "gone").mkdir()
    with State(tmp_path) as state:
        state.put(_row("kept/a.bin"))
        state.commit()
        with contextlib.closing(sqlite3.connect(tmp_path / ".bulkdl/state.db")) as other:  # sees commits only
            assert [r[0] for r in other.execute("SELECT path FROM files")] == ["kept/a.bin"]
        assert state.problem is None
        state.put(_row("gone/b.bin"))
        (tmp_path / "gone").rmdir()  # removed under the run: its rename can no longer be made durable
        state.commit()
        assert state.problem is not None and state.problem.startswith(f"could not sync {tmp_path / 'gone'}: ")
    assert set(read_rows(tmp_path)) == {"kept/a.bin"}, "a row whose directory was never synced was recorded"


@pytest.mark.parametrize("kernel", [True, False])
def test_copy_range_places_bytes_at_their_offsets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kernel: bool
) -> None:
    # Without os.copy_file_range (not Linux) the same copy goes through a buffer.
    if not kernel:
        monkeypatch.delattr(os, "copy_file_range")
    source, target = tmp_path / "part", tmp_path / "temp"
    source.write_bytes(bytes(range(256)) * 4096)  # 1 MiB
    with open(source, "rb") as src, open(target, "w+b") as dst:
        done = 0
        while done < 300_000:
            done += _copy_range(src.fileno(), dst.fileno(), 300_000 - done, 1000 + done, 5000 + done)
    assert target.read_bytes()[5000:] == source.read_bytes()[1000:301_000]
    assert target.read_bytes()[:5000] == bytes(5000), "nothing before the offset"
