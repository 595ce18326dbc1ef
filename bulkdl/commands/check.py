"""``bulkdl check``: validate the manifest."""

from __future__ import annotations

import argparse

from ..exitcodes import EXIT_OK
from ..parent import manifest
from ..parent.manifest import Overrides
from ..parent.report.page import counted


def check_command(args: argparse.Namespace) -> int:
    loaded = manifest.load(args.manifest, Overrides(dest=args.dest))
    print(f"{args.manifest}: {counted(len(loaded.jobs), 'file')} into {loaded.dest}, valid")
    return EXIT_OK
