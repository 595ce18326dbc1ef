"""``bulkdl run``: download what the manifest lists, prune, and leave the run's records."""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from ..errors import BulkdlError
from ..exitcodes import EXIT_FAILED, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK
from ..parent import checksums, executor, lastrun, log, manifest, outputs, prune, records
from ..parent.manifest import Manifest, Overrides
from ..parent.pool import OUT_OF_TIME
from ..parent.report.page import print_page
from ..parent.report.plan import plan_page
from ..parent.report.summary import Left
from ..parent.run import decide_all, download, judge_partials, say_if_the_host_cap_binds
from ..parent.state import Row, State
from ..values import FileResult
from .finish import FULL, earlier, finish, make_about, title
from .hold import destination, read_recorded, say_what_was_not_recorded, stoppable


def run_command(args: argparse.Namespace) -> int:
    # The verdict's start time and duration cover the whole command, reading the manifest included: on a big
    # mirror that is seconds of the run the user waited for.
    began, started = datetime.now(timezone.utc), time.monotonic()
    overrides = Overrides(
        dest=args.dest,
        workers=args.workers,
        segments=args.segments,
        ca_bundle=args.ca_bundle,
        connections=args.connections,
        max_connections_per_host=args.max_connections_per_host,
        limit_rate=args.limit_rate,
        prune=args.prune,
        max_delete=args.max_delete,
        backup_dir=args.backup_dir,
        revalidate=args.revalidate,
        checksums_file=args.checksums_file,
        max_duration=args.max_duration,
        trace=args.trace,
        scheduler=args.scheduler,
    )
    loaded = _with_deadline(manifest.load(args.manifest, overrides), started)
    if args.dry_run:
        recorded = read_recorded(loaded.dest)
        decisions = judge_partials(loaded, decide_all(loaded, recorded, args.force))
        plan = [(job.name, d.action, d.reason) for job, d in zip(loaded.jobs, decisions, strict=True)]
        pruning = None if loaded.prune is None else prune.preview(loaded.dest, loaded.prune, loaded.jobs, recorded)
        sizes = [job.size for job in loaded.jobs]
        print_page(plan_page(plan, title("bulkdl --dry-run", loaded), args.summary == FULL, pruning, sizes))
        return EXIT_OK
    executor.check(loaded.scheduler)
    # What the run writes besides the mirror: each checked before anything is fetched, never onto the mirror.
    written = [(args.report, "the report"), (args.changes, "the changes file"), (loaded.trace, "the trace")]
    written.append((args.html_report, "the HTML report"))
    for target, what in [*written, (loaded.checksums_file, "the checksums file")]:
        outputs.check(loaded, target, what)
    log.start(args.verbose, args.log_file, loaded, "run")
    # A log on the terminal's stderr would be torn by the redraws of live progress: the log wins.
    show_progress = sys.stdout.isatty() and not (args.quiet or args.no_progress or log.on_terminal())
    about = make_about("bulkdl", loaded, args, began)
    if not args.quiet:  # cron mails whatever a --quiet run prints: a good night must print one line
        say_if_the_host_cap_binds(loaded)
    with stoppable(), destination(loaded.dest) as state, _recording(loaded, args.changes, began) as outcome:
        rows = state.rows()
        decisions = decide_all(loaded, rows, args.force)
        results, stopped = download(loaded, decisions, rows, state, show_progress, noting=args.changes is not None)
        pruned = _prune(loaded, rows, (results, stopped), state, args.changes is not None)
        state.commit()  # renames durable before the checksums file names them; what was not recorded is said now
        say_what_was_not_recorded(state)
        results += pruned.results
        outcome.results, outcome.earlier = results, earlier(rows)
        # Each makes the run fail if it cannot be written: a downstream sync must not read last night's list
        # after a run that says it went well (exit 0, and a fresh trace).
        unwritten: list[str] = []
        for what, path, problem in (
            ("the checksums file", loaded.checksums_file, checksums.write(loaded, results, rows)),
            ("the changes file", args.changes, records.write_changes(args.changes, outcome, state)),
        ):
            if problem is not None:
                print(f"bulkdl: {problem}", file=sys.stderr)
                unwritten.append(f"{what} {path}")
        about = replace(about, stopped=stopped, left=_left(loaded, results), refused=pruned.refused)
        elapsed = time.monotonic() - started
        unsaid = " and ".join(unwritten) or None
        outcome.code = finish(
            results, elapsed, args.report, about, outcome.earlier, unsaid, html_report=args.html_report
        )
    return outcome.code


def _prune(
    loaded: Manifest, rows: dict[str, Row], done: tuple[list[FileResult], bool], state: State, noting: bool
) -> prune.Pruned:
    """Prune if asked to, still holding the destination; each thing to tell goes to stderr at once."""
    if loaded.prune is None:
        return prune.Pruned()
    pruned = prune.after_run(loaded.dest, loaded.prune, loaded.jobs, rows, done, state, noting)
    for line in pruned.said:
        print(f"bulkdl: {line}", file=sys.stderr)
    return pruned


def _with_deadline(loaded: Manifest, started: float) -> Manifest:
    """The time budget counts from the start of the command: reading a big manifest is part of the run."""
    if loaded.max_duration is None:
        return loaded
    return replace(loaded, budget=replace(loaded.budget, deadline=started + loaded.max_duration))


def _left(loaded: Manifest, results: Sequence[FileResult]) -> Left | None:
    """What the time budget left for the next run: the files it stopped or never started."""
    if loaded.max_duration is None:
        return None
    left = [r for r in results if OUT_OF_TIME in r.notes]
    if not left:
        return None
    sizes = {job.index: job.size for job in loaded.jobs}
    remaining = unknown = 0
    for r in left:
        size = sizes.get(r.index)
        if size is None:
            unknown += 1
        else:
            remaining += max(0, size - r.transferred)
    return Left(loaded.max_duration, len(left), remaining, unknown)


@contextlib.contextmanager
def _recording(loaded: Manifest, changes: Path | None, began: datetime) -> Iterator[records.Outcome]:
    """However the run ends, while it still holds the destination: last-run.json, --changes, and the trace
    after a run that exits 0 (records.py)."""
    run = lastrun.Run.of(loaded.source, began)
    outcome = records.Outcome(EXIT_INTERNAL)  # until the run says otherwise: it raised
    try:
        yield outcome
    except KeyboardInterrupt:
        outcome.code = EXIT_INTERRUPTED
        raise
    except BulkdlError:
        outcome.code = EXIT_FAILED
        raise
    finally:
        for problem in records.leave(loaded, run, changes, outcome, outcome.code == EXIT_OK):
            print(f"bulkdl: {problem}", file=sys.stderr)
