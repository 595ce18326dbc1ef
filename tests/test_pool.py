"""A worker process killed from outside (the OOM killer) must not take the rest of the batch with it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bulkdl.parent import manifest
from bulkdl.parent.pool import Batch, _died
from bulkdl.parent.run import _origins
from bulkdl.values import FileResult

from .conftest import cli_env, run_cli, write_manifest
from .httpserver import FaultServer, content

MiB = 1024**2


def _processes(session: int) -> dict[int, tuple[int, str]]:
    """pid -> (ppid, command line) for every process of a session, read from /proc: `ps` cuts long
    command lines at 80 columns when its output is not a terminal, and CI's checkout path is long."""
    found = {}
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError):  # a process may end while we read it
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == session:
                found[int(entry.name)] = (int(fields[1]), (entry / "cmdline").read_bytes().decode(errors="replace"))
    return found


def _workers(session: int) -> list[int]:
    """bulkdl's worker processes: the children of its forkserver."""
    processes = _processes(session)
    servers = {pid for pid, (ppid, args) in processes.items() if ppid == session and "forkserver" in args}
    return [pid for pid, (ppid, _) in processes.items() if ppid in servers]


@contextlib.contextmanager
def _bulkdl(tmp_path: Path, manifest: Path) -> Iterator[subprocess.Popen[str]]:
    """bulkdl running in a session of its own; whatever of that session a test leaves behind is killed."""
    argv = [sys.executable, "-m", "bulkdl", "run", str(manifest), "--report", str(tmp_path / "report.json")]
    with subprocess.Popen(
        argv,
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    ) as process:
        try:
            yield process
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)


def _wait_for_workers(process: subprocess.Popen[str], count: int) -> list[int]:
    deadline = time.monotonic() + 30
    while len(found := _workers(process.pid)) < count:
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.05)
    return found


def test_a_killed_worker_costs_only_a_retry(builtin: FaultServer, tmp_path: Path) -> None:
    files = {f"w{i}.bin": content(f"w{i}", 3 * MiB) for i in range(6)}
    urls = [builtin.add(name, data, rate=4 * MiB) for name, data in files.items()]
    with _bulkdl(tmp_path, write_manifest(tmp_path, urls, workers=2, defaults={"segments": 1})) as process:
        victim = _wait_for_workers(process, 2)[0]
        time.sleep(0.3)  # both workers are on a file by now
        os.kill(victim, signal.SIGKILL)
        output, _ = process.communicate(timeout=90)
    assert process.returncode == 0, output
    for name, data in files.items():
        assert (tmp_path / "mirror" / name).read_bytes() == data
    assert "Traceback" not in output


def _killing_every_worker(tmp_path: Path, urls: list[str], every: float, **top: Any) -> tuple[int, str]:
    """Run bulkdl over ``urls`` while every worker is killed, again and again, as a machine out of memory
    might (one look each ``every`` seconds); its exit code and output."""
    stop = threading.Event()
    manifest = write_manifest(tmp_path, urls, workers=2, defaults={"segments": 1}, **top)
    with _bulkdl(tmp_path, manifest) as process:

        def keep_killing() -> None:
            while not stop.is_set() and process.poll() is None:
                for pid in _workers(process.pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                time.sleep(every)

        killer = threading.Thread(target=keep_killing)
        killer.start()
        try:
            output, _ = process.communicate(timeout=120)
        finally:
            stop.set()
            killer.join()
    return process.returncode, output


def test_a_file_whose_worker_keeps_dying_fails_alone_and_clearly(builtin: FaultServer, tmp_path: Path) -> None:
    urls = [builtin.add(f"d{i}.bin", content(f"d{i}", 8 * MiB), rate=2 * MiB) for i in range(2)]
    code, output = _killing_every_worker(tmp_path, urls, 0.3)
    assert code == 1, output
    assert "worker process fetching it died" in output and "Traceback" not in output


def test_workers_that_keep_dying_end_the_run_at_the_pools_bound(builtin: FaultServer, tmp_path: Path) -> None:
    # Two files in flight at a time and 60 to go: each death counts against the two files begun (two deaths
    # fail a file), and after MAX_POOL_RESTARTS restarts, about 20 files in, the pool's bound fails the rest
    # at once, none hanging.
    urls = [builtin.add(f"b{i}.bin", content(f"b{i}", 4 * MiB), rate=1 * MiB) for i in range(60)]
    code, output = _killing_every_worker(tmp_path, urls, 0.005, connections=2)
    assert code == 1, output
    assert "the run's worker processes died" in output, output
    assert "Traceback" not in output
    assert not list((tmp_path / "mirror").glob("b*.bin")), "a file was installed while every worker died"


def test_workers_end_when_bulkdl_alone_is_killed(builtin: FaultServer, tmp_path: Path) -> None:
    """`kill -9` of bulkdl's own pid (not its group), as the OOM killer does: no process may stay behind, and
    none may go on with its file, since nobody locks the destination any more."""
    slow = content("slow", 6 * MiB)
    # slow.bin's server goes silent: its worker waits in a read that no stop flag can cut short.
    urls = [builtin.add("slow.bin", slow, stall_after=MiB), builtin.add("quick.bin", content("quick", 64 * 1024))]
    manifest = write_manifest(tmp_path, urls, workers=2, defaults={"segments": 1, "timeout": 60})
    mirror = tmp_path / "mirror"
    with _bulkdl(tmp_path, manifest) as process:
        _wait_for_workers(process, 2)
        deadline = time.monotonic() + 30
        while not (mirror / "quick.bin").exists() or not list(mirror.glob("slow.bin.part*")):
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.05)
        time.sleep(0.3)  # one worker hangs in slow.bin, the other has finished quick.bin and waits
        process.kill()
        process.wait(timeout=10)
        died = time.monotonic()
        while left := _processes(process.pid):
            assert time.monotonic() < died + 15, f"still running after bulkdl died: {left}"
            time.sleep(0.05)
        assert time.monotonic() - died < 2.5, "the workers exit at once, not after their fetch gives up"
    assert not (mirror / "slow.bin").exists(), "a worker went on writing into a destination nobody locks"
    builtin.change("slow.bin", stall_after=None)
    assert run_cli("run", manifest, cwd=tmp_path).code == 0
    assert (mirror / "slow.bin").read_bytes() == slow


class _InterruptedRestart(Batch):
    """A batch whose first pool restart meets a Ctrl-C: as the signal it is, or as KeyboardInterrupt itself."""

    def __init__(self, how: str, workers: int) -> None:
        self.how = how
        self.starts = 0
        super().__init__(workers)

    def _start_workers(self) -> None:
        self.starts += 1
        if self.starts > 1:  # not the first pool: a restart
            if self.how == "signal":
                os.kill(os.getpid(), signal.SIGINT)
            else:
                raise KeyboardInterrupt
        super()._start_workers()


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError):
            if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _cmdline(pid: int) -> bytes:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    return b""


def _kill_a_worker_once_both_fetch(mirror: Path) -> None:
    """SIGKILL one of this process's pool workers (as the OOM killer would) once two files have bytes."""
    deadline = time.monotonic() + 30
    while sum(part.stat().st_size > 0 for part in mirror.glob("r?.bin.part*")) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    [forkserver] = [pid for pid in _children(os.getpid()) if b"forkserver" in _cmdline(pid)]
    os.kill(_children(forkserver)[0], signal.SIGKILL)


@pytest.mark.parametrize("how", ["signal", "exception"])
def test_an_interrupt_while_the_pool_restarts_loses_no_task(builtin: FaultServer, tmp_path: Path, how: str) -> None:
    urls = [builtin.add(f"r{i}.bin", content(f"r{i}", 3 * MiB), rate=MiB // 2) for i in range(3)]
    jobs = manifest.load(write_manifest(tmp_path, urls, workers=2, defaults={"segments": 1})).jobs
    results: list[FileResult] = []
    batch = _InterruptedRestart(how, 2)

    killer = threading.Thread(target=_kill_a_worker_once_both_fetch, args=(tmp_path / "mirror",))
    killer.start()
    try:
        batch.run([(job, None) for job in jobs], lambda *_: None, results.append, lambda: None)
    finally:
        killer.join()
        batch.close()
    assert sorted(r.name for r in results) == ["r0.bin", "r1.bin", "r2.bin"], "every task is in the summary, once"
    assert {r.status for r in results} == {"interrupted"}, results


@pytest.mark.timeout(60)
def test_a_stop_between_a_death_and_the_restart_ends_the_run(builtin: FaultServer, tmp_path: Path) -> None:
    # The dead worker's tasks still had it as their owner, so the stop settled none of them and the run
    # waited for ever (found by review; an OOM kill, then Ctrl-C on the thrashing machine).
    urls = [builtin.add(f"r{i}.bin", content(f"r{i}", 3 * MiB), rate=MiB // 2) for i in range(3)]
    jobs = manifest.load(write_manifest(tmp_path, urls, workers=2, defaults={"segments": 1})).jobs
    results: list[FileResult] = []
    batch = Batch(2)
    asked = []

    def on_poll() -> None:  # the Ctrl-C arrives right after the step that saw the death
        if batch._broken and not asked:
            asked.append(1)
            os.kill(os.getpid(), signal.SIGINT)

    killer = threading.Thread(target=_kill_a_worker_once_both_fetch, args=(tmp_path / "mirror",))
    killer.start()
    try:
        batch.run([(job, None) for job in jobs], lambda *_: None, results.append, on_poll)
    finally:
        killer.join()
        batch.close()
    assert asked
    assert sorted(r.name for r in results) == ["r0.bin", "r1.bin", "r2.bin"], "every task reported, once"
    assert {r.status for r in results} == {"interrupted"}, results


def test_an_idle_worker_takes_over_tasks_another_has_not_started(builtin: FaultServer, tmp_path: Path) -> None:
    """Each worker has one thread, and the first feed deals the six files three to each: the first worker's
    are slow, the other's fast. Without a recall the first runs its three slow files one after another on
    its one connection while the other waits; with it, the idle one takes over one of them."""
    urls = [builtin.add(f"s{i}.bin", content(f"s{i}", 1000), delay=0.6 if i % 2 == 0 else 0.0) for i in range(6)]
    loaded = manifest.load(write_manifest(tmp_path, urls, workers=2, connections=2))
    results: list[FileResult] = []
    batch = Batch(2, loaded.budget)
    try:
        batch.run([(job, None) for job in loaded.jobs], lambda *_: None, results.append, lambda: None)
    finally:
        batch.close()
    assert sorted(r.status for r in results) == ["downloaded"] * 6, results
    asked = [r for r in builtin.requests() if r.path.startswith("/s")]
    assert sorted(r.path for r in asked) == [f"/s{i}.bin" for i in range(6)], "each file fetched once"
    served = {r.path: r.conn for r in asked}
    # The idle worker's connection is the one its own fast files came over; the first worker's may have been
    # closed and opened again between two files (an idle connection given up for a waiting thread). Under
    # load the first worker can begin its first slow file late enough that the idle one takes both others:
    # without a recall it takes none.
    idle = {served[f"/s{i}.bin"] for i in (1, 3, 5)}
    assert [served[f"/s{i}.bin"] in idle for i in (0, 2, 4)].count(True) in (1, 2), served


def test_a_worker_killed_with_nothing_to_do_takes_its_permits_with_it(builtin: FaultServer, tmp_path: Path) -> None:
    """A worker killed once its last file is reported still held, for its idle connection, the only permit
    to its host: the pool did not start again, and the other worker's file for that host waited for ever
    (found by a review; the test used to hang until Ctrl-C)."""
    t0 = builtin.add("t0.bin", content("t0", 1000))
    b0 = builtin.add("b0.bin", content("b0", 1000), delay=1.0)
    x0 = builtin.add("x0.bin", content("x0", 1000))
    c0 = builtin.add("c0.bin", content("c0", 1000))
    other = lambda url: url.replace("127.0.0.1", "localhost")  # noqa: E731  # another host key, same server
    # dealt in turn: A gets t0, x0 (host 127.0.0.1); B gets b0 (host localhost, slow), c0 (127.0.0.1)
    urls = [t0, other(b0), x0, c0]
    loaded = manifest.load(
        write_manifest(tmp_path, urls, workers=2, connections=2, max_connections_per_host=1, defaults={"segments": 1})
    )
    results: list[FileResult] = []
    batch = Batch(2, replace(loaded.budget, hosts=_origins(loaded.jobs)))
    killed: list[int] = []

    def on_result(result: FileResult) -> None:
        results.append(result)
        owner = batch._owner[result.index]
        if result.name == "x0.bin" and not owner.assigned - {result.index}:
            os.kill(owner.process.pid, signal.SIGKILL)  # idle now, its connection to 127.0.0.1 kept
            killed.append(owner.process.pid)

    runner = threading.Thread(
        target=batch.run, args=([(j, None) for j in loaded.jobs], lambda *_: None, on_result, lambda: None)
    )
    runner.start()
    runner.join(10)
    hung = runner.is_alive()
    if hung:
        batch._asked += 2  # Ctrl-C twice, to end the test
        runner.join(10)
    batch.close()
    assert killed, "the scenario did not happen"
    assert not hung, "c0 waits for ever for a permit the dead worker holds"
    assert sorted((r.name, r.status) for r in results) == [(f"{n}.bin", "downloaded") for n in ("b0", "c0", "t0", "x0")]


_STARTED_EARLY = """
import os, sys
from pathlib import Path
from bulkdl.parent import processes
processes.start_early(sys.argv[1:])
for entry in Path("/proc").iterdir():
    try:
        ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        if ppid == os.getpid() and b"multiprocessing.forkserver" in (entry / "cmdline").read_bytes():
            print("forkserver")
    except (OSError, ValueError):
        pass
"""


@pytest.mark.parametrize(
    ("argv", "started"),
    [
        (["run", "m.yaml"], True),
        (["run", "m.yaml", "--workers", "2"], True),
        (["run", "m.yaml", "--dry-run"], False),
        (["run", "--help"], False),
        (["check", "m.yaml"], False),
        (["verify", "m.yaml"], False),
        ([], False),
    ],
)
def test_a_run_that_may_download_starts_its_forkserver_before_anything_else(argv: list[str], started: bool) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _STARTED_EARLY, *argv], capture_output=True, text=True, env=cli_env(), timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == (["forkserver"] if started else []), done.stdout


def test_a_file_failed_by_the_pools_bound_does_not_say_it_killed_its_worker(tmp_path: Path) -> None:
    job = manifest.load(write_manifest(tmp_path, ["http://127.0.0.1:1/a"])).jobs[0]
    assert _died(job, 2, 3).error == (
        "the worker process fetching it died 2 times (killed by the system?); its parts are kept"
    )
    never = _died(job, 0, 11).error or ""
    assert never.startswith("not tried again: the run's worker processes died 11 times in all"), never
    assert "fetching it" not in never, "a file no worker had begun did not kill one"
    once = _died(job, 1, 11).error or ""
    assert once.startswith("not tried again: its worker died once while fetching it; the run's"), once
    assert _died(job, 0, 11).code == _died(job, 2, 3).code == "worker_died"


def test_ctrl_c_while_the_forkserver_starts_prints_no_traceback(builtin: FaultServer, tmp_path: Path) -> None:
    url = builtin.add("slow.bin", content("slow", 4 * MiB), rate=1 * MiB)
    with _bulkdl(tmp_path, write_manifest(tmp_path, [url])) as process:
        deadline = time.monotonic() + 30
        # The forkserver is spawned before bulkdl's imports: both are still importing when Ctrl-C comes.
        while not any("forkserver" in args for _, args in _processes(process.pid).values()):
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.002)
        time.sleep(0.06)  # into the forkserver's import of the download code, which takes 0.1-0.2 s
        os.killpg(process.pid, signal.SIGINT)
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 130, output
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output
