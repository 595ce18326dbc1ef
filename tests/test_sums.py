"""The checksum-file format both ways: lines the real ``sha256sum -c`` accepts, and every form coreutils reads."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bulkdl.errors import ManifestError
from bulkdl.sums import Sum, format_line, parse

HEX = "0123456789abcdef" * 4
# Any character but NUL (no file name can hold one; surrogates cannot be encoded, so no name holds them),
# with the few the format gives a meaning drawn often.
SPECIAL = st.sampled_from("\\\n\r *()=#./n")
NAMES = st.text(
    st.one_of(SPECIAL, st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")), min_size=1
)
AWKWARD = ["plain.txt", "two  spaces ", " leading", "ünïcødé ✓.bin", "back\\slash", "new\nline", "car\rriage", "*star"]


@given(NAMES, st.sampled_from(["md5", "sha1", "sha256", "sha512"]))
def test_format_then_parse_gives_back_any_name(name: str, algorithm: str) -> None:
    digest = hashlib.new(algorithm, name.encode()).hexdigest()
    written = "./-" if name == "-" else name  # "-" alone would be standard input to sha256sum -c
    assert parse(format_line(digest, name), "SUMS") == [Sum(1, algorithm, digest, written)]


@pytest.mark.skipif(shutil.which("sha256sum") is None, reason="needs GNU coreutils")
def test_the_real_sha256sum_checks_awkward_names(tmp_path: Path) -> None:
    for i, name in enumerate(AWKWARD):
        (tmp_path / name).write_bytes(b"x" * i)
    text = "".join(format_line(hashlib.sha256(b"x" * i).hexdigest(), name) for i, name in enumerate(AWKWARD))
    (tmp_path / "SHA256SUMS").write_text(text, encoding="utf-8")
    done = subprocess.run(["sha256sum", "--strict", "-c", "SHA256SUMS"], cwd=tmp_path, capture_output=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count(b": OK\n") == len(AWKWARD)


@pytest.mark.skipif(shutil.which("sha256sum") is None, reason="needs GNU coreutils")
def test_what_the_real_sha256sum_prints_parses_back(tmp_path: Path) -> None:
    for i, name in enumerate(AWKWARD):
        (tmp_path / name).write_bytes(b"y" * i)
    for flags in ([], ["--tag"], ["--binary"]):
        printed = subprocess.run(["sha256sum", *flags, *AWKWARD], cwd=tmp_path, capture_output=True, check=True)
        sums = parse(printed.stdout.decode(), "SHA256SUMS")
        assert [(s.name, s.hex) for s in sums] == [
            (name, hashlib.sha256(b"y" * i).hexdigest()) for i, name in enumerate(AWKWARD)
        ], flags


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (f"{HEX}  a b", ("sha256", "a b")),
        (f"{HEX} *a b", ("sha256", "a b")),
        (f"{HEX.upper()}  ./x", ("sha256", "./x")),  # "./" is the caller's to normalise, as any path
        (f"   {HEX}  x", ("sha256", "x")),  # coreutils skips white space before the digest
        (f"{HEX}  x\r", ("sha256", "x")),  # a Windows line ending
        (f"{HEX[:32]}  m", ("md5", "m")),
        (f"{HEX[:40]}  s", ("sha1", "s")),
        (f"{HEX * 2}  big", ("sha512", "big")),
        (f"SHA256 (a (1).iso) = {HEX}", ("sha256", "a (1).iso")),
        (f"SHA256 (x)={HEX}", ("sha256", "x")),
        (f"MD5 (m) = {HEX[:32]}", ("md5", "m")),
        (f"SHA1 (s) = {HEX[:40]}", ("sha1", "s")),
        (f"SHA512 (s) = {HEX * 2}", ("sha512", "s")),
        (f"BLAKE2b (b) = {HEX * 2}", ("blake2b", "b")),
        (f"BLAKE2b-512 (b) = {HEX * 2}", ("blake2b", "b")),
        (f"\\SHA256 (a\\\\b\\nc) = {HEX}", ("sha256", "a\\b\nc")),
        (f"\\{HEX}  a\\rb", ("sha256", "a\rb")),
        (f"{HEX}  not\\nescaped", ("sha256", "not\\nescaped")),  # no leading backslash: as written
    ],
)
def test_each_form_coreutils_reads(line: str, expected: tuple[str, str]) -> None:
    (found,) = parse(line + "\n", "SUMS")
    assert (found.algorithm, found.name) == expected
    assert found.hex == found.hex.lower()


def test_blank_lines_and_comments_are_skipped_and_lines_counted() -> None:
    text = f"# made by hand\n\n   \n{HEX}  a\n#{HEX}  b\n{HEX}  c"
    assert [(s.line, s.name) for s in parse(text, "SUMS")] == [(4, "a"), (6, "c")]


def test_a_b2sums_file_reads_long_untagged_digests_as_blake2b() -> None:
    (found,) = parse(f"{HEX * 2}  b\n", "mirror/B2SUMS")
    assert found.algorithm == "blake2b"


def test_every_bad_line_is_reported_at_once() -> None:
    text = "\n".join(
        [
            "not a sum",
            f"SHA224 (a) = {HEX[:56]}",
            f"{HEX[:30]}  short",
            f"SHA256 (a) = {HEX[:40]}",
            f"\\{HEX}  bad\\escape",
            f"{HEX}  ",
            f"{HEX}  fine",
        ]
    )
    with pytest.raises(ManifestError) as caught:
        parse(text, "SHA256SUMS")
    assert caught.value.problems == [
        'SHA256SUMS:1: not a checksum line: expected "HEX  NAME" or "SHA256 (NAME) = HEX"',
        "SHA256SUMS:2: SHA224 checksums are not supported (only MD5, SHA1, SHA256, SHA512, BLAKE2b, BLAKE2b-512)",
        "SHA256SUMS:3: a digest of 30 hex digits is of no algorithm bulkdl knows",
        "SHA256SUMS:4: expected 64 hex digits for sha256, got 40",
        "SHA256SUMS:5: a name escaped with a leading backslash may hold only \\\\, \\n and \\r",
        "SHA256SUMS:6: the line names no file",
    ]
