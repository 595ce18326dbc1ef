"""``python -m bulkdl``."""

import sys

from .cli import main

if __name__ == "__main__":  # the guard matters: worker processes import this module too
    sys.exit(main())
