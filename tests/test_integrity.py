"""Wrong bytes and hangs found by review, each reproduced against the code before its fix (issue 9)."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from bulkdl.worker import parts, plan

from .conftest import Server, run_cli, write_manifest
from .httpserver import FaultServer, content, etag_of

MiB = 1024**2


def test_a_stray_part_without_a_sidecar_is_never_continued_by_a_segmented_plan(server: Server, tmp_path: Path) -> None:
    # A small file's interrupted download leaves name.part0 and no sidecar. If the next run splits the file
    # (it grew upstream, or the settings changed), the stray part was taken as progress and the probe's
    # body, which starts at byte 0, appended after it: a wrong file installed, recorded and skipped for ever.
    data = content("grown", 3 * MiB)
    url = server.add("grown.bin", data)
    final = tmp_path / "mirror/grown.bin"
    final.parent.mkdir()
    parts.part_path(final, 0).write_bytes(b"stale" * 100_000)
    manifest = write_manifest(tmp_path, [url], defaults={"segments": 3, "min_segment_size": "1MiB"})
    result = run_cli("run", manifest, cwd=tmp_path)
    assert result.code == 0, result.stdout
    assert final.read_bytes() == data
    assert result.file("grown.bin")["sha256"] == hashlib.sha256(data).hexdigest()
    assert sorted(p.name for p in final.parent.iterdir()) == [".bulkdl", "grown.bin"], "no part left"


def test_a_range_of_unstated_length_is_fetched_whole(builtin: FaultServer, tmp_path: Path) -> None:
    # "Content-Range: bytes 0-N/*" says nothing of where the file ends: the bounded probe's N was taken
    # for the end, and a truncated file installed with exit 0.
    data = content("star", 3 * MiB + 5)
    url = builtin.add("star.bin", data, unknown_total=True)
    manifest = write_manifest(tmp_path, [url], defaults={"min_segment_size": "1MiB"})
    result = run_cli("run", manifest, cwd=tmp_path)
    assert result.code == 0, result.stdout
    assert (tmp_path / "mirror/star.bin").read_bytes() == data
    assert any("did not state the file's length" in n for n in result.file("star.bin")["notes"])


def test_a_failure_before_the_transfer_returns_the_probe_connection(builtin: FaultServer, tmp_path: Path) -> None:
    # The sidecar cannot be written (a directory stands where its temp goes; EROFS or ENOSPC do the same). The
    # probe's connection leaked, and once `segments` of them had, the worker waited for a free one for ever.
    files = []
    for i in range(4):
        files.append(builtin.add(f"blocked{i}.bin", content(f"blocked{i}", 2 * MiB)))
        (tmp_path / "mirror" / f".blocked{i}.bin.bulkdl.bulkdl-tmp").mkdir(parents=True)
    files.append(builtin.add("free.bin", content("free", 2 * MiB)))
    manifest = write_manifest(
        tmp_path, files, workers=1, defaults={"segments": 1, "min_segment_size": "1MiB", "retries": 0}
    )
    result = run_cli("run", manifest, cwd=tmp_path, timeout=60)
    assert result.code == 1, result.stdout
    assert [result.file(f"blocked{i}.bin")["outcome"] for i in range(4)] == ["failed"] * 4
    assert "Is a directory" in result.file("blocked0.bin")["error"]
    assert (tmp_path / "mirror/free.bin").read_bytes() == content("free", 2 * MiB)


def test_a_failing_segment_ends_its_siblings_backoff(builtin: FaultServer, tmp_path: Path) -> None:
    # Segment 1 is told to come back in a minute; segment 0's connection breaks and its retry meets a 404.
    # The file has failed, but the sibling slept on through its backoff: the retry wait watched only the
    # run's stop flag, not the file's abort.
    data = content("sibling", 2 * MiB)
    url = builtin.add(
        "sibling.bin", data, drop_after=300_000, drops=1, fail_at={MiB: (503, "60"), 300_000: (404, None)}
    )
    manifest = write_manifest(
        tmp_path, [url], defaults={"segments": 2, "min_segment_size": "1MiB", "max_retry_after": 60}
    )
    started = time.monotonic()
    result = run_cli("run", manifest, cwd=tmp_path, timeout=45)  # the backoff alone would take 60 s
    assert time.monotonic() - started < 45
    assert result.code == 1, result.stdout
    assert result.file("sibling.bin")["error"] == "HTTP 404 Not Found"
    assert [r.range for r in builtin.requests("sibling.bin") if r.status == 503] == [f"bytes={MiB}-{2 * MiB - 1}"]


def test_a_resume_asks_the_manifest_url_again_not_an_expired_redirect(builtin: FaultServer, tmp_path: Path) -> None:
    # Release assets and presigned object-store URLs redirect to a signed target that expires. The sidecar
    # kept that target, and every later night asked it, got 403, kept the parts, and failed again.
    data = content("signed", 2 * MiB)
    target = builtin.add("signed-tonight.bin", data)
    url = builtin.add_redirect("release.bin", target)
    builtin.add_error("signed-yesterday.bin", 403)
    final = tmp_path / "mirror/release.bin"
    final.parent.mkdir()
    saved = plan.Plan(
        url,
        builtin.base_url + "/signed-yesterday.bin",
        len(data),
        etag_of(data),
        None,
        True,
        plan.split(len(data), 2, MiB),
    )
    parts.sidecar_path(final).write_bytes(plan.encode(saved))
    parts.part_path(final, 0).write_bytes(data[:100_000])
    manifest = write_manifest(tmp_path, [url], defaults={"segments": 2, "min_segment_size": "1MiB"})
    result = run_cli("run", manifest, cwd=tmp_path)
    assert result.code == 0, result.stdout
    assert final.read_bytes() == data
    assert not builtin.requests("signed-yesterday.bin")
    assert result.file("release.bin")["transferred"] == len(data) - 100_000, "the parts were continued"


def test_a_digest_added_to_the_manifest_later_is_checked_on_a_304(server: Server, tmp_path: Path) -> None:
    # The state records sha256 only; an md5 added to the manifest later was never compared: the 304 was
    # reported as a verified skip.
    data = content("later", 5000)
    url = server.add("later.bin", data)
    write_manifest(tmp_path, [url])
    assert run_cli("run", tmp_path / "manifest.yaml", cwd=tmp_path).code == 0
    write_manifest(tmp_path, [{"url": url, "md5": "0" * 32}])
    result = run_cli("run", tmp_path / "manifest.yaml", cwd=tmp_path)
    assert result.code == 1, result.stdout
    assert result.file("later.bin")["error"].startswith(f"md5 mismatch: the manifest says {'0' * 32}, ")
    assert (tmp_path / "mirror/later.bin").read_bytes() == data, "the copy on disk is kept"
    write_manifest(tmp_path, [{"url": url, "md5": hashlib.md5(data).hexdigest()}])
    result = run_cli("run", tmp_path / "manifest.yaml", cwd=tmp_path)
    assert result.code == 0 and result.file("later.bin")["outcome"] == "skipped", result.stdout
    write_manifest(tmp_path, [{"url": url, "md5": "0" * 32}])  # now recorded: decided without a request
    assert run_cli("run", tmp_path / "manifest.yaml", cwd=tmp_path).code == 1


def test_max_size_holds_when_the_size_is_learned_only_at_the_end(builtin: FaultServer, tmp_path: Path) -> None:
    urls = [
        builtin.add("chunked.bin", content("chunked", 3 * MiB), chunked=True),
        builtin.add("closed.bin", content("closed", 3 * MiB), close_delimited=True),
    ]
    manifest = write_manifest(tmp_path, urls, defaults={"max_size": "1MiB", "retries": 0})
    result = run_cli("run", manifest, cwd=tmp_path)
    assert result.code == 1, result.stdout
    for name in ("chunked.bin", "closed.bin"):
        assert result.file(name)["error"] == "too large: more than max_size (1.00 MiB) and still coming"
        assert not (tmp_path / "mirror" / name).exists()
