"""The Dask backend (--scheduler) on a real LocalCluster of 2 worker processes on 127.0.0.1, dashboards off.

One cluster serves the module (starting one costs seconds). Its scheduler lets a task fail once (a killed
worker reschedules it) and marks it KilledWorker at the second death; each worker runs one task at a time, so
that a worker killed on purpose had exactly one task.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dask
import pytest
from distributed import Client, LocalCluster

from bulkdl.cluster.claim import claimed
from bulkdl.cluster.done import Done
from bulkdl.values import FileResult, Status

from . import httpserver
from .conftest import REPO, cli_env, run_cli, write_manifest
from .httpserver import FaultServer, content
from .test_terminal import _STYLE, _run_in_pty

pytestmark = pytest.mark.timeout(180)

_CONFIG = {
    "distributed.scheduler.allowed-failures": 1,
    "distributed.scheduler.worker-saturation": 1.0,
}


def _local_cluster(workers: int, threads: int) -> LocalCluster:
    """Dashboards off; the scheduler's HTTP routes (it always serves /health) on a port of their own, not
    8787: another cluster (of this module, of another xdist worker's) may have that one."""
    with dask.config.set(_CONFIG):
        return LocalCluster(
            n_workers=workers,
            threads_per_worker=threads,
            dashboard_address=None,
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
            host="127.0.0.1",
        )


@pytest.fixture(scope="module")
def clusters() -> Iterator[list[LocalCluster]]:
    """The module's cluster, in a list so that a test's client can replace one left short of a worker."""
    made = [_local_cluster(2, 1)]
    try:
        yield made
    finally:
        made[0].close()


@pytest.fixture
def client(clusters: list[LocalCluster]) -> Iterator[Client]:
    """A client of the test's own, with both workers up. A test may have killed one: its nanny restarts it.
    Once in CI (2 cores, three xdist workers) a restarted worker never registered, and every later test of
    that xdist worker waited 60 s for it and errored: a cluster still short after 30 s is made anew."""
    with Client(clusters[0].scheduler_address, set_as_default=False) as made:
        try:
            made.wait_for_workers(2, timeout=30)
        except TimeoutError:
            pass
        else:
            yield made
            return
    clusters[0].close()
    clusters[0] = _local_cluster(2, 1)
    with Client(clusters[0].scheduler_address, set_as_default=False) as made:
        made.wait_for_workers(2, timeout=60)
        yield made


def _until(condition: Callable[[], Any], what: str, seconds: float = 60) -> Any:
    deadline = time.monotonic() + seconds
    while not (found := condition()):
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.02)
    return found


def _files(report: dict[str, Any]) -> list[tuple[Any, ...]]:
    """What must match between runs: each file's path, status, size, digest and code, not its timings."""
    keys = ("path", "status", "outcome", "bytes", "transferred", "sha256", "error", "code")
    return sorted(tuple(f[k] for k in keys) for f in report["files"])


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_local_run_imports_nothing_of_dask(builtin: FaultServer, tmp_path: Path) -> None:
    url = builtin.add("one", b"x" * 1000)
    manifest = write_manifest(tmp_path, [url])
    check = (
        "import sys; from bulkdl import cli; code = cli.main(['run', sys.argv[1]]); "
        "print('loaded:', sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed'))); "
        "sys.exit(code)"
    )
    done = subprocess.run(
        [sys.executable, "-c", check, str(manifest)], cwd=tmp_path, capture_output=True, text=True, env=cli_env()
    )
    assert done.returncode == 0, done.stderr
    assert "loaded: []" in done.stdout
    assert (tmp_path / "mirror" / "one").read_bytes() == b"x" * 1000


def test_a_hundred_files_report_as_a_local_run_does(builtin: FaultServer, client: Client, tmp_path: Path) -> None:
    urls = [builtin.add(f"d/{i}", content(f"d/{i}", 1000 + 37 * i)) for i in range(98)]
    urls.append(builtin.add_error("missing", 404))
    urls.append(builtin.add("bad", b"not what the digest says"))
    entries: list[Any] = [*urls[:-1], {"url": urls[-1], "sha256": "0" * 64}]
    runs = {}
    for where, extra in (("local", []), ("dask", ["--scheduler", client.scheduler.address])):
        directory = tmp_path / where
        directory.mkdir()
        manifest = write_manifest(directory, entries)
        runs[where] = run_cli("run", manifest, *extra, cwd=directory)
    local, dask_run = runs["local"], runs["dask"]
    assert local.report is not None and dask_run.report is not None
    assert (dask_run.code, local.code) == (1, 1), dask_run.stderr
    assert _files(dask_run.report) == _files(local.report)
    untimed = {"elapsed_s": 0}
    assert dask_run.report["totals"] | untimed == local.report["totals"] | untimed
    assert dask_run.report["summary"] | untimed == local.report["summary"] | untimed
    assert dask_run.file("7")["status"] == "new" and dask_run.file("missing")["code"] == "http_4xx"
    # The second run over the cluster asks about every file with the validators the client alone recorded.
    again = run_cli("run", tmp_path / "dask" / "manifest.yaml", "--scheduler", client.scheduler.address, cwd=tmp_path)
    assert again.report is not None
    assert {f["status"] for f in again.report["files"] if f["path"] not in ("missing", "bad")} == {"not modified"}


_started: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def _no_process_left() -> Iterator[None]:
    """A test that fails half-way leaves no bulkdl running on into the next one."""
    yield
    while _started:
        process = _started.pop()
        if process.poll() is None:
            process.kill()
        process.communicate()


def _start(manifest: Path, scheduler: str, cwd: Path, **env: str) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "bulkdl", "run", str(manifest), "--scheduler", scheduler]
    process = subprocess.Popen(
        [*argv, "--report", str(cwd / "report.json")],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(**env),
        stdin=subprocess.DEVNULL,
    )
    _started.append(process)
    return process


def _finish(process: subprocess.Popen[str], cwd: Path) -> tuple[int, str, dict[str, Any]]:
    _, stderr = process.communicate(timeout=120)
    return process.returncode, stderr, json.loads((cwd / "report.json").read_text())


def _kill_the_worker_running(client: Client, first: int, alone: bool = False) -> None:
    """SIGKILL the worker process running the batch that starts with the file ``first`` (``alone``: and no
    other task, which would die with it too)."""
    key = re.compile(rf"bulkdl-[0-9a-f]+-{first}")

    def running() -> str | None:
        for address, keys in client.processing().items():
            mine = [k for k in keys if key.fullmatch(str(k))]
            if mine and (not alone or len(mine) == len(keys)):
                return str(address)
        return None

    address = _until(running, f"a worker running the task of file {first}")
    pid = client.run(os.getpid, workers=[address])[address]
    os.kill(pid, signal.SIGKILL)
    _until(lambda: address not in client.scheduler_info()["workers"], "the scheduler to notice the death")


def test_a_worker_killed_mid_run_leaves_every_file_correct(
    builtin: FaultServer, client: Client, tmp_path: Path
) -> None:
    size = 2 * 1024 * 1024
    data = {f"s{i}": content(f"s{i}", size) for i in range(4)}
    urls = [builtin.add(name, blob, rate=512 * 1024) for name, blob in data.items()]  # 4 s a file
    # Above one minimal segment, a file has a sidecar and is resumed rather than fetched again (fetch.py).
    manifest = write_manifest(tmp_path, urls, defaults={"segments": 1, "min_segment_size": "256KiB"})
    process = _start(manifest, client.scheduler.address, tmp_path)
    part = tmp_path / "mirror" / "s0.part0"
    _until(lambda: part.exists() and part.stat().st_size > 64 * 1024, "s0 to have part of its bytes")
    _kill_the_worker_running(client, 0)  # each file is a task of its own: 4 files, 2 slots
    code, stderr, report = _finish(process, tmp_path)
    assert code == 0, stderr
    assert {f["path"]: f["status"] for f in report["files"]} == dict.fromkeys(data, "new")
    for name, blob in data.items():
        assert _sha256(tmp_path / "mirror" / name) == hashlib.sha256(blob).hexdigest()
    # The rescheduled task resumed s0 from its part: it received less than the whole file.
    s0 = next(f for f in report["files"] if f["path"] == "s0")
    assert 0 < s0["transferred"] < size, s0


def test_a_rerun_task_does_not_fetch_again_what_its_dead_attempt_finished(
    builtin: FaultServer, client: Client, tmp_path: Path
) -> None:
    size = 2 * 1024 * 1024
    slow = content("slow", size)
    # Six files of one host on 2 slots: tasks of 2 files, the first one [first, slow.bin], both at once.
    urls = [builtin.add("first", content("first", 5000)), builtin.add("slow.bin", slow, rate=256 * 1024)]
    urls += [builtin.add(f"other{i}", content(f"other{i}", 5000)) for i in range(4)]
    manifest = write_manifest(tmp_path, urls, defaults={"segments": 1, "min_segment_size": "256KiB"})
    process = _start(manifest, client.scheduler.address, tmp_path)
    mirror = tmp_path / "mirror"
    _until(lambda: (mirror / "first").exists(), "the task's first file in place")
    part = mirror / "slow.bin.part0"
    _until(lambda: part.exists() and part.stat().st_size > 64 * 1024, "slow.bin to have bytes")
    _kill_the_worker_running(client, 0, alone=True)
    code, stderr, report = _finish(process, tmp_path)
    assert code == 0, stderr
    assert _sha256(mirror / "slow.bin") == hashlib.sha256(slow).hexdigest()
    assert _sha256(mirror / "first") == hashlib.sha256(content("first", 5000)).hexdigest()
    gets = [r for r in builtin.requests("first") if r.method == "GET"]
    assert len(gets) == 1, "the rerun took the first attempt's result for it instead of fetching it again"
    assert {f["path"]: f["status"] for f in report["files"]}["first"] == "new"
    assert not (mirror / ".bulkdl" / "cluster").exists() or not any((mirror / ".bulkdl" / "cluster").iterdir())


def test_a_file_another_process_writes_is_left_to_it(builtin: FaultServer, client: Client, tmp_path: Path) -> None:
    """A worker the scheduler took for dead may live on, writing a file whose task now runs elsewhere: the
    second writer finds the file claimed (cluster/claim.py) and leaves it, rather than write its parts too."""
    urls = [builtin.add("held", content("held", 5000)), builtin.add("free", content("free", 5000))]
    manifest = write_manifest(tmp_path, urls)
    locks = tmp_path / "mirror" / ".bulkdl" / "file-locks"
    locks.mkdir(parents=True)
    with claimed(locks, "held") as mine:  # as the zombie worker would
        assert mine
        done = run_cli("run", manifest, "--scheduler", client.scheduler.address, cwd=tmp_path)
    assert done.code == 1, done.stderr
    held = done.file("held")
    assert (held["status"], held["code"]) == ("failed", "worker_busy") and "another process" in held["error"]
    assert not builtin.requests("held") and done.file("free")["status"] == "new"
    again = run_cli("run", manifest, "--scheduler", client.scheduler.address, cwd=tmp_path)
    assert again.code == 0 and again.file("held")["status"] == "new", again.stderr
    assert not list(locks.iterdir()), "each claim is removed by its holder"


def test_a_claim_is_one_holder_s_and_gone_with_it(tmp_path: Path) -> None:
    with (
        claimed(tmp_path, "a/b.iso") as first,
        claimed(tmp_path, "a/b.iso") as second,
        claimed(tmp_path, "c.iso") as other,
    ):
        assert (first, second, other) == (True, False, True)
    assert not list(tmp_path.iterdir())
    with claimed(tmp_path, "a/b.iso") as again:
        assert again


def test_killed_worker_fails_only_the_files_of_its_task(builtin: FaultServer, client: Client, tmp_path: Path) -> None:
    urls = [builtin.add("doomed", content("doomed", 4 * 1024 * 1024), rate=256 * 1024)]
    urls += [builtin.add(f"fine{i}", content(f"fine{i}", 2000)) for i in range(3)]
    # Resumable (above one minimal segment), so each attempt goes on from the part the last one left rather
    # than starting it anew; each is killed only once it has written bytes of its own, never between its start
    # and its first write (the test was red 1 run in ~10 when a kill came before any part existed).
    manifest = write_manifest(tmp_path, urls, defaults={"segments": 1, "min_segment_size": "256KiB"})
    process = _start(manifest, client.scheduler.address, tmp_path)
    part = tmp_path / "mirror" / "doomed.part0"
    written = 0
    for _ in range(2):  # allowed-failures is 1: the second death is KilledWorker
        _until(lambda before=written: part.exists() and part.stat().st_size > before, "doomed to write more")
        written = part.stat().st_size
        _kill_the_worker_running(client, 0, alone=True)
    code, stderr, report = _finish(process, tmp_path)
    statuses = {f["path"]: (f["outcome"], f["code"]) for f in report["files"]}
    expected = {"doomed": ("failed", "worker_died"), **{f"fine{i}": ("downloaded", None) for i in range(3)}}
    assert statuses == expected, (report["error"], stderr)
    assert code == 1 and "Traceback" not in stderr
    assert "died" in next(f["error"] for f in report["files"] if f["path"] == "doomed")
    assert part.stat().st_size >= written, "the parts of a failed file are kept for the next run"


def test_the_workers_events_reach_the_log_as_in_a_local_run(
    builtin: FaultServer, client: Client, tmp_path: Path
) -> None:
    urls = [
        builtin.add("retry.bin", content("retry", 5000), fail_first=1, retry_after="0"),  # a 503 first
        builtin.add("resume.bin", content("resume", 200_000), drop_after=100_000, drops=1),  # broken mid-body
        builtin.add("plain.bin", content("plain", 1000)),
    ]
    manifest = write_manifest(tmp_path, urls, defaults={"segments": 1, "min_segment_size": "256KiB"})
    written = tmp_path / "run.log"
    done = run_cli("run", manifest, "--scheduler", client.scheduler.address, "--log-file", written, cwd=tmp_path)
    assert done.code == 0, done.stderr
    events = [json.loads(line) for line in written.read_text().splitlines()]
    kinds = {name: [e["event"] for e in events if e.get("path") == name] for name in ("retry.bin", "resume.bin")}
    assert kinds == {
        "retry.bin": ["file_start", "retry", "file_end"],
        "resume.bin": ["file_start", "retry", "resume", "file_end"],
    }, events
    assert next(e for e in events if e["event"] == "resume")["offset"] == 100_000
    assert [e["event"] for e in events if e.get("path") == "plain.bin"] == ["file_start", "file_end"]


def test_max_duration_stops_the_cluster_run_and_the_next_run_resumes(
    builtin: FaultServer, client: Client, tmp_path: Path
) -> None:
    size = 4 * 1024 * 1024
    urls = [builtin.add("slow.bin", content("slow", size), rate=256 * 1024)]  # 16 s
    urls += [builtin.add(f"quick{i}.bin", content(f"quick{i}", 1000)) for i in range(3)]
    manifest = write_manifest(tmp_path, urls, defaults={"segments": 1, "min_segment_size": "256KiB"})
    scheduler = client.scheduler.address
    # The budget leaves the quick files time for a worker that a test before restarted to import bulkdl.
    first = run_cli("run", manifest, "--scheduler", scheduler, "--max-duration", "6s", cwd=tmp_path)
    assert first.code == 5, first.stdout + first.stderr
    slow = first.file("slow.bin")
    assert (slow["outcome"], slow["code"]) == ("interrupted", "out_of_time"), slow
    assert 0 < slow["transferred"] < size, "stopped while it ran, not before or after"
    assert {first.file(f"quick{i}.bin")["status"] for i in range(3)} == {"new"}
    assert first.stdout.splitlines()[-1].startswith("FAILED: out of time, 1 of 4 files left for the next run")
    builtin.change("slow.bin", rate=None)
    second = run_cli("run", manifest, "--scheduler", scheduler, cwd=tmp_path)
    assert second.code == 0, second.stderr
    assert _sha256(tmp_path / "mirror" / "slow.bin") == hashlib.sha256(content("slow", size)).hexdigest()
    assert second.file("slow.bin")["transferred"] <= size - slow["transferred"], "resumed from its part"


def test_the_progress_display_moves_with_the_bytes_the_workers_receive(
    builtin: FaultServer, client: Client, tmp_path: Path
) -> None:
    size = 2 * 1024 * 1024
    url = builtin.add("slow.bin", content("slow", size), rate=256 * 1024)  # 8 s
    manifest = write_manifest(tmp_path, [{"url": url, "size": size}], defaults={"segments": 1})
    part_of_it = re.compile(r"(?<![\d.])(?!2\.00 MiB)[1-9][\d.]* (KiB|MiB)/2\.00 MiB")
    code, output = _run_in_pty(
        ["run", str(manifest), "--scheduler", client.scheduler.address],
        tmp_path,
        interrupt_when=lambda shown: part_of_it.search(_STYLE.sub("", shown)) is not None,
    )
    assert code == 130, f"to be interrupted once the screen showed part of the file, before its end: {output}"


def _stops_growing(path: Path, seconds: float) -> int:
    """The size ``path`` settles at: the same over a whole second, within ``seconds``."""
    deadline = time.monotonic() + seconds
    size = path.stat().st_size
    while True:
        time.sleep(1.0)
        now = path.stat().st_size
        if now == size:
            return size
        assert time.monotonic() < deadline, f"{path.name} still grows ({now} bytes)"
        size = now


def test_a_client_killed_mid_run_stops_its_files_on_the_workers(
    builtin: FaultServer, client: Client, tmp_path: Path
) -> None:
    """SIGKILL of bulkdl while the scheduler stays up: Dask lets the task run on, but the destination's lock
    went with the client, so the workers stop writing into dest (heartbeat, task.py) and install nothing."""
    size = 8 * 1024 * 1024
    url = builtin.add("orphan", content("orphan", size), rate=256 * 1024)  # 32 s
    manifest = write_manifest(tmp_path, [url], defaults={"segments": 1, "min_segment_size": "256KiB"})
    process = _start(manifest, client.scheduler.address, tmp_path, DASK_BULKDL__CLIENT_LOST_AFTER="2s")
    part = tmp_path / "mirror" / "orphan.part0"
    _until(lambda: part.exists() and part.stat().st_size > 64 * 1024, "orphan to have part of its bytes")
    process.kill()
    process.communicate()
    kept = _stops_growing(part, seconds=15)
    assert kept < size and not (tmp_path / "mirror" / "orphan").exists()
    # The worker is free again for the next run, which resumes the part the orphaned task left.
    again = run_cli("run", manifest, "--scheduler", client.scheduler.address, cwd=tmp_path)
    assert again.code == 0, again.stderr
    assert _sha256(tmp_path / "mirror" / "orphan") == hashlib.sha256(content("orphan", size)).hexdigest()
    assert again.file("orphan")["transferred"] <= size - kept


def test_the_workers_hold_the_writers_lock_while_they_write_into_dest(
    builtin: FaultServer, client: Client, tmp_path: Path
) -> None:
    """What a later run waits for (parent/lock.py) is held by each worker process writing into dest, and only
    while it may: a killed client's task holds it until it stops."""
    url = builtin.add("slow.bin", content("slow", 2 * 1024 * 1024), rate=512 * 1024)  # 4 s
    manifest = write_manifest(tmp_path, [url], defaults={"segments": 1, "min_segment_size": "256KiB"})
    process = _start(manifest, client.scheduler.address, tmp_path, DASK_BULKDL__CLIENT_LOST_AFTER="3s")
    part = tmp_path / "mirror" / "slow.bin.part0"
    _until(lambda: part.exists() and part.stat().st_size > 64 * 1024, "slow.bin to have part of its bytes")
    writers = os.open(tmp_path / "mirror" / ".bulkdl" / "writers", os.O_RDWR)
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(writers, fcntl.LOCK_EX | fcntl.LOCK_NB)
        process.kill()
        process.communicate()
        with pytest.raises(BlockingIOError):  # the orphaned task writes on, for now
            fcntl.flock(writers, fcntl.LOCK_EX | fcntl.LOCK_NB)
        _until(lambda: _can_lock(writers), "the orphaned task to stop and let go", seconds=20)
    finally:
        os.close(writers)
    assert not (tmp_path / "mirror" / "slow.bin").exists()


def _can_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    fcntl.flock(fd, fcntl.LOCK_UN)
    return True


def test_a_task_of_a_killed_bulkdl_that_starts_late_writes_nothing(builtin: FaultServer, tmp_path: Path) -> None:
    """Run A's task waits in a worker process busy with run C; A is killed, and a local run B takes A's dest
    (no writer to wait for: A's task has none yet). When C ends, A's task must not write A's files."""
    with _local_cluster(1, 2) as one:
        first, second = tmp_path / "c", tmp_path / "a"
        for directory in (first, second):
            directory.mkdir()
        busy = builtin.add("c/slow", content("c", 1024 * 1024), rate=256 * 1024)  # 4 s
        running = _start(write_manifest(first, [busy], defaults={"segments": 1}), one.scheduler_address, first)
        _until(lambda: builtin.peak("c/slow"), "run C to start")
        late = _start(
            write_manifest(second, [{"url": builtin.add("a/file", b"A" * 5000), "path": "file"}]),
            one.scheduler_address,
            second,
        )
        _until(lambda: (second / "mirror" / ".bulkdl" / "writers").exists(), "run A to send its task")
        time.sleep(0.5)
        late.kill()
        late.communicate()
        manifest = write_manifest(second, [{"url": builtin.add("b/file", b"B" * 5000), "path": "file"}])
        assert run_cli("run", manifest, cwd=second).code == 0
        assert _finish(running, first)[0] == 0
        time.sleep(1.5)  # A's task, woken by C's end, would have fetched by now
    assert not builtin.requests("a/file"), "the killed run's task fetched after another run took dest"
    assert (second / "mirror" / "file").read_bytes() == b"B" * 5000


def test_a_worker_busy_with_another_run_fails_its_files_after_busy_wait(builtin: FaultServer, tmp_path: Path) -> None:
    """A worker process serves one run at a time; another run's task waits for it, but not for ever."""
    with _local_cluster(1, 2) as one:
        slow = builtin.add("slow", content("slow", 1024 * 1024), rate=128 * 1024)  # 8 s
        first, second = tmp_path / "first", tmp_path / "second"
        for directory in (first, second):
            directory.mkdir()
        running = _start(write_manifest(first, [slow], defaults={"segments": 1}), one.scheduler_address, first)
        _until(lambda: builtin.peak("slow"), "the first run's file to start")
        quick = write_manifest(second, [builtin.add("quick", b"q" * 1000)])
        busy = _start(quick, one.scheduler_address, second, DASK_BULKDL__BUSY_WAIT="1s")
        code, stderr, report = _finish(busy, second)
        assert code == 1, stderr
        (only,) = report["files"]
        assert (only["status"], only["code"]) == ("failed", "worker_busy"), only
        assert "still serving bulkdl run" in only["error"] and "after 1 s" in only["error"]
        assert _finish(running, first)[0] == 0  # the run it waited for is not disturbed


class _Counting(httpserver._Handler):
    """Counts the GETs its server answers at once, over all paths. Each holds a connection of its own, from
    before its request to after its answer, so they are never more than the connections open to the host."""

    def do_GET(self) -> None:
        counts: dict[str, int] = self.server.counts  # type: ignore[attr-defined]
        with self.server.lock:
            counts["now"] += 1
            counts["peak"] = max(counts["peak"], counts["now"])
        try:
            super().do_GET()
        finally:
            with self.server.lock:
                counts["now"] -= 1


@pytest.fixture
def two_hosts() -> Iterator[list[FaultServer]]:
    servers = [FaultServer(), FaultServer()]
    for server in servers:
        server._server.RequestHandlerClass = _Counting
        server._server.counts = {"now": 0, "peak": 0}  # type: ignore[attr-defined]
    yield servers
    for server in servers:
        assert not server.errors
        server.close()


def test_the_per_host_cap_holds_across_the_cluster(
    two_hosts: list[FaultServer], client: Client, tmp_path: Path
) -> None:
    urls = [
        s.add(f"h{k}-{i}", content(f"h{i}", 100_000), rate=500_000) for k, s in enumerate(two_hosts) for i in range(12)
    ]
    manifest = write_manifest(tmp_path, urls, defaults={"segments": 1})
    before = _left_on_scheduler(client)  # a client killed by an earlier test could not clean up
    done = run_cli(
        "run", manifest, "--scheduler", client.scheduler.address, "--max-connections-per-host", "2", cwd=tmp_path
    )
    assert done.code == 0, done.stderr
    peaks = [s._server.counts["peak"] for s in two_hosts]  # type: ignore[attr-defined]
    assert all(1 <= peak <= 2 for peak in peaks), peaks
    left = set(_left_on_scheduler(client)) - set(before)
    assert not left, "a run leaves no semaphore, event or variable on the scheduler"


def _left_on_scheduler(client: Client) -> list[str]:
    def names(dask_scheduler: Any) -> list[str]:
        ext = dask_scheduler.extensions
        held = [*ext["semaphores"].max_leases, *ext["events"]._events, *ext["variables"].variables]
        return sorted(str(name) for name in held if str(name).startswith("bulkdl-"))

    return client.run_on_scheduler(names)  # type: ignore[no-any-return]


def test_a_dest_the_workers_do_not_share_is_refused(builtin: FaultServer, client: Client, tmp_path: Path) -> None:
    """/proc/self/cwd names each process's own working directory: the workers are moved to another one, so
    the same dest path is another directory for them than for bulkdl, as a local disk of another machine is."""
    url = builtin.add("one", b"x" * 1000)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    manifest = write_manifest(tmp_path, [url], dest="/proc/self/cwd/mirror")
    before = client.run(os.getcwd)
    client.run(os.chdir, str(elsewhere))
    try:
        done = run_cli("run", manifest, "--scheduler", client.scheduler.address, cwd=tmp_path)
    finally:
        for address, cwd in before.items():
            client.run(os.chdir, cwd, workers=[address])
    assert done.code == 1
    assert done.report is not None and done.report["error"]["code"] == "dest_not_shared"
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "shared mount" in lines[0] and "does not see the destination" in lines[0], lines
    assert not builtin.requests("one") and not (tmp_path / "mirror" / "one").exists()
    assert not list((tmp_path / "mirror" / ".bulkdl").glob("shared-probe-*")) and not list(elsewhere.rglob("*probe*"))


def test_no_scheduler_and_a_missing_extra_are_one_line_each(
    builtin: FaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = write_manifest(tmp_path, [builtin.add("one", b"x")], scheduler="tcp://127.0.0.1:9")
    # The manifest's scheduler:, where nothing listens; Dask's own setting says how long to try.
    monkeypatch.setenv("DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT", "1s")
    done = run_cli("run", manifest, cwd=tmp_path)
    assert done.code == 1 and done.report is not None
    assert done.report["error"]["code"] == "scheduler_unreachable"
    assert done.stderr.count("\n") == 1 and "dask scheduler" in done.stderr, done.stderr
    # An interpreter without the extra: find_spec finds no distributed there.
    without = (
        "import sys, importlib.util as u; found = u.find_spec; "
        "u.find_spec = lambda name, *a: None if name == 'distributed' else found(name, *a); "
    )
    check = without + "from bulkdl import cli; sys.exit(cli.main(['run', sys.argv[1], '--scheduler', 'tcp://h:1']))"
    done2 = subprocess.run(
        [sys.executable, "-c", check, str(manifest)], cwd=tmp_path, capture_output=True, text=True, env=cli_env()
    )
    assert done2.returncode == 2
    assert done2.stderr.strip() == "bulkdl: --scheduler needs Dask: pip install 'bulkdl[dask]'"


def test_ctrl_c_reports_the_files_not_done_as_interrupted(builtin: FaultServer, client: Client, tmp_path: Path) -> None:
    urls = [builtin.add(f"c{i}", content(f"c{i}", 2 * 1024 * 1024), rate=256 * 1024) for i in range(4)]
    manifest = write_manifest(tmp_path, urls, defaults={"segments": 1})
    process = _start(manifest, client.scheduler.address, tmp_path)
    # Bytes on disk, not the server's first send: under load the interrupt could beat a file's first read,
    # which then had nothing to say (one CI run: c1 "transferred": 0).
    parts = [tmp_path / "mirror" / f"c{i}.part0" for i in range(2)]
    _until(lambda: all(p.exists() and p.stat().st_size > 0 for p in parts), "two files to have bytes")
    process.send_signal(signal.SIGINT)
    code, stderr, report = _finish(process, tmp_path)
    assert code == 130, stderr
    assert {f["outcome"] for f in report["files"]} == {"interrupted"} and len(report["files"]) == 4
    # The running files stopped themselves (the run's Event) and said how far they got, as a local worker does.
    by_path = {f["path"]: f for f in report["files"]}
    assert by_path["c0"]["transferred"] > 0 and by_path["c1"]["transferred"] > 0, report["files"]
    assert "Traceback" not in stderr
    assert _until(lambda: not client.processing() or not any(client.processing().values()), "the tasks to end")


def _scheduler_process(tmp_path: Path) -> tuple[subprocess.Popen[str], str]:
    log = (tmp_path / "scheduler.log").open("w")
    dask_cli = Path(sys.executable).with_name("dask")
    process = subprocess.Popen(
        [str(dask_cli), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard"],
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
    )
    log.close()

    def address() -> str | None:
        for line in (tmp_path / "scheduler.log").read_text().splitlines():
            if "Scheduler at:" in line:
                return line.split("Scheduler at:")[1].strip()
        return None

    return process, _until(address, "the scheduler to listen")


@contextlib.contextmanager
def _own_cluster(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], subprocess.Popen[str], str]]:
    """A scheduler and one worker in processes of their own, for a test to kill, stop or pause."""
    scheduler, address = _scheduler_process(tmp_path)
    worker = subprocess.Popen(
        [str(Path(sys.executable).with_name("dask")), "worker", address, "--nthreads", "1", "--no-dashboard"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
        env=cli_env(),
    )
    try:
        yield scheduler, worker, address
    finally:
        for process in (scheduler, worker):
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGCONT)
                process.kill()
            process.wait()


# What goes wrong with the cluster mid-run, and what the run must say of the file it had not finished.
_MID_RUN = {
    "scheduler killed": ("scheduler_lost", "lost the Dask scheduler"),
    "scheduler hung": ("scheduler_lost", "has not answered for 3 s"),
    "every worker gone": ("no_workers", "has had no worker for 3 s"),
}


@pytest.mark.parametrize("fault", list(_MID_RUN))
def test_a_cluster_lost_mid_run_keeps_what_was_done_and_all_is_resumable(
    builtin: FaultServer, tmp_path: Path, fault: str
) -> None:
    """The run's results so far are recorded and reported (the report, last-run.json and --changes said
    nothing was done while the state held what was); the file not finished fails with the cluster's code."""
    code_of, said = _MID_RUN[fault]
    data = {"quick": b"q" * 1000, "slow": content("slow", 4 * 1024 * 1024)}
    urls = [builtin.add("quick", data["quick"]), builtin.add("slow", data["slow"], rate=256 * 1024)]
    manifest = write_manifest(tmp_path, urls, defaults={"segments": 1, "min_segment_size": "256KiB"})
    with _own_cluster(tmp_path) as (scheduler, worker, address):
        process = _start(manifest, address, tmp_path, DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT="3s")
        part = tmp_path / "mirror" / "slow.part0"
        _until(lambda: part.exists() and part.stat().st_size > 64 * 1024, "slow to have part of its bytes")
        {"scheduler killed": scheduler.kill, "scheduler hung": lambda: scheduler.send_signal(signal.SIGSTOP)}.get(
            fault, worker.kill
        )()
        code, stderr, report = _finish(process, tmp_path)
    assert code == 1 and "Traceback" not in stderr
    assert stderr.count("\n") == 1 and stderr.startswith("bulkdl: ") and said in stderr, stderr
    files = {f["path"]: f for f in report["files"]}
    assert (files["quick"]["status"], files["slow"]["status"], files["slow"]["code"]) == ("new", "failed", code_of)
    assert "its parts are kept" in files["slow"]["error"]
    assert json.loads((tmp_path / "mirror" / ".bulkdl" / "last-run.json").read_text())["files"]["downloaded"] == 1
    builtin.change("slow", rate=None)
    again = run_cli("run", manifest, cwd=tmp_path)  # locally: the part resumes
    assert again.code == 0, again.stderr
    assert again.file("quick")["status"] == "unchanged" or again.file("quick")["transferred"] == 0
    assert again.file("slow")["transferred"] < len(data["slow"])
    assert _sha256(tmp_path / "mirror" / "slow") == hashlib.sha256(data["slow"]).hexdigest()


def test_ctrl_c_ends_a_run_whose_scheduler_hangs(builtin: FaultServer, tmp_path: Path) -> None:
    urls = [builtin.add("slow", content("slow", 4 * 1024 * 1024), rate=256 * 1024)]
    manifest = write_manifest(tmp_path, urls, defaults={"segments": 1, "min_segment_size": "256KiB"})
    with _own_cluster(tmp_path) as (scheduler, _, address):
        process = _start(manifest, address, tmp_path)  # the 30 s connect timeout: Ctrl-C comes first
        part = tmp_path / "mirror" / "slow.part0"
        _until(lambda: part.exists() and part.stat().st_size > 64 * 1024, "slow to have part of its bytes")
        scheduler.send_signal(signal.SIGSTOP)
        time.sleep(0.5)
        asked = time.monotonic()
        process.send_signal(signal.SIGINT)
        code, stderr, report = _finish(process, tmp_path)
        took = time.monotonic() - asked
    assert code == 130, stderr
    assert took < 20, f"Ctrl-C took {took:.1f} s to end the run"  # a bound, not a timing: it never ended
    assert report["files"][0]["status"] == "interrupted"


def test_a_paused_bulkdl_is_told_why_its_files_stopped(builtin: FaultServer, client: Client, tmp_path: Path) -> None:
    """Ctrl-Z (or a laptop's sleep) longer than client-lost-after: the workers stop its files, which is no
    interrupt of the user's: they fail with client_lost, exit 1, and say why."""
    urls = [builtin.add("slow", content("slow", 4 * 1024 * 1024), rate=256 * 1024)]
    manifest = write_manifest(tmp_path, urls, defaults={"segments": 1, "min_segment_size": "256KiB"})
    process = _start(manifest, client.scheduler.address, tmp_path, DASK_BULKDL__CLIENT_LOST_AFTER="2s")
    part = tmp_path / "mirror" / "slow.part0"
    _until(lambda: part.exists() and part.stat().st_size > 64 * 1024, "slow to have part of its bytes")
    process.send_signal(signal.SIGSTOP)
    time.sleep(4)
    process.send_signal(signal.SIGCONT)
    code, stderr, report = _finish(process, tmp_path)
    assert code == 1, stderr
    (slow,) = report["files"]
    assert (slow["status"], slow["code"]) == ("failed", "client_lost"), slow
    assert "had not heard from this bulkdl for 2 s" in slow["error"]


def test_batches_group_files_by_origin_host_and_stay_small() -> None:
    from bulkdl.cluster.client import MAX_BATCH, batches
    from bulkdl.values import Job, Settings

    def job(i: int, url: str) -> Job:
        return Job(i, url, url, (), f"f{i}", (), REPO / f"f{i}", None, (), Settings())

    urls = [f"http://{'a' if i % 3 else 'b'}.example:80{i % 2}/f{i}" for i in range(300)]
    cut = batches([(job(i, u), None) for i, u in enumerate(urls)], slots=1)
    assert all(len({urlsplit(t[0].url).netloc for t in batch}) == 1 for batch in cut)
    assert max(len(batch) for batch in cut) <= MAX_BATCH
    assert sorted(t[0].index for batch in cut for t in batch) == list(range(300))
    assert len(batches([(job(i, "http://a/x"), None) for i in range(8)], slots=4)) == 8  # every slot busy, twice


def test_what_a_dead_attempt_finished_is_read_back_and_a_torn_line_skipped(tmp_path: Path) -> None:
    def result(index: int, status: Status = Status.DOWNLOADED) -> FileResult:
        return FileResult(
            index, f"f{index}", f"http://127.0.0.1/f{index}", status, 10, 10, "a" * 64, 0.5,
            notes=("n",), digests=(("sha256", "a" * 64),), etag='"e"', mtime_ns=123,
        )  # fmt: skip

    path = tmp_path / "0"
    with Done(path) as done:
        for index in range(3):
            done.add(result(index))
        done.add(result(9, Status.FAILED))  # a failure is tried again, not handed back
    whole = path.read_bytes()
    path.write_bytes(whole[: whole.rindex(b"\n", 0, len(whole) - 1) + 5])  # the last line torn
    assert Done(path).found == {0: result(0), 1: result(1)}
    assert Done(tmp_path / "none").found == {}
