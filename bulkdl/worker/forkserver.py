"""Preloaded into multiprocessing's forkserver, before it forks any worker.

The forkserver sits in bulkdl's process group, so the ``kill -TERM -<pgid>`` of cron, systemd or a shutdown
reaches it too. multiprocessing protects it from SIGINT only; killed by SIGTERM, it takes every worker's sentinel
with it, and the pool reports all workers dead while they are in fact stopping cleanly: their results
(bytes received, notes) are lost and every file reads "stopped". So it ignores SIGTERM as the workers do;
it still ends when bulkdl does (its pipe from bulkdl closes). Importing the download code here also means
each worker starts with it loaded.
"""

import signal

signal.signal(signal.SIGTERM, signal.SIG_IGN)
# multiprocessing makes the forkserver ignore SIGINT only after its preload; a Ctrl-C during this import (a
# run's first 0.1-0.3 s, parent/processes.py) printed its traceback. Workers ignore SIGINT anyway (serve.py).
signal.signal(signal.SIGINT, signal.SIG_IGN)

from . import serve  # noqa: E402, F401  (loaded once here, inherited by every worker)
