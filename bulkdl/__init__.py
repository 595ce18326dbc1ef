"""bulkdl: mirror many files over HTTP(S) in one batch, fast, resumable, never leaving a corrupt file."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("bulkdl")  # pyproject.toml's, the one place it is written
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
