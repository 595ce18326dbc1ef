"""One read buffer per thread for the thread's whole life: a file does not allocate (and zero) its own MiB.

A worker runs many small files one after another on each of its threads; each of them reading through a
fresh ``bytearray(BUFFER)`` cost a zeroed 1 MiB (and its page faults) per file. Thread-local, so two files
on two threads never share one.
"""

from __future__ import annotations

import threading

from ..hashing import BUFFER

_local = threading.local()


def get() -> memoryview:
    """This thread's buffer, BUFFER bytes; its content is whatever the last reader left."""
    view: memoryview | None = getattr(_local, "view", None)
    if view is None:
        view = _local.view = memoryview(bytearray(BUFFER))
    return view
