"""``python -m bench.hwm FILE bulkdl-args…``: run bulkdl in this process and write its own peak RSS to FILE.

The peak is VmHWM from /proc/self/status read just before exit: the bulkdl parent alone, never its
forkserver or workers (a ``wait4`` or ``RUSAGE_CHILDREN`` figure can fold in descendants it reaped).
"""

import sys

if __name__ == "__main__":  # worker processes may import the main module: the guard keeps them out
    from bulkdl.__main__ import main  # the entry a user's command takes, its early forkserver included

    target, args = sys.argv[1], sys.argv[2:]
    try:
        code = main(args)
    finally:
        with open("/proc/self/status") as status:
            peak = next(line.split()[1] for line in status if line.startswith("VmHWM:"))  # kB
        with open(target, "w") as out:
            out.write(f"{peak}\n")
    sys.exit(code)
