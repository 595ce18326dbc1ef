"""bulkdl: mirror many files over HTTP(S) in one batch, fast, resumable, never leaving a corrupt file."""


def __getattr__(name: str) -> str:
    # __version__ is looked up when first asked for, not on import: finding the installed distribution costs
    # each process that imports bulkdl (the forkserver, a Dask worker) some 20 ms, before a run's forkserver
    # is started (parent/processes.py).
    if name != "__version__":
        raise AttributeError(f"module 'bulkdl' has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("bulkdl")  # pyproject.toml's, the one place it is written
    except PackageNotFoundError:  # run from a source tree that was never installed
        found = "0+unknown"
    globals()["__version__"] = found
    return found
