"""Manifests from what upstream publishes (``bulkdl manifest from-sums`` / ``from-urls``) and ``base_url``."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import quote

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from bulkdl.errors import ManifestError
from bulkdl.parent.generate import quoted
from bulkdl.parent.manifest import Overrides, parse

from .conftest import Server, cli_env, run_cli

HEX = "ab" * 32
# Names a mirror meets: spaces, URL syntax, a percent sign, letters beyond ASCII, a directory.
AWKWARD = ["plain.iso", "two words.txt", "a#b?c=d&e.bin", "100%.txt", "ünïcødé ✓.dat", "sub dir/ñ/x y.tar.gz"]


def _manifest(text: str, tmp_path: Path) -> list[tuple[str, str]]:
    """(url, name) of each entry of the manifest ``text``."""
    loaded = parse("version: 1\n" + textwrap.dedent(text).lstrip(), tmp_path / "m.yaml", Overrides())
    return [(job.url, job.name) for job in loaded.jobs]


def _problems(text: str, tmp_path: Path) -> list[str]:
    with pytest.raises(ManifestError) as caught:
        parse("version: 1\n" + textwrap.dedent(text).lstrip(), tmp_path / "m.yaml", Overrides())
    return caught.value.problems


def _bulkdl(*args: str | Path, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "bulkdl", *map(str, args)]
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=60, env=cli_env(**env), check=False)


@pytest.mark.parametrize("base", ["http://h/pub/", "http://h/pub"])
def test_relative_urls_resolve_against_base_url_as_a_directory(tmp_path: Path, base: str) -> None:
    entries = _manifest(
        f"""
        base_url: {base}
        files:
          - a.iso
          - url: sub/b%20c.iso
          - url: ../up.iso
          - url: /root.iso
          - https://elsewhere/abs.iso
        """,
        tmp_path,
    )
    assert entries == [
        ("http://h/pub/a.iso", "a.iso"),
        ("http://h/pub/sub/b%20c.iso", "b c.iso"),
        ("http://h/up.iso", "up.iso"),
        ("http://h/root.iso", "root.iso"),
        ("https://elsewhere/abs.iso", "abs.iso"),
    ]


def test_a_relative_url_without_base_url_is_an_error_on_its_line(tmp_path: Path) -> None:
    problems = _problems(
        """
        files:
          - http://h/ok.iso
          - url: sub/a.iso
          - b.iso
        """,
        tmp_path,
    )
    assert problems == [
        f"{tmp_path / 'm.yaml'}:4: files[1].url: a relative URL needs a base_url: at the top of the manifest",
        f"{tmp_path / 'm.yaml'}:5: files[2]: a relative URL needs a base_url: at the top of the manifest",
    ]


def test_a_base_url_that_is_no_http_url_is_an_error(tmp_path: Path) -> None:
    problems = _problems("base_url: ftp://h/pub/\nfiles: [a.iso]\n", tmp_path)
    assert problems[0] == f"{tmp_path / 'm.yaml'}:2: base_url: only http and https URLs are supported, got ftp scheme"


SPECIAL = st.sampled_from("\"\\\n\r\t #:'{}[],&*!|>%@`\u2028\u2029\x85\ufeff")


@given(st.text(st.one_of(SPECIAL, st.characters(blacklist_categories=("Cs",)))))
def test_quoted_text_reads_back_as_itself(text: str) -> None:
    assert yaml.safe_load(f"key: {quoted(text)}  # a comment") == {"key": text}


def _upstream(server: Server, root: Path) -> dict[str, bytes]:
    """AWKWARD's files under /pub/ on ``server`` and in ``root`` (for sha256sum); name → bytes."""
    files = {name: hashlib.sha256(name.encode()).digest() * (i + 1) for i, name in enumerate(AWKWARD)}
    for name, data in files.items():
        # The builtin server keys a resource by its request path as sent; nginx decodes it to a file name.
        server.add(f"pub/{quote(name)}" if server.kind == "builtin" else f"pub/{name}", data)
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return files


@pytest.mark.skipif(shutil.which("sha256sum") is None, reason="needs GNU coreutils")
@pytest.mark.parametrize("flags", [[], ["--tag"]])
def test_from_sums_of_real_sha256sum_output_then_run_verifies_every_file(
    tmp_path: Path, server: Server, flags: list[str]
) -> None:
    upstream = tmp_path / "upstream"
    files = _upstream(server, upstream)
    sums = subprocess.run(["sha256sum", *flags, *files], cwd=upstream, capture_output=True, check=True).stdout
    (tmp_path / "SHA256SUMS").write_bytes(sums)

    made = _bulkdl(
        "manifest", "from-sums", "SHA256SUMS", "--base-url", f"{server.base_url}/pub", "--dest", "mirror", cwd=tmp_path
    )
    assert made.returncode == 0, made.stderr
    (tmp_path / "m.yaml").write_text(made.stdout, encoding="utf-8")
    assert _bulkdl("check", "m.yaml", cwd=tmp_path).returncode == 0

    run = run_cli("run", "m.yaml", cwd=tmp_path)
    assert run.code == 0, run.stderr
    for name, data in files.items():
        assert (tmp_path / "mirror" / name).read_bytes() == data
        assert run.file(name)["outcome"] == "downloaded"
        assert run.file(name)["sha256"] == hashlib.sha256(data).hexdigest()


def test_from_sums_digests_are_enforced(tmp_path: Path, builtin: Server) -> None:
    """The manifest carries upstream's digest: a file that does not match it fails."""
    builtin.add("pub/a.iso", b"not what SHA256SUMS says")
    (tmp_path / "SHA256SUMS").write_text(f"{HEX}  a.iso\n")
    made = _bulkdl("manifest", "from-sums", "SHA256SUMS", "--base-url", f"{builtin.base_url}/pub/", cwd=tmp_path)
    (tmp_path / "m.yaml").write_text(made.stdout)
    run = run_cli("run", "m.yaml", cwd=tmp_path)
    assert run.code == 1
    assert run.file("a.iso")["outcome"] == "failed"
    assert not (tmp_path / "a.iso").exists()


def test_from_sums_output_is_commented_and_the_same_every_time(tmp_path: Path) -> None:
    (tmp_path / "MD5SUMS").write_text(f"# upstream's comment\n{HEX[:32]}  ./x/a b.iso\nSHA1 (c) = {HEX[:40]}\n")
    args = ("manifest", "from-sums", "MD5SUMS", "--base-url", "https://example.org/pub")
    first = _bulkdl(*args, cwd=tmp_path, SOURCE_DATE_EPOCH="1700000000")
    again = _bulkdl(*args, cwd=tmp_path, SOURCE_DATE_EPOCH="1700000000")
    assert first.returncode == 0, first.stderr
    assert first.stdout == again.stdout
    assert first.stdout == textwrap.dedent(
        f"""\
        # A bulkdl manifest made by `bulkdl manifest from-sums` from "MD5SUMS"
        # on 2023-11-14 22:13:20 UTC: 2 files. Check it with `bulkdl check`, fetch with `bulkdl run`.
        version: 1
        dest: "."  # a relative dest is below this manifest's directory
        base_url: "https://example.org/pub/"  # each relative url is resolved against it
        files:
          - path: "x/a b.iso"
            url: "x/a%20b.iso"
            md5: "{HEX[:32]}"
          - url: "c"
            sha1: "{HEX[:40]}"
        """
    )


def test_from_sums_refuses_names_that_escape_or_clash_all_at_once(tmp_path: Path) -> None:
    names = ["../etc/passwd", "/abs", "ok", "./ok", "dir", "dir/below", "x.part1"]
    escaped = f"\\{HEX}  a\\\\b\n"  # a name holding a backslash, as sha256sum writes it
    (tmp_path / "SUMS").write_text("".join(f"{HEX}  {n}\n" for n in names[:6]) + escaped + f"{HEX}  {names[6]}\n")
    done = _bulkdl("manifest", "from-sums", "SUMS", "--base-url", "http://h/", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        "SUMS:1: path must not contain '..'; it would escape dest",
        "SUMS:2: path must be relative to dest, not absolute",
        "SUMS:4: 'ok' is listed twice (line 3)",
        "SUMS:6: 'dir/below' clashes with 'dir' (line 5)",
        "SUMS:7: path contains a backslash; use / between directories",
        "SUMS:8: 'x.part1' collides with the names bulkdl uses for partial files",
    ]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "SUMS:1: SUMS lists no file"),
        (b"# nothing\n", "SUMS:1: SUMS lists no file"),
        (f"{HEX}  ok\n{HEX}  caf\xe9\n".encode("latin-1"), "SUMS:2: not UTF-8 text; a manifest's names must be"),
        (b"garbage\n", 'SUMS:1: not a checksum line: expected "HEX  NAME" or "SHA256 (NAME) = HEX"'),
    ],
)
def test_from_sums_of_what_is_no_checksum_file(tmp_path: Path, content: bytes, expected: str) -> None:
    (tmp_path / "SUMS").write_bytes(content)
    done = _bulkdl("manifest", "from-sums", "SUMS", "--base-url", "http://h/", cwd=tmp_path)
    assert (done.returncode, done.stderr.strip()) == (2, expected)


def test_from_sums_needs_an_http_base_url(tmp_path: Path) -> None:
    (tmp_path / "SUMS").write_text(f"{HEX}  a\n")
    done = _bulkdl("manifest", "from-sums", "SUMS", "--base-url", "file:///srv/", cwd=tmp_path)
    assert done.returncode == 2
    assert "--base-url: only http and https URLs are supported, got file scheme" in done.stderr
    assert "Traceback" not in done.stderr


def test_from_urls_keeps_the_tree_below_base_url_and_runs(tmp_path: Path, builtin: Server) -> None:
    for name in ("pub/a.iso", "pub/x/b%20c.iso", "pub/x/y/d.iso", "pub/ab:c.iso"):
        builtin.add(name, name.encode())
    base = f"{builtin.base_url}/pub"
    (tmp_path / "urls.txt").write_text(
        f"# tonight's list\n{base}/a.iso\n\n  {base}/x/b%20c.iso  \n{base}/x/y/d.iso?token=1\n{base}/ab:c.iso\n"
    )
    made = _bulkdl("manifest", "from-urls", "urls.txt", "--base-url", base, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    (tmp_path / "m.yaml").write_text(made.stdout)
    run = run_cli("run", "m.yaml", cwd=tmp_path)
    assert run.code == 0, run.stderr
    assert (tmp_path / "a.iso").read_bytes() == b"pub/a.iso"
    assert (tmp_path / "x" / "b c.iso").read_bytes() == b"pub/x/b%20c.iso"
    assert (tmp_path / "x" / "y" / "d.iso").read_bytes() == b"pub/x/y/d.iso"
    assert (tmp_path / "ab:c.iso").read_bytes() == b"pub/ab:c.iso"


def test_from_urls_without_base_url_takes_last_segments(tmp_path: Path) -> None:
    (tmp_path / "urls.txt").write_text("https://a.example/one/x.iso\nhttps://b.example/two/y%20z.iso\n")
    made = _bulkdl("manifest", "from-urls", "urls.txt", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    (tmp_path / "m.yaml").write_text(made.stdout)
    check = _bulkdl("check", "m.yaml", cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    assert "base_url" not in made.stdout
    assert yaml.safe_load(made.stdout)["dest"] == "."
    dest = _bulkdl("manifest", "from-urls", "urls.txt", "--dest", "/srv/mirror", cwd=tmp_path)
    assert yaml.safe_load(dest.stdout)["dest"] == "/srv/mirror", dest.stderr  # as from-sums takes it
    assert yaml.safe_load(made.stdout)["files"] == [
        {"url": "https://a.example/one/x.iso"},
        {"url": "https://b.example/two/y%20z.iso"},
    ]


def test_from_urls_refuses_each_bad_line(tmp_path: Path) -> None:
    (tmp_path / "urls.txt").write_text(
        "http://h/pub/a.iso\nhttp://h/pub/sub/../../x\nhttp://h/other/b.iso\nhttp://h/pub/a.iso\n"
        "ftp://h/pub/c.iso\nhttp://h/pub/dir/\nhttp://h/pub/%2e%2e/y\n"
    )
    done = _bulkdl("manifest", "from-urls", "urls.txt", "--base-url", "http://h/pub/", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "urls.txt:2: path must not contain '..'; it would escape dest",
        "urls.txt:3: http://h/other/b.iso is not below --base-url http://h/pub/",
        "urls.txt:4: 'a.iso' is listed twice (line 1)",
        "urls.txt:5: only http and https URLs are supported, got ftp scheme",
        "urls.txt:6: path names a directory, not a file",
        "urls.txt:7: path must not contain '..'; it would escape dest",
    ]


def test_from_urls_without_base_url_says_how_to_keep_the_tree(tmp_path: Path) -> None:
    (tmp_path / "urls.txt").write_text("http://h/pub/a/f.dat\nhttp://h/pub/b/f.dat\n")
    done = _bulkdl("manifest", "from-urls", "urls.txt", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "urls.txt:2: 'f.dat' is listed twice (line 1); --base-url URL keeps the path below it instead of the "
        "last segment"
    ]


@pytest.mark.parametrize("line", [f"{HEX}  a b.iso", f"SHA256 (a b.iso) = {HEX}"])
def test_check_of_a_checksum_file_says_what_to_run(tmp_path: Path, line: str) -> None:
    (tmp_path / "SHA256SUMS").write_text(f"{line}\n{HEX}  c.iso\n")
    done = _bulkdl("check", "SHA256SUMS", cwd=tmp_path)
    assert (done.returncode, done.stderr) == (
        2,
        "SHA256SUMS:1: manifest: a checksum file, not a manifest; "
        "`bulkdl manifest from-sums SHA256SUMS --base-url URL` makes one of it\n",
    )


def test_a_digest_of_decimal_digits_alone_stays_a_string(tmp_path: Path) -> None:
    # Unquoted, YAML reads such a digest as a number, and the manifest from-sums printed failed its own check.
    digits = "1234567890" * 6 + "1234"
    (tmp_path / "SUMS").write_text(f"{digits}  x.txt\n{'0' * 32}  y.txt\n")
    made = _bulkdl("manifest", "from-sums", "SUMS", "--base-url", "http://h/", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    loaded = parse(made.stdout, tmp_path / "m.yaml", Overrides())
    assert [job.digests for job in loaded.jobs] == [(("sha256", digits),), (("md5", "0" * 32),)]
