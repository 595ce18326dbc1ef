"""Manifest validation: every problem reported with its line, exit 2, nothing downloaded, no traceback."""

from __future__ import annotations

import contextlib
import gc
import os
import resource
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from bulkdl.errors import ManifestError
from bulkdl.parent import manifest, yamldoc
from bulkdl.parent.manifest import Overrides, load, parse

from .conftest import cli_env, run_cli

GOOD = "http://127.0.0.1:9/a.bin"
SHA = "ab" * 32


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def test_defaults_inherit_and_entries_override(tmp_path: Path) -> None:
    m = load(
        _write(
            tmp_path,
            f"""
            version: 1
            dest: out
            workers: 3
            defaults:
              segments: 4
              min_segment_size: 1MiB
              retries: 2
              timeout: 7
              headers: {{User-Agent: test/1, X-Team: a}}
            files:
              - {GOOD}
              - url: http://127.0.0.1:9/dir/b%20c.txt
                path: sub/b.txt
                size: 2KiB
                sha256: "{SHA.upper()}"
                md5: "{"0" * 32}"
                segments: 2
                headers: {{x-team: b}}
              - http://127.0.0.1:9/pub/%C3%BC.iso
            """,
        )
    )
    a, b, c = m.jobs
    assert m.dest == tmp_path / "out" and m.workers == 3
    assert (a.name, a.path, a.settings.segments, a.settings.min_segment_size) == (
        "a.bin",
        tmp_path / "out/a.bin",
        4,
        1024**2,
    )
    assert a.settings.retries == 2 and a.settings.timeout == 7.0
    assert dict(a.settings.headers) == {"User-Agent": "test/1", "X-Team": "a"}
    assert (b.name, b.size, b.settings.segments) == ("sub/b.txt", 2048, 2)
    assert b.digests == (("md5", "0" * 32), ("sha256", SHA))
    assert dict(b.settings.headers) == {"User-Agent": "test/1", "x-team": "b"}
    assert c.name == "ü.iso"


def test_overrides_and_defaults(tmp_path: Path) -> None:
    path = _write(tmp_path, f"version: 1\nfiles: [{GOOD}, http://127.0.0.1:9/b]\n")
    m = load(path)
    assert m.dest == tmp_path and m.workers == min(os.cpu_count() or 1, 2)
    assert m.jobs[0].settings.segments == 8 and m.jobs[0].settings.min_segment_size == 4 * 1024**2
    m = load(path, Overrides(dest=tmp_path / "elsewhere", workers=50, segments=3))
    assert m.dest == tmp_path / "elsewhere" and m.workers == 2 and m.jobs[1].settings.segments == 3


INVALID = [
    (
        "version: 1\nfiles: [http://h/a\n",
        "m.yaml:3:1: yaml: ",
    ),
    ("files:\n  - url: http://h/a\n   bad: indent\n", "m.yaml:3:4: yaml:"),
    ("", "m.yaml:1: manifest: the file is empty"),
    ("- http://h/a\n", "m.yaml:1: : expected a mapping"),
    ("version: 1\n", "m.yaml:1: files: missing"),
    # An anchor reused across key and value roles broke the line lookup (exit 70) once another problem needed it.
    (
        "defaults:\n  &k retries: 1\n  timeout: *k\nfiles: [http://h/a]\n",
        "m.yaml:2: defaults.timeout: expected seconds",
    ),
    ("files:\n  - url: &s http://h/a\n    *s : 1\n", "m.yaml:2: files[0].http://h/a: unknown key"),
    # Both raised a traceback before the event loader (a merge key's tag has no constructor of its own).
    ("files:\n  - url: http://h/a\n    <<: {size: 1}\n", "m.yaml:3: files[0]: merge keys (<<) are not supported"),
    ("files:\n  - url: http://h/a\n    =: 1\n", "m.yaml:3: files[0]: could not determine a constructor"),
    ("version: 2\nfiles: [http://h/a]\n", "m.yaml:1: version: only version 1"),
    ("files: []\n", "m.yaml:1: files: expected a non-empty list"),
    ("files: http://h/a\n", "m.yaml:1: files: expected a non-empty list"),
    ("colour: red\nfiles: [http://h/a]\n", "m.yaml:1: colour: unknown key"),
    ("files:\n  - url: http://h/a\n    colour: red\n", "m.yaml:3: files[0].colour: unknown key"),
    ("files:\n  - ftp://h/a\n", "m.yaml:2: files[0]: only http and https"),
    ("files:\n  - url: file:///etc/passwd\n", "m.yaml:2: files[0].url: only http and https"),
    ("files:\n  - url: 'http:///a'\n", "m.yaml:2: files[0].url: URL has no host"),
    ("files:\n  - url: 'http://h/a\tb'\n", "m.yaml:2: files[0].url: URL contains whitespace"),
    ("files:\n  - path: a\n", "m.yaml:2: files[0].url: missing"),
    ("files:\n  - url: http://h/a\n    sha256: abc\n", "m.yaml:3: files[0].sha256: expected 64 hex digits"),
    ("files:\n  - url: http://h/a\n    md5: " + "z" * 32 + "\n", "m.yaml:3: files[0].md5: expected 32 hex digits"),
    ("files:\n  - url: http://h/a\n    size: huge\n", "m.yaml:3: files[0].size: 'huge' is not a size"),
    ("files:\n  - url: http://h/a\n    path: /etc/passwd\n", "m.yaml:3: files[0].path: path must be relative"),
    (
        "files:\n  - url: http://h/a\n    path: ../../etc/passwd\n",
        "m.yaml:3: files[0].path: path must not contain '..'",
    ),
    ('files:\n  - url: http://h/a\n    path: "a\\0b"\n', "m.yaml:3: files[0].path: path contains NUL"),
    ("files:\n  - http://h/%2e%2e\n", "m.yaml:2: files[0].url: path must not contain '..'"),
    ("files:\n  - http://h/dir/\n", "m.yaml:2: files[0].url: the URL path ends in '/'"),
    ("files:\n  - http://h/a\n  - http://g/a\n", "m.yaml:3: files[1].path: destination 'a' clashes with 'a' (line 2)"),
    (
        "files:\n  - url: http://h/a\n    path: x\n  - url: http://h/b\n    path: x/y\n",
        "m.yaml:4: files[1].path: destination 'x/y' clashes with 'x'",
    ),
    (
        "files:\n  - url: http://h/a\n    path: x/y/z\n  - url: http://h/b\n    path: x\n",
        "m.yaml:4: files[1].path: destination 'x' clashes with 'x/y/z' (line 2)",
    ),
    (
        "version: 1\nfiles:\n  - url: http://h/a\n    path: x/y/z\n  - url: http://h/b\n    path: x/y/w\n",
        None,
    ),
    ("workers: 0\nfiles: [http://h/a]\n", "m.yaml:1: workers: expected a whole number of at least 1"),
    ("defaults:\n  segments: 100\nfiles: [http://h/a]\n", "m.yaml:2: defaults.segments: at most 64"),
    ("defaults:\n  segments: two\nfiles: [http://h/a]\n", "m.yaml:2: defaults.segments: expected a whole number"),
    ("defaults:\n  timeout: -1\nfiles: [http://h/a]\n", "m.yaml:2: defaults.timeout: expected seconds"),
    ("defaults:\n  retries: yes\nfiles: [http://h/a]\n", "m.yaml:2: defaults.retries: expected a whole number"),
    (
        "defaults:\n  min_segment_size: 0\nfiles: [http://h/a]\n",
        "m.yaml:2: defaults.min_segment_size: must be at least 1",
    ),
    (
        'defaults:\n  headers: {X-A: "a\\nb"}\nfiles: [http://h/a]\n',
        "m.yaml:2: defaults.headers.X-A: header values must be single-line",
    ),
    ("defaults:\n  headers: [a]\nfiles: [http://h/a]\n", "m.yaml:2: defaults.headers: expected a mapping"),
    ("dest: [a]\nfiles: [http://h/a]\n", "m.yaml:1: dest: expected a single value"),
    ("files: [http://h/a]\nfiles: [http://h/b]\n", "m.yaml:2: files: given twice"),
]


@pytest.mark.parametrize(
    ("text", "message"), INVALID, ids=[(m or "valid: " + t.replace("\n", " "))[:48] for t, m in INVALID]
)
def test_invalid_manifest_is_rejected_with_line(tmp_path: Path, text: str, message: str | None) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(text)
    result = run_cli("check", "m.yaml", cwd=tmp_path)
    if message is None:  # a near miss that is valid
        assert result.code == 0, result.stderr
        return
    assert result.code == 2, result
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    if "flow" in text or text.count("[") > text.count("]"):  # PyYAML and libyaml word this differently
        assert "(while parsing a flow sequence on line 2)" in result.stderr


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
        version: 1
        workers: many
        files:
          - url: ftp://h/a
          - url: http://h/b
            sha1: nothex
          - url: http://h/c
            path: /abs
        """,
    )
    result = run_cli("run", path, cwd=tmp_path)
    assert result.code == 2
    lines = result.stderr.strip().splitlines()
    assert [line.split(": ", 2)[:2] for line in lines] == [
        [f"{path}:2", "workers"],
        [f"{path}:4", "files[0].url"],
        [f"{path}:6", "files[1].sha1"],
        [f"{path}:8", "files[2].path"],
    ]
    assert not (tmp_path / "mirror").exists()
    assert result.report is not None and result.report["files"] == [], "the report says so too, with no files"


def test_a_mapping_dropped_for_a_key_given_twice_lends_its_problems_to_no_other(tmp_path: Path) -> None:
    # The dropped mapping's id was free for the next one built, which then reported "files[0].a: given twice".
    text = "version: 1\ndefaults:\n  retries: 1\n  retries: {a: 1, a: 2}\nfiles:\n  - {url: http://h/a}\n"
    with pytest.raises(ManifestError) as caught:
        parse(text, Path("m.yaml"), Overrides())
    assert str(caught.value).splitlines() == ["m.yaml:4: defaults.retries: given twice"]


def test_missing_manifest_file(tmp_path: Path) -> None:
    result = run_cli("run", "nope.yaml", cwd=tmp_path)
    assert result.code == 2
    assert "nope.yaml:1: manifest: cannot read" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args", [["run"], ["run", "m.yaml", "--workers", "0"], ["run", "m.yaml", "--segments", "65"], ["frobnicate"]]
)
def test_bad_invocation_exits_2(tmp_path: Path, args: list[str]) -> None:
    _write(tmp_path, f"files: [{GOOD}]\n")
    result = run_cli(*args, cwd=tmp_path)
    assert result.code == 2 and "usage:" in result.stderr


def test_check_accepts_a_valid_manifest(tmp_path: Path) -> None:
    _write(tmp_path, f"version: 1\ndest: out\nfiles: [{GOOD}]\n")
    result = run_cli("check", "m.yaml", cwd=tmp_path)
    assert result.code == 0 and "1 file into" in result.stdout
    assert not (tmp_path / "out").exists()


# Manifests built to explode. Composing shares an aliased node, but reading visits every use: nested
# aliases, or one long list aliased into every entry, turned a small file into minutes and gigabytes.
def _laughs(use: str) -> str:
    levels = ["l0: &l0 [" + ", ".join(["http://h/x"] * 10) + "]"]
    levels += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, 9)]
    return "\n".join(["version: 1", "a:", *("  " + line for line in levels), use, ""])


def _each_entry(anchor: str, use: str, n: int = 3000) -> str:
    return "version: 1\nx: " + anchor + "\nfiles:\n" + "".join(f"  - {{url: http://h/f{i}, {use}}}\n" for i in range(n))


BOMBS = {
    "laughs-files": _laughs("files: *l8"),
    "laughs-mirrors": _laughs("files: [{url: http://h/a, mirrors: *l8}]"),
    "laughs-headers": _laughs("defaults: {headers: *l8}\nfiles: [http://h/a]"),
    "laughs-defaults": _laughs("defaults: *l8\nfiles: [http://h/a]"),
    "one-list-in-every-entry": _each_entry(
        "&m [" + ", ".join(f"http://h/{i}" for i in range(2000)) + "]", "mirrors: *m"
    ),
    "one-map-in-every-entry": _each_entry("&h {" + ", ".join(f"X-{i}: v" for i in range(3000)) + "}", "headers: *h"),
    "one-long-value-in-every-entry": _each_entry('&s "' + "9x" * 50_000 + '"', "segments: *s"),
    "recursive-alias": "version: 1\nfiles: &f [http://h/a, *f]\n",
    "deep-flow-list": "version: 1\nfiles: " + "[" * 5000 + "]" * 5000 + "\n",
    "deep-block-list": "version: 1\nfiles:\n" + "".join(" " * i + "-\n" for i in range(1200)),
}


@pytest.mark.parametrize("name", BOMBS)
def test_a_manifest_built_to_explode_is_a_quick_manifest_error(tmp_path: Path, name: str) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(BOMBS[name])

    def limit_memory() -> None:  # the child alone, so a blow-up fails fast instead of swapping the machine
        resource.setrlimit(resource.RLIMIT_AS, (1024**3, 1024**3))

    argv = [sys.executable, "-m", "bulkdl", "check", str(path)]
    started = time.monotonic()
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=60, env=cli_env(), preexec_fn=limit_memory, cwd=tmp_path
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 2, done.stdout + done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "Error:" not in done.stderr, done.stderr[-2000:]
    lines = done.stderr.splitlines()
    assert lines and all(line.startswith(f"{path}:") and len(line) < 1000 for line in lines), lines[:5]
    assert len(done.stderr) < 5 * 1024**2, "each problem short: a value quoted in each of 2,000 lines is cut"
    assert elapsed < 10, f"bulkdl check took {elapsed:.1f} s"  # about 0.3 s; generous for a loaded machine


def test_the_pure_python_yaml_composer_nested_too_deeply(monkeypatch: pytest.MonkeyPatch) -> None:
    # Without libyaml, PyYAML composes recursively: a RecursionError, not a traceback for the user.
    monkeypatch.setattr(yamldoc, "_LOADER", yaml.SafeLoader)
    with pytest.raises(ManifestError, match=r"^/m\.yaml:1: yaml: nested too deeply$"):
        parse("files: " + "[" * 3000 + "]" * 3000, Path("/m.yaml"), Overrides())


def test_aliases_used_as_intended_still_work(tmp_path: Path) -> None:
    # The anchor on the first entry's list, an alias in every other: what a user would write.
    mirrors = "[" + ", ".join(f"http://m{i}/x" for i in range(3)) + "]"
    entries = "".join(f"  - {{url: http://h/f{i}, mirrors: *m}}\n" for i in range(1, 5000))
    path = tmp_path / "m.yaml"
    path.write_text(f"version: 1\nfiles:\n  - {{url: http://h/f0, mirrors: &m {mirrors}}}\n{entries}")
    m = load(path)
    assert len(m.jobs) == 5000 and m.jobs[-1].mirrors == tuple(f"http://m{i}/x" for i in range(3))


def test_names_too_long_for_the_file_system_fail_at_check(tmp_path: Path) -> None:
    long = "a" * 250
    path = _write(tmp_path, f"version: 1\nfiles:\n  - http://h/{long}\n  - {{url: {GOOD}, path: {'d' * 256}/x}}\n")
    result = run_cli("check", path, cwd=tmp_path)
    assert result.code == 2
    assert result.stderr.splitlines() == [
        f"{path}:3: files[0].url: file name too long: 250 bytes, at most 236 "
        "(bulkdl adds up to 19 bytes beside it for partial files)",
        f"{path}:4: files[1].path: directory name too long: 256 bytes, at most 255",
    ]


def test_a_size_beyond_any_file_is_a_manifest_error(tmp_path: Path) -> None:
    path = _write(tmp_path, f'version: 1\nfiles:\n  - {{url: {GOOD}, size: "{"9" * 400}MiB"}}\n')
    result = run_cli("check", path, cwd=tmp_path)
    assert result.code == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith(f"{path}:3: files[0].size: '99999") and "larger than any file" in result.stderr


@pytest.mark.parametrize("valid", [True, False], ids=["valid", "invalid"])
def test_load_holds_off_the_garbage_collector_only_while_it_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, valid: bool
) -> None:
    collecting = []

    def parse_watched(*args: Any) -> Any:
        collecting.append(gc.isenabled())
        return parse(*args)

    monkeypatch.setattr(manifest, "parse", parse_watched)
    path = _write(tmp_path, f"version: 1\nfiles:\n  - {GOOD if valid else 'ftp://h/a'}\n")
    expected = contextlib.nullcontext() if valid else pytest.raises(ManifestError)
    try:
        with expected:
            load(path)
        assert collecting == [False] and gc.isenabled()
        gc.disable()
        with expected:
            load(path)
        assert collecting == [False, False] and not gc.isenabled()  # the caller's choice stays
    finally:
        gc.enable()


def test_each_jobs_path_is_dest_joined_with_its_name(tmp_path: Path) -> None:
    names = ["a.iso", "d/a.iso", "d/b.iso", "d/e/a.iso", "y//./c.iso", "e/a.iso"]
    entries = "".join(f"  - {{url: {GOOD}, path: {name}}}\n" for name in names)
    m = load(_write(tmp_path, f"version: 1\ndest: out\nfiles:\n{entries}"))
    assert [job.name for job in m.jobs] == ["a.iso", "d/a.iso", "d/b.iso", "d/e/a.iso", "y/c.iso", "e/a.iso"]
    for job in m.jobs:
        expected = tmp_path / "out" / job.name
        assert (job.path, str(job.path), job.path.parts, type(job.path)) == (
            expected,
            str(expected),
            expected.parts,
            type(expected),
        )
