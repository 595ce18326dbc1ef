"""One run, in the parent process: decide per file, settle what needs no request, dispatch the rest, record.

Files whose state proves them current are settled here without a worker or a request; every other file
goes to the pool with the condition (if any) for its conditional GET. Each result updates the state as it
arrives, so an interrupted run still remembers what it finished.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import replace

from ..values import FileResult, Job, Status
from ..worker import parts
from .decide import DOWNLOAD, SKIP, Decision, decide
from .manifest import Manifest
from .pool import Batch
from .report.progress import ProgressView
from .state import Row, State


def decide_all(loaded: Manifest, rows: dict[str, Row], force: bool) -> list[Decision]:
    return [
        decide(job, rows.get(job.name), _stat(job), parts.sidecar_path(job.path).exists(), force) for job in loaded.jobs
    ]


def _stat(job: Job) -> os.stat_result | None:
    try:
        return job.path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None


def download(
    loaded: Manifest, decisions: Sequence[Decision], rows: dict[str, Row], state: State, show_progress: bool
) -> list[FileResult]:
    results: dict[int, FileResult] = {}
    tasks = []
    for job, decision in zip(loaded.jobs, decisions, strict=True):
        if decision.action == SKIP:
            results[job.index] = _unchanged(job, rows[job.name], decision)
            state.checked(job.name)
        else:
            tasks.append((job, decision.condition))
    if not tasks:
        return list(results.values())
    waiting = {job.index: job for job, _ in tasks}
    view = ProgressView(show_progress, {i: j.name for i, j in waiting.items()}, {i: j.size for i, j in waiting.items()})

    def finished(result: FileResult) -> None:
        results[result.index] = result
        view.finished(result)
        _record(state, result)

    batch = Batch(min(loaded.workers, len(tasks)), max(job.settings.segments for job, _ in tasks))
    try:
        with view:
            batch.run(tasks, view.tick, finished, state.commit_if_due)
    finally:
        batch.close()
    return list(results.values())


def redownload(loaded: Manifest, found: Sequence[FileResult], state: State, show_progress: bool) -> list[FileResult]:
    """``verify --repair``: download every file verify ``found`` corrupt or missing, at once and whatever the
    state says; each result says what verify had found."""
    jobs = {job.index: job for job in loaded.jobs}
    broken = replace(loaded, jobs=tuple(jobs[r.index] for r in found))
    decisions = [Decision(DOWNLOAD, f"verify found it {r.status}") for r in found]
    results = {r.index: r for r in download(broken, decisions, {}, state, show_progress)}
    repaired = []
    for before in found:
        after = results[before.index]
        what = f"{before.status} ({before.error})" if before.error else before.status
        note = f"repaired: verify found it {what}" if after.status == Status.DOWNLOADED else f"verify found it {what}"
        repaired.append(replace(after, notes=(note, *after.notes)))
    return repaired


def _unchanged(job: Job, row: Row, decision: Decision) -> FileResult:
    return FileResult(
        index=job.index,
        name=job.name,
        url=job.shown_url,
        status=Status.SKIPPED,
        size=row.size,
        transferred=0,
        sha256=row.sha256,
        elapsed=0.0,
        notes=(f"unchanged: {decision.reason}",),
        digests=row.digests,
    )


def _record(state: State, result: FileResult) -> None:
    if result.status not in (Status.DOWNLOADED, Status.SKIPPED) or result.size is None or result.mtime_ns is None:
        return  # a failed or interrupted file leaves the previous copy, and its row, as they were
    digests = dict(result.digests)
    state.put(
        Row(
            path=result.name,
            url=result.url,
            size=result.size,
            etag=result.etag,
            last_modified=result.last_modified,
            sha256=digests["sha256"],
            digests=result.digests,
            local_size=result.size,
            local_mtime_ns=result.mtime_ns,
            checked_at=time.time(),
        )
    )
