"""What runs in the bulkdl process itself: read the manifest, decide per file, hold the destination's lock
and state, hand files to the pool of workers, record their results, and report. Only pool.py knows that
workers are processes; what crosses to them is in ../values.py."""
