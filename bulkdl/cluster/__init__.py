"""Running a manifest's files on a Dask cluster (--scheduler): imported only when a run asks for it.

Two modules, one on each side of the network: client.py runs in the bulkdl process (the Dask client; it holds
the destination lock and writes the state), task.py in the Dask worker processes (they fetch the files with
the same code as a local worker and return FileResults). No other module of bulkdl imports Dask. done.py,
used by task.py, keeps what a task finished, in dest, for a rerun of the task after its worker died.
"""
