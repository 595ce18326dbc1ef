"""``python -m bulkdl``, and the ``bulkdl`` command."""

import sys


def main() -> int:
    # Before bulkdl imports the rest of itself: a run's forkserver starts meanwhile (processes.py says why).
    from .parent import processes

    processes.start_early(sys.argv[1:])
    from .cli import main as cli_main

    return cli_main()


if __name__ == "__main__":  # the guard matters: worker processes import this module too
    sys.exit(main())
