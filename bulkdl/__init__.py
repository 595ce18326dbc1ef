"""bulkdl: mirror many files over HTTP(S) in one batch, fast, resumable, never leaving a corrupt file."""

__version__ = "0.1.0"
