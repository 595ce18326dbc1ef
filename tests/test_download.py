"""End to end through the CLI, against the builtin server and a real nginx: bytes, requests, report."""

from __future__ import annotations

import hashlib
import os
import re
import stat
from pathlib import Path

import pytest

from .conftest import Server, run_cli, write_manifest
from .httpserver import content

KiB, MiB = 1024, 1024**2


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _leftovers(directory: Path) -> list[str]:
    """Anything bulkdl writes only while working: parts, sidecars, temp files."""
    found = [p for p in directory.rglob("*") if p.is_file() and ".bulkdl" not in p.relative_to(directory).parts[:-1]]
    return [p.name for p in found if re.search(r"\.part\d+$|\.bulkdl$|\.bulkdl-tmp$", p.name)]


def test_one_small_file(server: Server, tmp_path: Path) -> None:
    data = content("small", 1000)
    url = server.add("small.bin", data)
    result = run_cli("run", write_manifest(tmp_path, [url]), cwd=tmp_path)
    assert result.code == 0, result.stderr
    assert (tmp_path / "mirror/small.bin").read_bytes() == data
    entry = result.file("small.bin")
    assert entry == {
        "url": url,
        "path": "small.bin",
        "status": "new",
        "outcome": "downloaded",
        "bytes": 1000,
        "transferred": 1000,
        "sha256": _sha(data),
        "elapsed_s": entry["elapsed_s"],
        "error": None,
        "code": None,
        "notes": [],
    }
    # The probe asks for one minimal segment (4 MiB by default), which holds the whole file: one request.
    assert [(r.range, r.status) for r in server.requests("small.bin")] == [(f"bytes=0-{4 * MiB - 1}", 206)]
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("known_size", [False, True])
def test_large_file_is_split_into_segments(server: Server, tmp_path: Path, known_size: bool) -> None:
    data = content("large", 8 * MiB + 123)
    url = server.add("large.bin", data)
    entry = {"url": url, "sha256": _sha(data)} | ({"size": len(data)} if known_size else {})
    manifest = write_manifest(tmp_path, [entry], defaults={"segments": 4, "min_segment_size": "1MiB"})
    result = run_cli("run", manifest, cwd=tmp_path)
    assert result.code == 0, result.stderr
    assert (tmp_path / "mirror/large.bin").read_bytes() == data
    requests = server.requests("large.bin")
    # Segments of 2097183, 2097183, 2097183 and 2097182 bytes. The probe is bounded, so no byte is ever sent
    # for nothing: with the size in the manifest it is segment 0 exactly; without, one minimal segment, and
    # segment 0's thread asks for the rest of it on the same connection.
    first = [f"bytes=0-{2097182}"] if known_size else [f"bytes=0-{MiB - 1}", f"bytes={MiB}-2097182"]
    rest = ["bytes=2097183-4194365", "bytes=4194366-6291548", "bytes=6291549-8388730"]
    assert sorted((r.range or "" for r in requests), key=lambda r: int(r[6:].split("-")[0])) == first + rest
    assert all(r.status == 206 for r in requests) and sum(r.sent for r in requests) == len(data)
    assert _leftovers(tmp_path) == []


def test_segment_ranges_tile_the_file(server: Server, tmp_path: Path) -> None:
    size = 10 * MiB + 3  # does not divide by 4: the first three segments take one extra byte
    data = content("tiles", size)
    url = server.add("tiles.bin", data)
    manifest = write_manifest(tmp_path, [url], defaults={"segments": 4, "min_segment_size": "1MiB"})
    assert run_cli("run", manifest, cwd=tmp_path).code == 0
    bounds = [(0, MiB - 1), (MiB, 2621440), (2621441, 5242881), (5242882, 7864322), (7864323, 10485762)]
    asked = sorted((r.range or "" for r in server.requests("tiles.bin")), key=lambda r: int(r[6:].split("-")[0]))
    assert asked == [f"bytes={a}-{b}" for a, b in bounds]  # the probe, the rest of segment 0, segments 1-3
    assert (tmp_path / "mirror/tiles.bin").read_bytes() == data


def test_batch_reuses_connections(server: Server, tmp_path: Path) -> None:
    files = {f"batch/f{i:03d}.txt": content(f"batch{i}", 100 + i * 7) for i in range(300)}
    urls = [server.add(name, data) for name, data in files.items()]
    manifest = write_manifest(tmp_path, urls, workers=4)
    result = run_cli("run", manifest, cwd=tmp_path)
    assert result.code == 0, result.stderr
    for name, data in files.items():
        assert (tmp_path / "mirror" / Path(name).name).read_bytes() == data
    assert result.report is not None
    assert result.report["summary"]["downloaded"] == 300
    logged = [r for r in server.requests() if r.path.startswith("/batch/")]
    assert len(logged) == 300
    connections = {r.conn for r in logged}
    assert len(connections) <= 8, f"{len(connections)} connections for 300 files over 4 workers"


def test_a_rerun_of_conditional_gets_reuses_connections(server: Server, tmp_path: Path) -> None:
    # A 304 has no body to read: its connection goes back to the pool. Closing it as a body left unread cost
    # every file of a no-digest re-run a new connection.
    urls = [server.add(f"again/f{i:03d}.txt", content(f"again{i}", 300 + i)) for i in range(100)]
    manifest = write_manifest(tmp_path, urls, workers=2, connections=4)
    assert run_cli("run", manifest, cwd=tmp_path).code == 0
    before = len(server.requests())
    result = run_cli("run", manifest, cwd=tmp_path)
    assert result.code == 0, result.stderr
    logged = server.requests()[before:]
    assert [r.status for r in logged] == [304] * 100
    assert len({r.conn for r in logged}) <= 4, f"{len({r.conn for r in logged})} connections for 100 answers 304"


def test_server_without_range_support(server: Server, tmp_path: Path) -> None:
    data = content("norange", 3 * MiB + 5)
    url = server.add("plain.bin", data, ranges=False)
    manifest = write_manifest(
        tmp_path, [{"url": url, "sha256": _sha(data)}], defaults={"segments": 8, "min_segment_size": "256KiB"}
    )
    result = run_cli("run", manifest, cwd=tmp_path)
    assert result.code == 0, result.stderr
    assert (tmp_path / "mirror/plain.bin").read_bytes() == data
    requests = server.requests("plain.bin")
    assert [(r.status, r.sent) for r in requests] == [(200, len(data))], "one stream, no segments"


def test_empty_file(server: Server, tmp_path: Path) -> None:
    url = server.add("empty.bin", b"")
    result = run_cli("run", write_manifest(tmp_path, [{"url": url, "size": 0}]), cwd=tmp_path)
    assert result.code == 0, result.stderr
    assert (tmp_path / "mirror/empty.bin").read_bytes() == b""
    assert result.file("empty.bin")["sha256"] == _sha(b"")


def test_bad_files_do_not_stop_the_batch(server: Server, tmp_path: Path) -> None:
    good = {f"good{i}.bin": content(f"good{i}", 50 * KiB + i) for i in range(6)}
    urls = [server.add(name, data) for name, data in good.items()]
    missing = server.add_error("missing.bin", 404)
    broken = server.add_error("broken.bin", 500)
    manifest = write_manifest(tmp_path, [urls[0], missing, *urls[1:3], broken, *urls[3:]], defaults={"retries": 1})
    result = run_cli("run", manifest, cwd=tmp_path)
    assert result.code == 1, result.stderr
    for name, data in good.items():
        assert (tmp_path / "mirror" / name).read_bytes() == data
        assert result.file(name)["outcome"] == "downloaded"
    assert result.file("missing.bin")["error"] == "HTTP 404 Not Found"
    assert result.file("broken.bin")["error"].startswith("HTTP 500 Internal Server Error (gave up after 2 attempts)")
    assert not (tmp_path / "mirror/missing.bin").exists() and not (tmp_path / "mirror/broken.bin").exists()
    assert len(server.requests("missing.bin")) == 1, "404 is permanent: no retry"
    assert len(server.requests("broken.bin")) == 2, "500 is retried `retries` times"
    assert result.report is not None and result.report["summary"] | {"elapsed_s": 0} == {
        "downloaded": 6,
        "skipped": 0,
        "failed": 2,
        "interrupted": 0,
        "bytes": sum(map(len, good.values())),
        "transferred": sum(map(len, good.values())),
        "elapsed_s": 0,
    }
    assert "HTTP 404 Not Found" in result.stdout and "HTTP 500" in result.stdout


def test_wrong_digest_fails_and_final_path_stays_absent(server: Server, tmp_path: Path) -> None:
    data = content("digest", 3 * MiB)
    url = server.add("digest.bin", data)
    wrong = "0" * 64
    manifest = write_manifest(
        tmp_path, [{"url": url, "sha256": wrong}], defaults={"segments": 3, "min_segment_size": "1MiB"}
    )
    result = run_cli("run", manifest, cwd=tmp_path)
    assert result.code == 1
    error = result.file("digest.bin")["error"]
    assert error == f"sha256 mismatch: expected {wrong}, got {_sha(data)}"
    assert not (tmp_path / "mirror/digest.bin").exists()
    assert _leftovers(tmp_path) == [], "wrong bytes are not kept for a resume"


def test_other_digest_algorithms_are_checked(server: Server, tmp_path: Path) -> None:
    data = content("algos", 100 * KiB)
    url = server.add("algos.bin", data)
    entry = {"url": url, "md5": hashlib.md5(data).hexdigest(), "sha1": hashlib.sha1(data).hexdigest()}
    entry |= {"sha512": hashlib.sha512(data).hexdigest(), "blake2b": hashlib.blake2b(data).hexdigest()}
    assert run_cli("run", write_manifest(tmp_path, [entry]), cwd=tmp_path).code == 0
    entry["blake2b"] = "f" * 128
    (tmp_path / "mirror/algos.bin").unlink()
    result = run_cli("run", write_manifest(tmp_path, [entry]), cwd=tmp_path)
    assert result.code == 1 and result.file("algos.bin")["error"].startswith("blake2b mismatch")


def test_size_mismatch_with_manifest(server: Server, tmp_path: Path) -> None:
    url = server.add("sized.bin", content("sized", 5000))
    result = run_cli("run", write_manifest(tmp_path, [{"url": url, "size": 4000}]), cwd=tmp_path)
    assert result.code == 1
    assert result.file("sized.bin")["error"] == "size mismatch: manifest says 4000 bytes, server has 5000"
    assert not (tmp_path / "mirror/sized.bin").exists()


def test_summary_when_piped_shows_full_digests_and_paths(server: Server, tmp_path: Path) -> None:
    long_name = "a-rather-long-directory-name-for-cron-mail/" + "x" * 90 + ".tar.gz"
    files = {long_name: content("long", 2000), "short.txt": content("short", 10)}
    entries = [{"url": server.add(f"piped/{i}", data), "path": name} for i, (name, data) in enumerate(files.items())]
    entries.append({"url": server.add_error("piped/gone", 404), "path": "gone.txt"})
    result = run_cli("run", write_manifest(tmp_path, entries), cwd=tmp_path)
    assert result.code == 1
    lines = result.stdout.splitlines()
    for name, data in files.items():
        row = next(line for line in lines if name in line)  # the whole path on one line
        assert _sha(data) in row and "downloaded" in row
    assert any("gone.txt" in line and "failed" in line and "HTTP 404 Not Found" in line for line in lines)
    assert lines[-1].startswith("FAILED: 1 of 3 files failed (2 new), ")
    assert "\x1b[" not in result.stdout, "no colour codes in a pipe"


def test_dest_override_and_subdirectories(server: Server, tmp_path: Path) -> None:
    data = content("nested", 300)
    url = server.add("nested.bin", data)
    manifest = write_manifest(tmp_path, [{"url": url, "path": "deep/er/nested.bin"}])
    result = run_cli("run", manifest, "--dest", "elsewhere", cwd=tmp_path)
    assert result.code == 0, result.stderr
    assert (tmp_path / "elsewhere/deep/er/nested.bin").read_bytes() == data
    assert not (tmp_path / "mirror").exists()


def test_files_get_the_usual_permissions(server: Server, tmp_path: Path) -> None:
    # Assembled files pass through a temp file (created 0600); they must end up like any new file.
    urls = [server.add("one-part.bin", content("p1", 1000)), server.add("many-parts.bin", content("p2", 3 * MiB))]
    manifest = write_manifest(tmp_path, urls, defaults={"segments": 3, "min_segment_size": "1MiB"})
    umask = os.umask(0o022)
    os.umask(umask)
    assert run_cli("run", manifest, cwd=tmp_path).code == 0
    for name in ("one-part.bin", "many-parts.bin"):
        assert stat.S_IMODE((tmp_path / "mirror" / name).stat().st_mode) == 0o666 & ~umask, name
