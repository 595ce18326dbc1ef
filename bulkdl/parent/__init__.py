"""What runs in the bulkdl process itself: read the manifest, decide per file, hold the destination's lock
and state, hand files to the pool of workers, record their results, and report. Only pool.py and processes.py
know that workers are processes; what crosses to them is in ../values.py."""
