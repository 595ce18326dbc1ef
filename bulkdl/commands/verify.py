"""``bulkdl verify``: re-hash the files on disk, and with --repair download the broken ones again."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from datetime import datetime, timezone

from ..errors import BulkdlError
from ..parent import log, manifest, outputs
from ..parent.manifest import Manifest, Overrides
from ..parent.run import redownload
from ..parent.state import Row
from ..parent.verify import CORRUPT, MISSING, verify
from ..values import FileResult
from .finish import finish, make_about
from .hold import destination, read_recorded, say_what_was_not_recorded, stoppable


def verify_command(args: argparse.Namespace) -> int:
    began, started = datetime.now(timezone.utc), time.monotonic()
    overrides = Overrides(dest=args.dest, workers=args.workers, ca_bundle=args.ca_bundle)
    loaded = manifest.load(args.manifest, overrides)
    outputs.check(loaded, args.report, "the report")
    outputs.check(loaded, args.html_report, "the HTML report")
    log.start(args.verbose, args.log_file, loaded, "verify")
    about = make_about("bulkdl verify --repair" if args.repair else "bulkdl verify", loaded, args, began, args.repair)
    rows = read_recorded(loaded.dest)
    results = verify(loaded.jobs, rows, loaded.workers)
    found = [r for r in results if r.status in (CORRUPT, MISSING)]
    stopped = False
    if found:
        results, stopped = _act_on(loaded, results, found, rows, args.repair, args.quiet)
    about = replace(about, stopped=stopped)
    # It downloads only to repair: no earlier rows to compare with.
    elapsed = time.monotonic() - started
    return finish(results, elapsed, args.report, about, {}, command="verify", html_report=args.html_report)


def _act_on(
    loaded: Manifest,
    results: list[FileResult],
    found: list[FileResult],
    rows: dict[str, Row],
    repair: bool,
    quiet: bool = False,
) -> tuple[list[FileResult], bool]:
    """Forget the state's rows of the files verify found broken, so that the next run fetches them (it would
    skip them: their size and mtime still match); with ``repair``, fetch them now."""
    stale = [rows[r.name] for r in found if r.name in rows]
    if not (stale or repair):
        return results, False  # nothing to write: no lock to take
    try:
        with stoppable(), destination(loaded.dest) as state:
            for row in stale:
                state.forget(row)
            state.commit()
            progress = sys.stdout.isatty() and not (quiet or log.on_terminal())
            fixed, stopped = redownload(loaded, found, state, progress) if repair else ([], False)
        say_what_was_not_recorded(state)
    except BulkdlError as exc:  # another run holds the destination, or it cannot be written: still report
        left = "nothing was repaired and the state" if repair else "the state"
        print(f"bulkdl: {exc}; {left} was left as it is", file=sys.stderr)
        return results, False
    by_index = {r.index: r for r in fixed}
    return [by_index.get(r.index, r) for r in results], stopped
