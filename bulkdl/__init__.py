"""bulkdl: mirror many files over HTTP(S) in one batch, fast, resumable, never leaving a corrupt file."""

# The one place the version is written: pyproject.toml reads it from here (tool.setuptools.dynamic). Asking
# the installed distribution instead (importlib.metadata) cost every run 20-40 ms of imports before its
# first request, since the command line, the log and the reports all name the version.
__version__ = "0.1.0"
