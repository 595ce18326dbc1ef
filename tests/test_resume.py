"""Interrupted runs: kill -9, SIGTERM, Ctrl-C twice, a changed remote file, untrustworthy leftovers."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bulkdl import durable
from bulkdl.worker import parts, plan

from .conftest import Server, cli_env, run_cli, watermark, write_manifest
from .httpserver import FaultServer, content, etag_of

MiB = 1024**2
BIG = 200 * MiB
_BIG_DATA: dict[str, bytes] = {}


def saved(final: Path) -> plan.Plan | None:
    """The plan in the sidecar beside ``final``, as a later run would read it."""
    try:
        return plan.decode(parts.sidecar_path(final).read_bytes())
    except FileNotFoundError:
        return None


def save(final: Path, what: plan.Plan) -> None:
    parts.sidecar_path(final).write_bytes(plan.encode(what))


def big(name: str) -> bytes:
    if name not in _BIG_DATA:
        _BIG_DATA[name] = content(name, BIG)
    return _BIG_DATA[name]


class Background:
    """A ``bulkdl run`` in its own process group, with the final path sampled while it runs."""

    def __init__(self, manifest: Path, cwd: Path, final: Path, size: int) -> None:
        self.final = final
        self.size = size
        self.bad_samples: list[int] = []
        self._out = open(cwd / "background.out", "w+")  # noqa: SIM115 - closed in wait()
        env = cli_env()
        argv = [sys.executable, "-m", "bulkdl", "run", str(manifest), "--report", str(cwd / "report.json")]
        self.process = subprocess.Popen(
            argv,
            cwd=cwd,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        # The final path may be absent or complete, never anything in between.
        while self.process.poll() is None:
            try:
                size = self.final.stat().st_size
            except FileNotFoundError:
                size = None
            if size is not None and size != self.size:
                self.bad_samples.append(size)
            time.sleep(0.005)

    def parts(self) -> int:
        return sum(p.stat().st_size for p in self.final.parent.glob(self.final.name + ".part*"))

    def wait_until(self, condition: Callable[[], bool], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.process.poll() is None, f"the run ended early: {self.output()}"
            assert time.monotonic() < deadline, "timed out waiting for the run"
            time.sleep(0.01)

    def signal_group(self, signum: int) -> None:
        os.killpg(self.process.pid, signum)

    def wait(self, timeout: float = 60) -> int:
        code = self.process.wait(timeout=timeout)
        self._sampler.join()
        return code

    def output(self) -> str:
        self._out.seek(0)
        return self._out.read()

    def close(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self._out.close()


@pytest.fixture
def background() -> Iterator[Callable[..., Background]]:
    started: list[Background] = []

    def start(*args: Any) -> Background:
        run = Background(*args)
        started.append(run)
        return run

    yield start
    for run in started:
        run.close()


def _big_manifest(server: Server, tmp_path: Path, name: str = "big.bin") -> tuple[Path, bytes]:
    data = big(name)
    url = server.add(name, data, slow=True)
    manifest = write_manifest(
        tmp_path, [{"url": url, "size": BIG}], defaults={"segments": 8, "min_segment_size": "4MiB"}
    )
    return manifest, data


def test_kill_9_then_resume_transfers_only_the_rest(server: Server, tmp_path: Path, background: Any) -> None:
    manifest, data = _big_manifest(server, tmp_path)
    final = tmp_path / "mirror/big.bin"
    first = background(manifest, tmp_path, final, BIG)
    first.wait_until(lambda: first.parts() > BIG * 0.3)
    first.signal_group(signal.SIGKILL)
    first.wait()
    have = first.parts()
    assert have < BIG and not final.exists(), "killed mid-way"
    table = saved(final)
    assert table is not None and len(table.segments) >= BIG // (8 * MiB), "the sidecar lists every 8 MiB chunk"

    mark = watermark(server)
    second = background(manifest, tmp_path, final, BIG)
    assert second.wait() == 0, second.output()
    assert final.read_bytes() == data
    assert first.bad_samples == second.bad_samples == [], "the final path held partial bytes"
    resumed = [r for r in server.requests("big.bin") if r.conn > mark]
    assert resumed and all(r.if_range is not None and r.status == 206 for r in resumed), resumed
    received = json.loads((tmp_path / "report.json").read_text())["files"][0]["transferred"]
    assert received == BIG - have, "each missing byte received once, none of those on disk again"
    # What the server wrote includes what sat in the socket of a connection a steal cut: up to a socket
    # buffer each. A resume that started over would send the whole file again.
    moved = sum(r.sent for r in resumed)
    assert moved < (BIG - have) + 8 * 4 * MiB, f"moved {moved} bytes for {BIG - have} missing"
    assert "resumed with" in second.output()
    assert list(final.parent.glob("big.bin.*")) == [] and not durable.temp_path(final).exists()


def test_sigterm_stops_keeps_parts_and_exits_130(server: Server, tmp_path: Path, background: Any) -> None:
    manifest, data = _big_manifest(server, tmp_path)
    final = tmp_path / "mirror/big.bin"
    run = background(manifest, tmp_path, final, BIG)
    run.wait_until(lambda: run.parts() > BIG * 0.2)
    run.signal_group(signal.SIGTERM)  # as cron, systemd or a shutdown would: the whole group
    assert run.wait(timeout=15) == 130, run.output()
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["files"][0]["outcome"] == "interrupted" and report["summary"]["interrupted"] == 1
    assert "interrupted" in run.output()
    assert run.parts() > 0 and parts.sidecar_path(final).exists() and not final.exists()
    stopped = report["files"][0]
    assert stopped["error"] is None and stopped["transferred"] > 0, "the worker's own result, not a kill's"
    assert not durable.temp_path(final).exists(), "a worker that stops by itself removes its temp file"
    result = run_cli("run", manifest, cwd=tmp_path)
    assert result.code == 0 and final.read_bytes() == data


def test_changed_remote_file_restarts_instead_of_mixing(server: Server, tmp_path: Path, background: Any) -> None:
    manifest, _ = _big_manifest(server, tmp_path)
    manifest.write_text(manifest.read_text().replace(f"size: {BIG}", "segments: 8"))  # the size will change
    final = tmp_path / "mirror/big.bin"
    first = background(manifest, tmp_path, final, BIG)
    first.wait_until(lambda: first.parts() > BIG * 0.2)
    first.signal_group(signal.SIGKILL)
    first.wait()
    new = content("big-v2", 50 * MiB)
    server.update("big.bin", new)
    mark = watermark(server)
    result = run_cli("run", manifest, cwd=tmp_path)
    assert result.code == 0, result.stdout
    assert final.read_bytes() == new
    assert "started over" in result.stdout
    requests = [r for r in server.requests("big.bin") if r.conn > mark]
    assert any(r.if_range is not None and r.status == 200 for r in requests), (
        "If-Range answered with the whole new file"
    )


def test_second_interrupt_exits_at_once_without_corrupting(
    builtin: FaultServer, tmp_path: Path, background: Any
) -> None:
    data = content("stall", 40 * MiB)
    url = builtin.add("stall.bin", data, stall_after=3 * MiB)
    manifest = write_manifest(tmp_path, [url], defaults={"segments": 4, "min_segment_size": "4MiB", "timeout": 60})
    final = tmp_path / "mirror/stall.bin"
    run = background(manifest, tmp_path, final, len(data))
    run.wait_until(lambda: run.parts() >= 4 * 3 * MiB)  # every segment stalled: reads now block
    started = time.monotonic()
    run.signal_group(signal.SIGINT)
    time.sleep(0.2)
    run.signal_group(signal.SIGINT)
    assert run.wait(timeout=10) == 130, run.output()
    assert time.monotonic() - started < 10, "stopped although every read was blocked for 60 s"
    assert "interrupted" in run.output()
    builtin.change("stall.bin", stall_after=None)
    result = run_cli("run", manifest, cwd=tmp_path)
    assert result.code == 0 and final.read_bytes() == data


def test_stop_does_not_wait_for_a_stalled_server(builtin: FaultServer, tmp_path: Path, background: Any) -> None:
    url = builtin.add("hang.bin", content("hang", 8 * MiB), stall_after=1 * MiB)
    manifest = write_manifest(tmp_path, [url], defaults={"segments": 1, "timeout": 60})
    run = background(manifest, tmp_path, tmp_path / "mirror/hang.bin", 8 * MiB)
    run.wait_until(lambda: run.parts() >= MiB)
    started = time.monotonic()
    run.signal_group(signal.SIGINT)
    assert run.wait(timeout=15) == 130
    assert time.monotonic() - started < 8, "one Ctrl-C must not wait for the 60 s read timeout"
    assert json.loads((tmp_path / "report.json").read_text())["files"][0]["outcome"] == "interrupted"


@pytest.mark.parametrize(
    ("damage", "note"),
    [
        (lambda final: parts.sidecar_path(final).write_text("{not json"), "its sidecar could not be read"),
        (lambda final: parts.part_path(final, 0).write_bytes(b"x" * (3 * MiB)), "part 0 is longer than its segment"),
    ],
    ids=["corrupt-sidecar", "part-too-long"],
)
def test_untrustworthy_leftovers_start_over(builtin: FaultServer, tmp_path: Path, damage: Any, note: str) -> None:
    data = content("left", 4 * MiB)
    url = builtin.add("left.bin", data)
    manifest = write_manifest(tmp_path, [url], defaults={"segments": 2, "min_segment_size": "1MiB"})
    final = tmp_path / "mirror/left.bin"
    final.parent.mkdir()
    halves = plan.split(len(data), 2, MiB)
    save(final, plan.Plan(url, url, len(data), '"old"', None, True, halves))
    parts.part_path(final, 1).write_bytes(b"y" * 1000)
    damage(final)
    result = run_cli("run", manifest, cwd=tmp_path)
    assert result.code == 0, result.stdout
    assert final.read_bytes() == data
    assert note in result.file("left.bin")["notes"][0]


def test_a_small_file_keeps_no_sidecar_and_never_continues_a_stray_part(
    builtin: FaultServer, tmp_path: Path, background: Any
) -> None:
    """A file within one minimal segment is fetched again, not resumed: a part left of it is not trusted."""
    data = content("small", 3 * MiB)
    url = builtin.add("small.bin", data, rate=MiB)
    manifest = write_manifest(tmp_path, [url])  # min_segment_size defaults to 4 MiB
    final = tmp_path / "mirror/small.bin"
    run = background(manifest, tmp_path, final, len(data))
    run.wait_until(lambda: run.parts() > 0)
    assert not parts.sidecar_path(final).exists()
    run.signal_group(signal.SIGKILL)
    run.wait()
    parts.part_path(final, 0).write_bytes(b"stale" * 1000)  # what it holds can no longer be vouched for
    builtin.change("small.bin", rate=None)
    result = run_cli("run", manifest, cwd=tmp_path)
    assert result.code == 0, result.stdout
    assert final.read_bytes() == data
    assert not parts.part_path(final, 0).exists()


def test_a_kill_after_a_steal_resumes_the_split_table(builtin: FaultServer, tmp_path: Path, background: Any) -> None:
    data = content("split", 16 * MiB)
    url = builtin.add("split.bin", data, slow_at=4 * MiB, slow_rate=256 * 1024)
    manifest = write_manifest(tmp_path, [url], defaults={"segments": 4, "min_segment_size": "1MiB"})
    final = tmp_path / "mirror/split.bin"
    run = background(manifest, tmp_path, final, len(data))
    run.wait_until(lambda: len((saved(final) or plan.Plan("", "", 0, None, None, True, ())).segments) > 4)
    run.signal_group(signal.SIGKILL)
    run.wait()
    table = saved(final)
    assert table is not None and [s.index for s in table.segments] != sorted(s.index for s in table.segments)
    builtin.change("split.bin", slow_at=None)
    result = run_cli("run", manifest, cwd=tmp_path)
    assert result.code == 0, result.stdout
    assert final.read_bytes() == data
    assert result.file("split.bin")["transferred"] < len(data)


def test_resume_after_url_change_starts_over(builtin: FaultServer, tmp_path: Path) -> None:
    data = content("moved", 2 * MiB)
    url = builtin.add("moved.bin", data)
    final = tmp_path / "mirror/moved.bin"
    final.parent.mkdir()
    save(
        final,
        plan.Plan("http://127.0.0.1:9/elsewhere.bin", url, len(data), '"e"', None, True, plan.split(len(data), 1, MiB)),
    )
    parts.part_path(final, 0).write_bytes(b"z" * 100)
    result = run_cli("run", write_manifest(tmp_path, [{"url": url, "path": "moved.bin"}]), cwd=tmp_path)
    assert result.code == 0 and final.read_bytes() == data
    assert "the URL in the manifest changed" in result.file("moved.bin")["notes"][0]


def test_files_finished_before_a_kill_are_remembered(builtin: FaultServer, tmp_path: Path, background: Any) -> None:
    small = {f"s{i}.bin": content(f"small{i}", 1000 + i) for i in range(5)}
    entries = [builtin.add(name, data) for name, data in small.items()]
    entries.append(builtin.add("slow.bin", content("slow", 8 * MiB), stall_after=MiB))
    manifest = write_manifest(tmp_path, entries, workers=2, defaults={"timeout": 60})
    run = background(manifest, tmp_path, tmp_path / "mirror/slow.bin", 8 * MiB)
    db = tmp_path / "mirror/.bulkdl/state.db"

    def committed() -> int:
        if not db.exists():
            return 0
        with contextlib.closing(sqlite3.connect(db)) as connection:
            try:
                return int(connection.execute("SELECT count(*) FROM files").fetchone()[0])
            except sqlite3.OperationalError:  # created, schema not yet written
                return 0

    run.wait_until(lambda: committed() == len(small), timeout=20)  # while slow.bin still hangs
    run.signal_group(signal.SIGKILL)
    run.wait()
    builtin.change("slow.bin", stall_after=None)
    mark = watermark(builtin)
    result = run_cli("run", manifest, cwd=tmp_path)
    assert result.code == 0
    assert [result.file(name)["outcome"] for name in small] == ["skipped"] * len(small)
    rechecked = [r for r in builtin.requests() if r.conn > mark and r.path[1:] in small]
    assert len(rechecked) == len(small) and {r.status for r in rechecked} == {304}


def test_kill_9_at_any_moment_leaves_the_old_file_or_the_new_never_a_mix(
    server: Server, tmp_path: Path, background: Any
) -> None:
    # An installed v1, v2 upstream; the run is killed early, midway, and once every byte has arrived (the
    # assembly's tail, its fsync, the rename). After each kill the final path holds all of v1 or all of v2.
    size = 64 * MiB
    old, new = content("generation-1", size), content("generation-2", size)
    url = server.add("gen.bin", old)
    manifest = write_manifest(tmp_path, [url], defaults={"segments": 8, "min_segment_size": "4MiB"})
    final = tmp_path / "mirror/gen.bin"
    assert run_cli("run", manifest, cwd=tmp_path).code == 0 and final.read_bytes() == old
    server.update("gen.bin", new)
    server.add("gen.bin", new, slow=True)  # the same URL, now served at 16 MiB/s per connection
    for share in (0.2, 0.6, 1.0):
        run = background(manifest, tmp_path, final, size)
        run.wait_until(lambda run=run, share=share: run.parts() >= size * share or _starts_with(final, new[:16]))
        run.signal_group(signal.SIGKILL)
        run.wait()
        assert run.bad_samples == [], "the final path was never a partial file"
        assert final.read_bytes() in (old, new), f"killed at {share:.0%}: a mix"
    result = run_cli("run", manifest, cwd=tmp_path)
    assert result.code == 0, result.stdout
    assert final.read_bytes() == new
    assert sorted(p.name for p in final.parent.iterdir()) == [".bulkdl", "gen.bin"], "nothing left beside it"


def _starts_with(path: Path, prefix: bytes) -> bool:
    with open(path, "rb") as f:
        return f.read(len(prefix)) == prefix


def _complete_parts(final: Path, url: str, data: bytes, mirrors: tuple[str, ...] = (), upto: int | None = None) -> None:
    """What a run killed between a file's last byte and its install leaves: a sidecar, and parts holding
    every byte of ``data``, as the server sent them with ``data``'s ETag (only the parts before ``upto``)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    halves = plan.split(len(data), 2, MiB)
    save(final, plan.Plan(url, url, len(data), etag_of(data), None, True, halves, mirrors))
    for segment in halves:
        assert segment.end is not None
        kept = upto is None or segment.index < upto
        parts.part_path(final, segment.index).write_bytes(data[segment.start : segment.end] if kept else b"")


_HALVES = {"segments": 2, "min_segment_size": "1MiB"}


def _run_over_parts(tmp_path: Path, url: str, kept: bytes, name: str) -> tuple[Any, Path]:
    """A run of the one-file manifest of ``url`` over complete parts of ``kept``: its result, and the file."""
    manifest = write_manifest(tmp_path, [url], defaults=_HALVES)
    final = tmp_path / "mirror" / name
    _complete_parts(final, url, kept)
    return run_cli("run", manifest, cwd=tmp_path), final


def test_complete_parts_of_a_file_changed_since_are_not_installed(builtin: FaultServer, tmp_path: Path) -> None:
    """Found by a new user's trial: the next run installed the old parts without a request, reported the
    file downloaded, exit 0, and sha256sum against the server failed."""
    old, new = content("old", 4 * MiB), content("new", 4 * MiB)
    result, final = _run_over_parts(tmp_path, builtin.add("c.bin", new), old, "c.bin")
    assert result.code == 0, result.stdout
    assert final.read_bytes() == new
    notes = result.file("c.bin")["notes"]
    assert "started over" in " ".join(notes) and not any("resumed with" in note for note in notes), notes
    # The first request asked, not the first logged: the server logs an answer once written, and the 200 that
    # If-Range brings (the whole new file) ends after the next request's answer has.
    first = min(builtin.requests("/c.bin"), key=lambda r: r.began)
    assert first.if_range == etag_of(old) and first.range == f"bytes={len(old) - 1}-{len(old) - 1}"


def test_complete_parts_of_an_unchanged_file_cost_one_byte(builtin: FaultServer, tmp_path: Path) -> None:
    data = content("same", 4 * MiB)
    result, final = _run_over_parts(tmp_path, builtin.add("s.bin", data), data, "s.bin")
    assert result.code == 0, result.stdout
    assert final.read_bytes() == data
    asked = builtin.requests("/s.bin")
    assert len(asked) == 1 and asked[0].status == 206 and asked[0].sent <= 1, asked


def test_resumed_parts_that_fail_the_digest_are_fetched_again_in_the_same_run(
    builtin: FaultServer, tmp_path: Path
) -> None:
    """Parts that hold every byte, damaged on disk, under the server's own ETag: the digest the manifest
    gives catches them, and the file is fetched again tonight instead of failing until tomorrow."""
    data = content("digest", 4 * MiB)
    url = builtin.add("d.bin", data)
    entry = {"url": url, "sha256": hashlib.sha256(data).hexdigest()}
    manifest = write_manifest(tmp_path, [entry], defaults={"segments": 2, "min_segment_size": "1MiB"})
    final = tmp_path / "mirror/d.bin"
    _complete_parts(final, url, data)
    damaged = bytearray(parts.part_path(final, 1).read_bytes())
    damaged[100] ^= 0xFF
    parts.part_path(final, 1).write_bytes(bytes(damaged))
    result = run_cli("run", manifest, cwd=tmp_path)
    assert result.code == 0, result.stdout
    assert final.read_bytes() == data
    assert result.file("d.bin")["notes"] == ["the resumed parts gave a wrong sha256; started over"]


def test_a_resume_a_mirror_would_finish_is_checked_with_the_primary_first(builtin: FaultServer, tmp_path: Path) -> None:
    """The old version's first half on disk; primary and mirror now both serve a new version of the same
    size. A mirror's first request carries no validator of the primary's: the rest came from it, and the
    file installed was half old, half new, with exit 0 (a review)."""
    old, new = content("mold", 4 * MiB), content("mnew", 4 * MiB)
    url, mirror = builtin.add("mx.bin", new), builtin.add("m/mx.bin", new)
    manifest = write_manifest(tmp_path, [{"url": url, "path": "mx.bin", "mirrors": [mirror]}], defaults=_HALVES)
    final = tmp_path / "mirror/mx.bin"
    _complete_parts(final, url, old, mirrors=(mirror,), upto=1)
    result = run_cli("run", manifest, cwd=tmp_path)
    assert result.code == 0, result.stdout
    assert final.read_bytes() == new


def test_complete_parts_with_a_mirror_and_the_primary_down_start_over_from_the_mirror(
    builtin: FaultServer, tmp_path: Path
) -> None:
    """The check of complete parts asks the primary; down, it failed the file every night until it came back."""
    data = content("pd", 4 * MiB)
    url, mirror = builtin.add("pd.bin", data, status=503), builtin.add("m/pd.bin", data)
    entry = {"url": url, "path": "pd.bin", "mirrors": [mirror]}
    manifest = write_manifest(tmp_path, [entry], defaults={**_HALVES, "retries": 1})
    final = tmp_path / "mirror/pd.bin"
    _complete_parts(final, url, data, mirrors=(mirror,))
    result = run_cli("run", manifest, cwd=tmp_path)
    assert result.code == 0, result.stdout
    assert final.read_bytes() == data
    assert any(n.startswith("the partial download could not be checked") for n in result.file("pd.bin")["notes"])


def test_complete_parts_on_a_server_that_ignores_range_start_over_and_say_why(
    builtin: FaultServer, tmp_path: Path
) -> None:
    data = content("ir", 4 * MiB)
    result, final = _run_over_parts(tmp_path, builtin.add("ir.bin", data, ranges=False), data, "ir.bin")
    assert result.code == 0, result.stdout
    assert final.read_bytes() == data
    notes = result.file("ir.bin")["notes"]
    assert any(
        n.startswith("the partial download could not be checked with the server (server ignored Range)") for n in notes
    ), notes
    assert not any("remote file changed" in n for n in notes), notes


def test_a_sidecar_that_lists_no_byte_is_not_resumed(builtin: FaultServer, tmp_path: Path) -> None:
    url = builtin.add("z.bin", b"now has bytes")
    manifest = write_manifest(tmp_path, [url], defaults=_HALVES)
    final = tmp_path / "mirror/z.bin"
    final.parent.mkdir(parents=True)
    save(final, plan.Plan(url, url, 0, '"x"', None, True, ()))
    result = run_cli("run", manifest, cwd=tmp_path)
    assert result.code == 0, result.stdout
    assert final.read_bytes() == b"now has bytes"
