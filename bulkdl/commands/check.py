"""``bulkdl check``: validate the manifest."""

from __future__ import annotations

import argparse

from ..exitcodes import EXIT_OK
from ..parent import manifest
from ..parent.manifest import Overrides


def check_command(args: argparse.Namespace) -> int:
    loaded = manifest.load(args.manifest, Overrides(dest=args.dest))
    print(f"{args.manifest}: {len(loaded.jobs)} files into {loaded.dest}, valid")
    return EXIT_OK
