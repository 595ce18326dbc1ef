"""The one exception tree of bulkdl.

Every message is a single line a user can act on. Classes carry only their message so they pickle across
the process pool unchanged::

    BulkdlError                 anything foreseeable; str() is what the user reads
    ├── UsageError              bad command line                                   exit 2
    ├── ManifestError           invalid manifest; one line per problem             exit 2
    └── FetchError              one file failed; the batch goes on                 exit 1
        ├── TransientError      worth another attempt: 5xx, 408, 429, reset, timeout, short body
        ├── PermanentError      another attempt cannot help: 404, 410, 401, 403, other 4xx
        ├── RangeNotHonoured    a ranged request got another range or the whole body
        ├── RemoteChanged       the file changed on the server while we fetched it
        ├── VerifyError         size or digest differs from what the manifest expects
        │   └── DigestMismatch  the bytes received have another digest than the manifest pins
        └── LocalError          the local side failed: disk full, read-only destination
"""

from __future__ import annotations


class BulkdlError(Exception):
    """Base of every foreseeable failure."""


class UsageError(BulkdlError):
    """The command line is wrong."""


class ManifestError(BulkdlError):
    """The manifest is invalid; the message holds one ``file:LINE: key: problem`` line per problem."""

    @property
    def problems(self) -> list[str]:
        return str(self).splitlines()


class FetchError(BulkdlError):
    """One file could not be fetched."""


class TransientError(FetchError):
    """A failure that another attempt may cure."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(FetchError):
    """A failure that no retry can cure; ``status`` is the HTTP status that said so, when an answer did (a
    404 or 410 may mean the file is gone upstream, which only the parent can tell from a failure)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RangeNotHonoured(FetchError):
    """The server did not answer a ranged request with the range asked for."""


class RemoteChanged(FetchError):
    """The remote file changed while it was being fetched."""


class VerifyError(FetchError):
    """The bytes received do not match the expected size or digest."""


class DigestMismatch(VerifyError):
    """The bytes received do not have the digest the manifest pins."""

    def __init__(self, algorithm: str, expected: str, got: str) -> None:
        super().__init__(f"{algorithm} mismatch: expected {expected}, got {got}")
        self.algorithm, self.expected, self.got = algorithm, expected, got


class LocalError(FetchError):
    """Writing the file locally failed."""
