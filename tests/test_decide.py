"""decide(): what a run does with each file and why, one row per branch."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from bulkdl.parent.decide import ADOPT, CHECK, DOWNLOAD, RESUME, SKIP, decide
from bulkdl.parent.state import Row
from bulkdl.values import Condition, Job, Settings

SHA = "ab" * 32
URL = "http://h/f.bin"
JOB = Job(0, URL, URL, (), "f.bin", (), Path("/d/f.bin"), None, (("sha256", SHA),), Settings())
ROW = Row("f.bin", URL, 100, '"e"', "Tue, 14 Nov 2023 22:13:20 GMT", SHA, (("sha256", SHA),), 100, 5_000, 0.0)


def _stat(size: int = 100, mtime_ns: int = 5_000, mode: int = 0o100644) -> os.stat_result:
    # (mode, ino, dev, nlink, uid, gid, size, three int times, three float times, atime_ns, mtime_ns, ctime_ns)
    return os.stat_result((mode, 0, 0, 1, 0, 0, size, 0, 0, 0, 0.0, 0.0, 0.0, 0, mtime_ns, 0))


CASES = [
    ("partial download", JOB, ROW, _stat(), True, False, RESUME, "a partial download is on disk"),
    ("force", JOB, ROW, _stat(), False, True, DOWNLOAD, "--force"),
    ("new", JOB, None, None, False, False, DOWNLOAD, "not on disk"),
    ("deleted", JOB, ROW, None, False, False, DOWNLOAD, "deleted from disk since the last run"),
    ("unknown local file", JOB, None, _stat(), False, False, ADOPT, "on disk, but no earlier run recorded it: kept if"),
    (
        "unknown local file of the manifest's size",
        replace(JOB, size=100),
        None,
        _stat(),
        False,
        False,
        ADOPT,
        "on disk, but no earlier run recorded it: kept if",
    ),
    (
        "unknown local file of another size",
        replace(JOB, size=101),
        None,
        _stat(),
        False,
        False,
        DOWNLOAD,
        "on disk, but no earlier run recorded it, and its size is not the manifest's",
    ),
    ("a symlink in its place", JOB, ROW, _stat(mode=0o120777), False, False, DOWNLOAD, "on disk, but not a regular"),
    ("a directory in its place", JOB, None, _stat(mode=0o040755), False, False, DOWNLOAD, "on disk, but not a regular"),
    (
        "unknown local file, no digest",
        replace(JOB, digests=()),
        None,
        _stat(),
        False,
        False,
        DOWNLOAD,
        "on disk, but no earlier run recorded it",
    ),
    ("resized locally", JOB, ROW, _stat(size=99), False, False, ADOPT, "changed on disk since the last run"),
    ("touched locally", JOB, ROW, _stat(mtime_ns=6_000), False, False, ADOPT, "changed on disk since the last run"),
    (
        "touched locally, no digest",
        replace(JOB, digests=()),
        ROW,
        _stat(mtime_ns=6_000),
        False,
        False,
        DOWNLOAD,
        "changed on disk since the last run (size or mtime)",
    ),
    (
        "resized locally, against the manifest's size",
        replace(JOB, size=100),
        ROW,
        _stat(size=99),
        False,
        False,
        DOWNLOAD,
        "changed on disk since the last run (size or mtime)",
    ),
    ("digest proves it", JOB, ROW, _stat(), False, False, SKIP, "size, mtime and digest match the last run"),
    (
        "manifest digest changed",
        replace(JOB, digests=(("sha256", "cd" * 32),)),
        ROW,
        _stat(),
        False,
        False,
        DOWNLOAD,
        "the manifest's digest differs from the one recorded",
    ),
    (
        "manifest size changed",
        replace(JOB, size=101),
        ROW,
        _stat(),
        False,
        False,
        DOWNLOAD,
        "the manifest's size differs",
    ),
    ("no digest: etag", replace(JOB, digests=()), ROW, _stat(), False, False, CHECK, "conditional GET (If-None-Match)"),
    (
        "no digest: date only",
        replace(JOB, digests=()),
        replace(ROW, etag=None),
        _stat(),
        False,
        False,
        CHECK,
        "conditional GET (If-Modified-Since)",
    ),
    (
        "digest of another algorithm",
        replace(JOB, digests=(("md5", "0" * 32),)),
        ROW,
        _stat(),
        False,
        False,
        CHECK,
        "conditional GET (If-None-Match)",
    ),
    (
        "url changed",
        replace(JOB, digests=(), shown_url="http://g/f.bin"),
        ROW,
        _stat(),
        False,
        False,
        DOWNLOAD,
        "the URL changed since the last run",
    ),
    (
        "no validators",
        replace(JOB, digests=()),
        replace(ROW, etag=None, last_modified=None),
        _stat(),
        False,
        False,
        DOWNLOAD,
        "the server sent no ETag or Last-Modified last time",
    ),
]


@pytest.mark.parametrize(
    ("job", "row", "local", "sidecar", "force", "action", "reason"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_decide(
    job: Job, row: Row | None, local: os.stat_result | None, sidecar: bool, force: bool, action: str, reason: str
) -> None:
    decision = decide(job, row, local, sidecar, force)
    assert (decision.action, decision.reason.startswith(reason)) == (action, True), decision
    assert (decision.condition is not None) == (action in (CHECK, ADOPT))
    if action == ADOPT and row is None:  # what is on disk, nothing recorded: the worker hashes the file
        assert decision.condition == Condition(None, None, 100, (), 5_000, adopt=True)
    elif action == ADOPT:  # what is on disk, and the row's validators for bytes that prove to be the row's
        assert local is not None and decision.condition == Condition(
            ROW.etag, ROW.last_modified, local.st_size, ROW.digests, local.st_mtime_ns, adopt=True
        )
    elif decision.condition is not None:
        assert (decision.condition.size, decision.condition.mtime_ns) == (row.size, row.local_mtime_ns)  # type: ignore[union-attr]
        assert not decision.condition.adopt


REVALIDATE_CASES = [
    ("etag", JOB, ROW, "--revalidate: conditional GET (If-None-Match)", (ROW.etag, ROW.last_modified)),
    (
        "date only",
        JOB,
        replace(ROW, etag=None),
        "--revalidate: conditional GET (If-Modified-Since)",
        (None, ROW.last_modified),
    ),
    (
        "no validators",
        JOB,
        replace(ROW, etag=None, last_modified=None),
        "--revalidate: plain GET, its bytes compared with the pinned digest (the server sent no ETag",
        (None, None),
    ),
    (
        "url changed",
        replace(JOB, shown_url="http://g/f.bin"),
        ROW,
        "--revalidate: plain GET, its bytes compared with the pinned digest (the URL changed",
        (None, None),  # the recorded validators are another URL's
    ),
]


@pytest.mark.parametrize(
    ("job", "row", "reason", "validators"), [c[1:] for c in REVALIDATE_CASES], ids=[c[0] for c in REVALIDATE_CASES]
)
def test_revalidate_asks_about_a_file_its_digest_proves(
    job: Job, row: Row, reason: str, validators: tuple[str | None, str | None]
) -> None:
    decision = decide(job, row, _stat(), False, False, revalidate=True)
    assert (decision.action, decision.reason.startswith(reason), decision.revalidating) == (CHECK, True, True), decision
    assert decision.condition is not None
    assert (decision.condition.etag, decision.condition.last_modified) == validators
    assert (decision.condition.size, decision.condition.digests) == (row.size, row.digests)


@pytest.mark.parametrize(
    ("job", "row", "local", "sidecar", "force", "action"), [c[1:-1] for c in CASES], ids=[c[0] for c in CASES]
)
def test_revalidate_changes_only_what_would_be_skipped(
    job: Job, row: Row | None, local: os.stat_result | None, sidecar: bool, force: bool, action: str
) -> None:
    revalidated = decide(job, row, local, sidecar, force, revalidate=True)
    if action == SKIP:
        assert revalidated.action == CHECK
    elif action == ADOPT:  # the server is asked: a plain GET whose bytes are held to the digest
        assert (revalidated.action, revalidated.condition) == (DOWNLOAD, None)
        assert (
            revalidated.reason + ": kept if its bytes match the manifest's digests"
            == decide(job, row, local, sidecar, force).reason
        )
    else:
        assert revalidated == decide(job, row, local, sidecar, force)


def test_an_adopted_copy_carries_no_validators_of_another_url() -> None:
    # Found by a review: _remote drops a moved URL's validators (_MOVED); an adoption must too: the row is
    # recorded with the new URL, and a --revalidate night would send the old server's ETag to the new one.
    moved = replace(ROW, url="http://old.test/f.bin")
    decision = decide(JOB, moved, _stat(mtime_ns=6_000), False, False)
    assert decision.action == ADOPT and decision.condition is not None
    assert (decision.condition.etag, decision.condition.last_modified, decision.condition.digests) == (None, None, ())


@pytest.mark.parametrize("row", [None, ROW], ids=["unrecorded", "touched"])
def test_revalidate_asks_the_server_instead_of_adopting(row: Row | None) -> None:
    # Found by a review: --revalidate promises a request for every file; an adoption sends none.
    decision = decide(JOB, row, _stat(mtime_ns=6_000), False, False, revalidate=True)
    assert decision.action == DOWNLOAD and decision.condition is None
