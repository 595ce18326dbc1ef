"""``python -m bulkdl``, and the ``bulkdl`` command."""

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """bulkdl with ``argv`` (None: the command line's arguments)."""
    args = list(sys.argv[1:] if argv is None else argv)
    # Before bulkdl imports the rest of itself: a run's forkserver starts meanwhile (processes.py says why).
    from .parent import processes

    processes.start_early(args)
    from .cli import main as cli_main

    return cli_main(args)


if __name__ == "__main__":  # the guard matters: worker processes import this module too
    sys.exit(main())
