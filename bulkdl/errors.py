"""The one exception tree of bulkdl.

Every message is a single line a user can act on. Classes carry only their message so they pickle across
the process pool unchanged::

    BulkdlError                 anything foreseeable; str() is what the user reads
    ├── UsageError              bad command line                                   exit 2
    ├── ManifestError           invalid manifest; one line per problem             exit 2
    ├── ClusterError            the Dask cluster cannot run this (bulkdl/cluster/) exit 1
    │   ├── SchedulerUnreachable  no scheduler answers at --scheduler
    │   ├── DestNotShared       the workers do not see the client's dest
    │   ├── NoWorkers           every worker left mid-run
    │   └── SchedulerLost       the scheduler went away mid-run; all is resumable
    └── FetchError              one file failed; the batch goes on                 exit 1
        ├── TransientError      worth another attempt: 5xx, 408, 429, reset, timeout, short body
        ├── PermanentError      another attempt cannot help: 404, 410, 401, 403, other 4xx
        ├── RangeNotHonoured    a ranged request got another range or the whole body
        ├── RemoteChanged       the file changed on the server while we fetched it
        ├── VerifyError         size or digest differs from what the manifest expects
        │   └── DigestMismatch  the bytes received have another digest than the manifest pins
        └── LocalError          the local side failed: disk full, read-only destination

A FetchError also carries a ``code``: what kind of failure it was, from the fixed set CODES, for the JSON
report's readers (a script deciding what to alert on must not parse messages). Each class has a default, and
the place that makes an error passes a more precise one; an error wrapped in another keeps its code.
"""

from __future__ import annotations

import errno

HTTP_4XX, HTTP_5XX = "http_4xx", "http_5xx"
TIMEOUT, TOO_SLOW, CONNECTION, HOST_UNREACHABLE, TLS = "timeout", "too_slow", "connection", "host_unreachable", "tls"
PROTOCOL, CHANGED, CHECKSUM, SIZE, TOO_LARGE = "protocol", "changed", "checksum", "size", "too_large"
DISK_FULL, LOCAL_IO, WORKER_DIED, INTERNAL = "disk_full", "local_io", "worker_died", "internal"
INTERRUPTED, OUT_OF_TIME, MISSING = "interrupted", "out_of_time", "missing"
SCHEDULER_UNREACHABLE, DEST_NOT_SHARED, SCHEDULER_LOST = "scheduler_unreachable", "dest_not_shared", "scheduler_lost"
WORKER_BUSY, NO_WORKERS, CLIENT_LOST = "worker_busy", "no_workers", "client_lost"
# Every code a file of a report can carry, with what it means: the report's schema and the README list these.
CODES = (
    (HTTP_4XX, "the server answered 4xx (404, 403, 429...): for good, or on every attempt"),
    (HTTP_5XX, "the server answered 5xx on every attempt"),
    (TIMEOUT, "connecting, or waiting for the server, took longer than timeout"),
    (TOO_SLOW, "the transfer stayed slower than min_speed for stall_time"),
    (CONNECTION, "the connection broke, or the answer ended short, on every attempt"),
    (HOST_UNREACHABLE, "the host name did not resolve, or the host refused the connection"),
    (TLS, "the TLS handshake failed: certificate, protocol"),
    (PROTOCOL, "the server's answer was unusable: headers, ranges, redirects, a bad URL"),
    (CHANGED, "the file changed on the server during the download, twice"),
    (CHECKSUM, "the bytes have another digest than the manifest or the state pins"),
    (SIZE, "the bytes have another size than the manifest or the server said"),
    (TOO_LARGE, "larger than max_size"),
    (DISK_FULL, "not enough space on the destination's file system"),
    (LOCAL_IO, "reading or writing the local file failed (permissions, a symlink out of dest, I/O)"),
    (WORKER_DIED, "the worker process fetching it died (the OOM killer?)"),
    (WORKER_BUSY, "--scheduler: the Dask worker given it stayed busy with another bulkdl run (bulkdl.busy-wait)"),
    (CLIENT_LOST, "--scheduler: the Dask worker stopped it, not having heard from bulkdl (paused? asleep?)"),
    (SCHEDULER_LOST, "--scheduler: not finished: the Dask scheduler went away or stopped answering mid-run"),
    (NO_WORKERS, "--scheduler: not finished: the Dask cluster had no worker left"),
    (INTERNAL, "a bug in bulkdl: the traceback is on stderr"),
    (INTERRUPTED, "interrupted by Ctrl-C or SIGTERM"),
    (OUT_OF_TIME, "left by --max-duration for the next run"),
    (MISSING, "verify: not on disk"),
)
# What a run that its Dask cluster (--scheduler) cannot run or finish reports as its error, not a file's:
# the report's run-level codes (jsonreport.RUN_CODES), with the exit code 1 of a destination it cannot use.
CLUSTER_CODES = (
    (SCHEDULER_UNREACHABLE, "--scheduler: no Dask scheduler answered at that address"),
    (DEST_NOT_SHARED, "--scheduler: the Dask workers do not see the destination (it must be a shared mount)"),
    (SCHEDULER_LOST, "--scheduler: the Dask scheduler went away (or stopped answering); every file is resumable"),
    (NO_WORKERS, "--scheduler: the Dask cluster had no worker left for a while; every file is resumable"),
)


class BulkdlError(Exception):
    """Base of every foreseeable failure."""


class UsageError(BulkdlError):
    """The command line is wrong."""


class UnsafeOutput(UsageError):
    """An output (--report, --changes, ...) would land on the mirror's own files; nothing may be written there."""


class ManifestError(BulkdlError):
    """The manifest is invalid; the message holds one ``file:LINE: key: problem`` line per problem."""

    @property
    def problems(self) -> list[str]:
        return str(self).splitlines()


class ClusterError(BulkdlError):
    """The Dask cluster of --scheduler cannot run (or finish) this run; ``code``: one of CLUSTER_CODES."""

    code = SCHEDULER_LOST


class SchedulerUnreachable(ClusterError):
    code = SCHEDULER_UNREACHABLE


class DestNotShared(ClusterError):
    code = DEST_NOT_SHARED


class NoWorkers(ClusterError):
    code = NO_WORKERS


class SchedulerLost(ClusterError):
    code = SCHEDULER_LOST


class FetchError(BulkdlError):
    """One file could not be fetched; ``code``: one of CODES."""

    code = PROTOCOL

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class TransientError(FetchError):
    """A failure that another attempt may cure."""

    code = CONNECTION

    def __init__(self, message: str, retry_after: float | None = None, code: str | None = None) -> None:
        super().__init__(message, code)
        self.retry_after = retry_after


class PermanentError(FetchError):
    """A failure that no retry can cure; ``status`` is the HTTP status that said so, when an answer did (a
    404 or 410 may mean the file is gone upstream, which only the parent can tell from a failure)."""

    def __init__(self, message: str, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message, code or (http_code(status) if status is not None else None))
        self.status = status


class RangeNotHonoured(FetchError):
    """The server did not answer a ranged request with the range asked for."""


class RemoteChanged(FetchError):
    """The remote file changed while it was being fetched."""

    code = CHANGED


class PartsUnchecked(RemoteChanged):
    """Parts kept from an earlier run could not be checked against the server: start over, as for a change."""


class VerifyError(FetchError):
    """The bytes received do not match the expected size or digest."""

    code = SIZE


class DigestMismatch(VerifyError):
    """The bytes received do not have the digest the manifest pins."""

    def __init__(self, algorithm: str, expected: str, got: str) -> None:
        super().__init__(f"{algorithm} mismatch: expected {expected}, got {got}", CHECKSUM)
        self.algorithm, self.expected, self.got = algorithm, expected, got


class LocalError(FetchError):
    """Writing the file locally failed."""

    code = LOCAL_IO


def http_code(status: int) -> str:
    """The code of a failure the HTTP ``status`` stands for."""
    return {4: HTTP_4XX, 5: HTTP_5XX}.get(status // 100, PROTOCOL)


def local_code(exc: OSError) -> str:
    """The code of a failure to read or write a local file: a full disk is told apart, to be acted on."""
    return DISK_FULL if exc.errno in (errno.ENOSPC, errno.EDQUOT) else LOCAL_IO
