"""The mirror's checksums file: written after every run, checked by the real ``sha256sum -c``."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from bulkdl.parent import checksums
from bulkdl.parent.manifest import Manifest
from bulkdl.parent.state import Row
from bulkdl.values import FileResult, Status

from .conftest import Server, cli_env, run_cli, write_manifest

needs_sha256sum = pytest.mark.skipif(shutil.which("sha256sum") is None, reason="needs GNU coreutils")
AWKWARD = ["plain.iso", "two  words.txt", "a#b?c.bin", "ünïcødé ✓.dat", "deep/er/x y.gz"]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _serve(server: Server, names: list[str]) -> list[dict[str, str]]:
    entries = []
    for name in names:
        url = server.add(quote(name) if server.kind == "builtin" else name, f"bytes of {name}".encode())
        entries.append({"url": url if server.kind == "builtin" else server.base_url + "/" + quote(name), "path": name})
    return entries


def _sha256sum_check(dest: Path, sums: str = "SHA256SUMS") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["sha256sum", "--strict", "-c", sums], cwd=dest, capture_output=True, check=False)


def _listed(path: Path) -> list[str]:
    return [line.split("  ", 1)[1] for line in path.read_text(encoding="utf-8").splitlines()]


@needs_sha256sum
def test_sha256sum_c_passes_on_the_mirror_a_run_wrote(tmp_path: Path, server: Server) -> None:
    manifest = write_manifest(tmp_path, _serve(server, AWKWARD), checksums_file="SHA256SUMS")
    run = run_cli("run", manifest, cwd=tmp_path)
    assert run.code == 0, run.stderr
    mirror = tmp_path / "mirror"
    done = _sha256sum_check(mirror)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count(b": OK\n") == len(AWKWARD)
    # Sorted, relative to dest, nothing but the mirror's files: not itself, not the state.
    assert _listed(mirror / "SHA256SUMS") == sorted(AWKWARD)
    assert not list(mirror.glob(".*bulkdl-tmp"))


@needs_sha256sum
def test_names_with_a_backslash_and_a_newline_are_escaped_for_sha256sum(tmp_path: Path) -> None:
    """A manifest cannot name such files (paths.check_relpath refuses them), so a mirror made by bulkdl holds
    none; a mirror that somehow does still gets lines sha256sum reads back."""
    names = ["back\\slash", "new\nline", "car\rriage", "plain"]
    results = []
    for index, name in enumerate(names):
        (tmp_path / name).write_bytes(name.encode())
        results.append(FileResult(index, name, "http://h/", Status.DOWNLOADED, 1, 1, _sha256(name.encode()), 0.0))
    loaded = Manifest(tmp_path / "m.yaml", tmp_path, 1, (), checksums_file=tmp_path / "SHA256SUMS")
    assert checksums.write(loaded, results, {}) is None
    done = _sha256sum_check(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count(b": OK\n") == len(names)


@needs_sha256sum
def test_after_a_failing_run_it_lists_what_is_in_place(tmp_path: Path, builtin: Server) -> None:
    kept = builtin.add("kept.iso", b"the first version")
    good = builtin.add("good.iso", b"always fine")
    manifest = write_manifest(tmp_path, [kept, good], checksums_file="SHA256SUMS")
    assert run_cli("run", manifest, cwd=tmp_path).code == 0

    # The next run: kept.iso cannot be fetched again, and a new file cannot be fetched at all.
    builtin.add("kept.iso", b"", status=404)
    new = builtin.add_error("new.iso", 404)
    manifest = write_manifest(tmp_path, [kept, good, new], checksums_file="SHA256SUMS")
    run = run_cli("run", manifest, "--force", cwd=tmp_path)
    assert run.code == 1
    assert run.file("kept.iso")["outcome"] != "downloaded"
    assert run.file("new.iso")["outcome"] == "failed"
    mirror = tmp_path / "mirror"
    assert _listed(mirror / "SHA256SUMS") == ["good.iso", "kept.iso"]
    done = _sha256sum_check(mirror)
    assert done.returncode == 0, done.stdout + done.stderr


def test_an_earlier_copy_changed_since_the_state_recorded_it_is_not_listed(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"recorded")
    found = os.stat(tmp_path / "a")
    row = Row("a", "http://h/a", 8, None, None, _sha256(b"recorded"), (), 8, found.st_mtime_ns, 0.0)
    failed = FileResult(0, "a", "http://h/a", Status.FAILED, None, 0, None, 0.0, error="503")
    assert list(checksums.in_place(tmp_path, [failed], {"a": row})) == [("a", row.sha256)]
    (tmp_path / "a").write_bytes(b"changed by hand")
    assert list(checksums.in_place(tmp_path, [failed], {"a": row})) == []
    (tmp_path / "a").unlink()
    assert list(checksums.in_place(tmp_path, [failed], {"a": row})) == []


def test_a_run_that_skips_everything_writes_the_same_list(tmp_path: Path, builtin: Server) -> None:
    files = [builtin.add("a", b"a"), {"url": builtin.add("c", b"c"), "path": "b/c"}]
    manifest = write_manifest(tmp_path, files, checksums_file="sums/ALL")
    assert run_cli("run", manifest, cwd=tmp_path).code == 0
    first = (tmp_path / "mirror" / "sums" / "ALL").read_bytes()
    (tmp_path / "mirror" / "sums" / "ALL").unlink()
    again = run_cli("run", manifest, cwd=tmp_path)
    assert again.code == 0
    assert again.file("a")["outcome"] == "skipped"
    assert (tmp_path / "mirror" / "sums" / "ALL").read_bytes() == first
    assert first == f"{_sha256(b'a')}  a\n{_sha256(b'c')}  b/c\n".encode()


def test_the_command_line_flag_overrides_the_key_from_the_working_directory(tmp_path: Path, builtin: Server) -> None:
    manifest = write_manifest(tmp_path, [builtin.add("a", b"a")], checksums_file="SHA256SUMS")
    (tmp_path / "out").mkdir()
    run = run_cli("run", manifest, "--checksums-file", "out/mirror.sha256", cwd=tmp_path)
    assert run.code == 0, run.stderr
    assert (tmp_path / "out" / "mirror.sha256").read_text() == f"{_sha256(b'a')}  a\n"
    assert not (tmp_path / "mirror" / "SHA256SUMS").exists()


def test_the_key_may_not_name_a_file_of_the_mirror(tmp_path: Path) -> None:
    files = ["http://127.0.0.1:9/SHA256SUMS", "http://127.0.0.1:9/b"]
    manifest = write_manifest(tmp_path, files, checksums_file="./SHA256SUMS")
    run = run_cli("check", manifest, cwd=tmp_path)
    assert run.code == 2
    assert run.stderr.strip() == (
        f"{manifest}:3: checksums_file: 'SHA256SUMS' clashes with the entry for 'SHA256SUMS' (line 5)"
    )


@pytest.mark.parametrize("value", ["../outside", "/etc/x", ".bulkdl/sums", "a.part1"])
def test_the_key_is_a_path_below_dest(tmp_path: Path, value: str) -> None:
    manifest = write_manifest(tmp_path, ["http://127.0.0.1:9/b"], checksums_file=value)
    run = run_cli("check", manifest, cwd=tmp_path)
    assert run.code == 2
    assert run.stderr.startswith(f"{manifest}:3: checksums_file: ")
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize("flag", ["mirror/b", "mirror/.bulkdl/sums", "mirror/.bulkdl", "file/x"])
def test_a_flag_that_would_overwrite_the_mirror_is_refused_before_any_download(
    tmp_path: Path, builtin: Server, flag: str
) -> None:
    (tmp_path / "file").write_text("in the way")
    manifest = write_manifest(tmp_path, [builtin.add("b", b"b")])
    run = run_cli("run", manifest, "--checksums-file", flag, cwd=tmp_path)
    assert run.code == 2
    assert run.stderr.startswith("bulkdl: ")
    assert "checksums file" in run.stderr
    assert "Traceback" not in run.stderr
    assert builtin.requests("b") == []


def test_a_checksums_file_that_cannot_be_written_at_the_end_fails_the_run(tmp_path: Path, builtin: Server) -> None:
    """Its directory goes away during the run: the files are done, the summary printed, and the exit code 1
    says the list downstream checks against is stale."""
    manifest = write_manifest(tmp_path, [builtin.add("a", b"a", delay=2.0)])
    (tmp_path / "out").mkdir()
    argv = [sys.executable, "-m", "bulkdl", "run", str(manifest), "--checksums-file", "out/SUMS"]
    with subprocess.Popen(argv, cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        deadline = time.monotonic() + 30
        while not (tmp_path / "mirror" / ".bulkdl").exists() and time.monotonic() < deadline:
            time.sleep(0.01)  # the run has checked the checksums file and is downloading
        (tmp_path / "out").rmdir()
        stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert (tmp_path / "mirror" / "a").read_bytes() == b"a"
    assert f"bulkdl: could not write the checksums file {tmp_path / 'out' / 'SUMS'}: No such file" in stderr.decode()
    assert "Traceback" not in stderr.decode()
    assert any(line.split()[:2] == ["a", "downloaded"] for line in stdout.decode().splitlines())  # the summary


def test_the_key_is_never_written_through_a_symlink_out_of_dest(tmp_path: Path, builtin: Server) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "mirror").mkdir()
    (tmp_path / "mirror" / "sums").symlink_to(tmp_path / "elsewhere")
    manifest = write_manifest(tmp_path, [builtin.add("a", b"a")], checksums_file="sums/SHA256SUMS")
    run = run_cli("run", manifest, cwd=tmp_path)
    assert run.code == 2
    assert "outside dest; bulkdl does not write through it" in run.stderr
    assert list((tmp_path / "elsewhere").iterdir()) == []
    assert builtin.requests("a") == []


def test_a_file_named_dash_passes_sha256sum_c(builtin: Server, tmp_path: Path) -> None:
    # From review: sha256sum -c reads a line naming "-" as standard input, so the list failed, or waited on a
    # terminal for ever. "./-" names the file.
    manifest = write_manifest(
        tmp_path, [{"url": builtin.add("dash", b"dash bytes"), "path": "-"}], checksums_file="SHA256SUMS"
    )
    assert run_cli("run", manifest, cwd=tmp_path).code == 0
    argv = ["sha256sum", "--strict", "-c", "SHA256SUMS"]
    check = subprocess.run(argv, cwd=tmp_path / "mirror", capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert check.returncode == 0, check.stdout + check.stderr
