"""The processes multiprocessing starts for a run besides its workers: the resource tracker and the
forkserver, and the start method that needs them.

``start_early`` starts both from ``bulkdl/__main__.py`` when the command line says a run may download, before
bulkdl imports the rest of itself: the forkserver then imports the download code (worker/forkserver.py)
on the other core while the parent imports, reads the manifest and decides, instead of after. Measured on
WAN MANY (2,000 files, 25 ms a response) under load, the parent took 0.30-0.37 s to import, 0.045 s to read
the manifest and decide, and the pool 0.20-0.23 s more before its first file began. A guess that is wrong
costs a forkserver that nobody asks for, which ends with bulkdl.

Module-level imports are the standard library's only: this runs before anything else of bulkdl is loaded.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import signal
import sys
from multiprocessing import resource_tracker
from multiprocessing.context import BaseContext

# A run killed with kill -9 (or by the OOM killer) leaves its semaphores (the budget's locks) to
# multiprocessing's resource tracker, a process of its own that outlives it to unlink them, and that warns on
# the terminal it inherited ("resource_tracker: There appear to be 2 leaked semaphore objects to clean up at
# shutdown"): words about bulkdl's insides that nobody can act on. The tracker takes its warning filters from
# the command line it is started with, which copies sys.warnoptions: started here with this one added, before
# anything else can start it, it still cleans up and says nothing.
_QUIET_TRACKER = "ignore:resource_tracker:UserWarning:multiprocessing.resource_tracker"
# Flags after which ``bulkdl run`` downloads nothing through the pool.
_NO_POOL = frozenset({"--dry-run", "-h", "--help"})


def context() -> BaseContext:
    """The start method for worker processes, with the resource tracker running (quietly)."""
    _start_tracker()
    # Never fork a parent that may run threads; forkserver starts workers cheaply where it exists.
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    started = multiprocessing.get_context("forkserver")
    started.set_forkserver_preload(["bulkdl.worker.forkserver"])
    return started


def start_early(argv: list[str]) -> None:
    """Start the tracker and the forkserver now if ``argv`` (bulkdl's arguments) is a run that may download."""
    if argv[:1] != ["run"] or _NO_POOL.intersection(argv):
        return
    # Both ignore SIGINT once running; started with it ignored (an ignored signal survives exec), a Ctrl-C
    # in their first tenths of a second no longer prints their tracebacks under bulkdl's "interrupted".
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        if context().get_start_method() == "forkserver":
            multiprocessing.forkserver.ensure_running()  # spawns it and returns: its imports run meanwhile
    finally:
        signal.signal(signal.SIGINT, previous)


def _start_tracker() -> None:
    before = sys.warnoptions[:]
    sys.warnoptions.append(_QUIET_TRACKER)  # read again only by processes started from now on
    try:
        resource_tracker.ensure_running()  # does nothing if it runs already
    finally:
        sys.warnoptions[:] = before
