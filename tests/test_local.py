"""The local side: a full disk, a read-only directory, absurd sizes. Real file systems, no mocks.

Each run happens inside its own user and mount namespace (``unshare``) with a small tmpfs mounted where the
test needs it, so nothing is mounted on the machine and no root is needed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .conftest import Server, cli_env, run_cli, write_manifest
from .httpserver import FaultServer, content

MiB = 1024**2


def _run_with_mount(tmp_path: Path, manifest: Path, mountpoint: Path, options: str) -> tuple[int, dict[str, Any], str]:
    if shutil.which("unshare") is None:
        pytest.fail("unshare (util-linux) is needed to mount a private tmpfs")
    mountpoint.mkdir(parents=True, exist_ok=True)
    report = tmp_path / "report.json"
    # The tmpfs vanishes with the namespace: what bulkdl left on it is listed before, on a line of its own.
    script = 'mount -t tmpfs -o "$1" tmpfs "$2" && dir="$2" && shift 2 && { "$@"; code=$?; '
    script += 'echo "left:" $(ls -A "$dir"); exit $code; }'
    argv = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, "sh", options, str(mountpoint)]
    argv += [sys.executable, "-m", "bulkdl", "run", str(manifest), "--report", str(report)]
    env = cli_env()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env, stdin=subprocess.DEVNULL)
    assert report.exists(), done.stderr
    return done.returncode, {f["path"]: f for f in json.loads(report.read_text())["files"]}, done.stdout + done.stderr


def test_full_disk_fails_that_file_and_the_others_go_on(builtin: FaultServer, tmp_path: Path) -> None:
    fits = content("fits", 1 * MiB)
    entries = [
        {"url": builtin.add("fits.bin", fits), "path": "fits.bin"},
        {
            "url": builtin.add("known.bin", content("known", 8 * MiB)),
            "path": "known.bin",
        },  # size known: refused up front
        {"url": builtin.add("unknown.bin", content("unknown", 6 * MiB), chunked=True), "path": "unknown.bin"},
        # Fetched once the disk is full (one connection, so one file at a time, in order), and it needs no
        # space of its own: its row is always written to a full disk. Without it, a slow machine may commit
        # the last row before the disk fills, leaving the state nothing to fail on.
        {"url": builtin.add("empty.bin", b""), "path": "empty.bin"},
    ]
    # One file at a time: with several in flight, the small file could meet the disk the big one filled.
    manifest = write_manifest(tmp_path, entries, workers=1, connections=1, defaults={"chunk_size": "4MiB"})
    code, files, output = _run_with_mount(tmp_path, manifest, tmp_path / "mirror", "size=4m")
    assert code == 1, output
    assert files["fits.bin"]["outcome"] == files["empty.bin"]["outcome"] == "downloaded"
    # Two 4 MiB chunks and then their concatenation: 16 MiB at the peak, with under 4 MiB free.
    assert files["known.bin"]["error"].startswith("not enough space: needs 16.0 MiB, ")
    assert files["unknown.bin"]["error"].startswith("No space left on device"), files["unknown.bin"]
    assert "Traceback" not in output
    # The state database shares the full disk: not recording it is said once, and the run still ends normally.
    assert "bulkdl: could not record this run in the state (" in output
    assert "the next run re-checks its files" in output


def test_a_disk_that_fills_while_parts_are_assembled(builtin: FaultServer, tmp_path: Path) -> None:
    # Each file alone fits with its assembly copy (6 of 10 MiB), the two together do not: the disk fills
    # under a part or under the copy a file's assembly makes while it downloads. Either way: one line, no
    # traceback from any thread, no temp file left, and a file that did complete is whole.
    files = {f"both{i}.bin": content(f"both{i}", 3 * MiB) for i in range(2)}
    slow = {"rate": 4 * MiB}  # so that the two run at the same time
    entries = [
        {"url": builtin.add(name, data, **slow), "path": name, "size": len(data)} for name, data in files.items()
    ]
    manifest = write_manifest(tmp_path, entries, workers=2, defaults={"segments": 2, "min_segment_size": "1MiB"})
    code, results, output = _run_with_mount(tmp_path, manifest, tmp_path / "mirror", "size=10m")
    assert code == 1 and "Traceback" not in output, output
    failed = [r for r in results.values() if r["outcome"] == "failed"]
    assert failed and all(r["error"].startswith("No space left on device") for r in failed), results
    [left] = [line for line in output.splitlines() if line.startswith("left:")]
    assert ".bulkdl-tmp" not in left and ".part" in left, left  # a failed file keeps its parts, not its temp


def test_read_only_directory_fails_its_files_only(builtin: FaultServer, tmp_path: Path) -> None:
    ok = content("ok", 5000)
    entries = [
        {"url": builtin.add("ok.bin", ok), "path": "ok.bin"},
        {"url": builtin.add("ro.bin", content("ro", 5000)), "path": "ro/ro.bin"},
    ]
    manifest = write_manifest(tmp_path, entries)
    code, files, output = _run_with_mount(tmp_path, manifest, tmp_path / "mirror/ro", "ro,size=1m")
    assert code == 1, output
    assert files["ok.bin"]["outcome"] == "downloaded"
    assert files["ro/ro.bin"]["error"].startswith("Read-only file system"), files["ro/ro.bin"]
    assert "Traceback" not in output


def test_read_only_destination_is_one_clear_error(builtin: FaultServer, tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, [builtin.add("x.bin", b"x")])
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    script = 'mount -t tmpfs -o ro tmpfs "$1" && shift && exec "$@"'
    argv = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, "sh", str(mirror)]
    argv += [sys.executable, "-m", "bulkdl", "run", str(manifest)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=cli_env())
    assert done.returncode == 1
    assert done.stderr.strip() == f"bulkdl: cannot use the destination {mirror}: Read-only file system"


def test_absurd_size_is_refused_without_writing(server: Server, tmp_path: Path) -> None:
    url = server.add("huge.bin", content("huge", 3 * MiB))
    manifest = write_manifest(tmp_path, [url], defaults={"max_size": "2MiB"})
    result = run_cli("run", manifest, cwd=tmp_path)
    assert result.code == 1
    assert result.file("huge.bin")["error"] == "too large: the server offers 3.00 MiB, max_size is 2.00 MiB"
    assert sorted(p.name for p in (tmp_path / "mirror").iterdir()) == [".bulkdl"], "nothing written, nothing reserved"
