"""``python -m bulkdl``, and the ``bulkdl`` command."""

import sys
from collections.abc import Sequence

from .exitcodes import EXIT_INTERRUPTED


def main(argv: Sequence[str] | None = None) -> int:
    """bulkdl with ``argv`` (None: the command line's arguments)."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        # Before bulkdl imports the rest of itself: a run's forkserver starts meanwhile (processes.py says why).
        from .parent import processes

        processes.start_early(args)
        from .cli import main as cli_main

        return cli_main(args)
    except KeyboardInterrupt:  # Ctrl-C before the command could take it (its imports, its arguments)
        print("bulkdl: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # the guard matters: worker processes import this module too
    sys.exit(main())
