"""The command line: parses arguments, runs a command, and is the only place that chooses an exit code.

Exit codes: EXIT_CODES below, which ``bulkdl run --help`` prints and the README's table must match.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import signal
import sqlite3
import sys
import textwrap
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType

from . import __version__
from .errors import BulkdlError, ManifestError, UsageError
from .parent import checksums, generate, lastrun, manifest, outputs, prune, records, schema, schema_json
from .parent.lock import DestinationLock, Locked
from .parent.manifest import Manifest, Overrides
from .parent.pool import OUT_OF_TIME
from .parent.report.jsonreport import write_json
from .parent.report.page import counted, glyph, print_page
from .parent.report.plan import plan_page
from .parent.report.summary import About, Earlier, Left, Totals, summary_page
from .parent.run import decide_all, download, redownload
from .parent.schema import duration, max_delete, positive_size
from .parent.state import Row, State, UnreadableState, read_rows
from .parent.verify import CORRUPT, MISSING, verify
from .values import FileResult, Status

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_LOCKED = 3
EXIT_PRUNE_CAPPED = 4
EXIT_OUT_OF_TIME = 5
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130
# Every exit code with the situation it stands for: the one source of --help's table and the README's.
EXIT_CODES = (
    (EXIT_OK, "every file is present and verified (downloaded, or proven unchanged)"),
    (
        EXIT_FAILED,
        "some files failed (for verify: missing or corrupt, and not repaired), or prune could not remove one; every "
        "other file completed; or the report or the checksums file could not be written at the end",
    ),
    (
        EXIT_USAGE,
        "bad invocation, invalid manifest, or a --report, --changes, --checksums-file or --backup-dir that cannot be "
        "used; nothing was downloaded",
    ),
    (EXIT_LOCKED, "another bulkdl run holds the destination; this one did nothing"),
    (EXIT_PRUNE_CAPPED, "prune refused: more files to remove than max_delete allows; nothing was removed"),
    (EXIT_OUT_OF_TIME, "--max-duration reached: the files left are resumable by the next run; the others completed"),
    (EXIT_INTERNAL, "internal error (a bug): the traceback is printed, please report it"),
    (EXIT_INTERRUPTED, "interrupted (Ctrl-C or SIGTERM); part files are kept for the next run"),
)
EXIT_PRECEDENCE = (EXIT_INTERRUPTED, EXIT_FAILED, EXIT_OUT_OF_TIME, EXIT_PRUNE_CAPPED)  # when several apply
CHANGES, FULL = "changes", "full"  # --summary


def _count(low: int, high: int) -> Callable[[str], int]:
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected {low} to {high}, got {value}")
        return value

    return convert


def _rate(text: str) -> int:
    try:
        return positive_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _max_delete(text: str) -> prune.Cap:
    try:
        return max_delete(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _duration(text: str) -> float:
    try:
        return duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def exit_code_table() -> str:
    """The exit codes as --help shows them."""
    rows = [
        textwrap.fill(text, 79, initial_indent=f"  {code:<4} ", subsequent_indent=" " * 7) for code, text in EXIT_CODES
    ]
    return "\n".join(["exit codes:", *rows, precedence()])


def precedence() -> str:
    return f"When several apply, the first of {', '.join(map(str, EXIT_PRECEDENCE))} wins."


def _existing_file(text: str) -> Path:
    if not Path(text).is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text}")
    return Path(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bulkdl", description="Mirror many files over HTTP(S) in one batch.")
    parser.add_argument("--version", action="version", version=f"bulkdl {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="download every file the manifest lists",
        epilog=exit_code_table(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("manifest", type=Path)
    run.add_argument("--dest", type=Path, help="destination directory (overrides the manifest's dest)")
    run.add_argument("--workers", type=_count(1, 256), help="worker processes: CPU for hashing (default: one per core)")
    run.add_argument(
        "--connections", type=_count(1, 1024), metavar="N", help="connections open at once over the run (default 16)"
    )
    run.add_argument(
        "--max-connections-per-host", type=_count(1, 1024), metavar="N", help="of which to one host (default 8)"
    )
    run.add_argument("--limit-rate", type=_rate, metavar="RATE", help="bytes a second for the whole run, e.g. 50M")
    run.add_argument("--segments", type=_count(1, 64), help="maximum segment threads per file")
    run.add_argument("--report", type=Path, metavar="FILE.json", help="also write a JSON report here")
    run.add_argument(
        "--checksums-file",
        type=Path,
        metavar="FILE",
        help="after the run, write the mirror's SHA-256 sums here, for `cd DEST && sha256sum -c FILE`",
    )
    run.add_argument(
        "--max-duration",
        type=_duration,
        metavar="DURATION",
        help="from the start, start no file after this long and stop the running ones, resumable (90s, 30m, 2h)",
    )
    run.add_argument("--trace", type=Path, metavar="FILE", help="after a run without failure, write a trace here")
    run.add_argument(
        "--changes", type=Path, metavar="FILE", help="write the paths added (+), updated (M) and removed (-) here"
    )
    run.add_argument("--ca-bundle", type=_existing_file, metavar="PEM", help="trust these CA certificates for HTTPS")
    run.add_argument("--force", action="store_true", help="download every file again, whatever earlier runs recorded")
    run.add_argument(
        "--revalidate",
        action=argparse.BooleanOptionalAction,
        help="ask the server about every file, even one its pinned digest proves current: a file upstream changed "
        "fails and keeps the copy on disk, one it removed is reported gone (default: the manifest's revalidate:)",
    )
    run.add_argument(
        "--dry-run", action="store_true", help="say what would be done with each file, and why; no network"
    )
    _prune_options(run)
    run.add_argument("--quiet", "-q", action="store_true", help="no progress output (the summary still prints)")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    _summary_option(run)
    run.set_defaults(handler=_run)

    check = commands.add_parser("check", help="validate the manifest and exit")
    check.add_argument("manifest", type=Path)
    check.add_argument("--dest", type=Path)
    check.set_defaults(handler=_check)

    verify_ = commands.add_parser(
        "verify", help="re-hash the files on disk against the manifest and the state; no network"
    )
    verify_.add_argument("manifest", type=Path)
    verify_.add_argument("--dest", type=Path)
    verify_.add_argument("--workers", type=_count(1, 256))
    verify_.add_argument("--report", type=Path, metavar="FILE.json")
    verify_.add_argument(
        "--repair", action="store_true", help="then download the corrupt and missing files again (uses the network)"
    )
    verify_.add_argument("--ca-bundle", type=_existing_file, metavar="PEM", help="for --repair: trust these CAs")
    _summary_option(verify_)
    verify_.set_defaults(handler=_verify)
    _manifest_commands(commands)
    _schema_command(commands)
    return parser


def _prune_options(run: argparse.ArgumentParser) -> None:
    run.add_argument(
        "--prune",
        action=argparse.BooleanOptionalAction,
        help="after a run where every file succeeded, remove the files earlier runs installed that the manifest "
        "no longer lists (--no-prune: not this time, whatever the manifest says)",
    )
    run.add_argument(
        "--max-delete",
        type=_max_delete,
        metavar="N|P%",
        help="prune nothing, and exit 4, if more files than this would go (default 10%% of those bulkdl knows)",
    )
    run.add_argument("--backup-dir", type=Path, metavar="DIR", help="prune moves files here instead of deleting")


def _manifest_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    made = commands.add_parser(
        "manifest",
        help="print a manifest made from what upstream publishes",
        description="Print a manifest to stdout, e.g. bulkdl manifest from-sums SHA256SUMS --base-url URL > m.yaml",
    )
    kinds = made.add_subparsers(dest="kind", required=True, metavar="KIND")
    sums = kinds.add_parser(
        "from-sums", help="from a checksum file: SHA256SUMS, `sha256sum --tag` output, MD5SUMS, B2SUMS..."
    )
    sums.add_argument("sums", type=Path, metavar="SUMS")
    sums.add_argument(
        "--base-url", type=_base_url, required=True, metavar="URL", help="the URL of the directory the names are in"
    )
    sums.add_argument("--dest", metavar="DIR", help="the manifest's dest (default: the manifest's own directory)")
    sums.set_defaults(handler=lambda args: _print_manifest(generate.from_sums(args.sums, args.base_url, args.dest)))
    urls = kinds.add_parser("from-urls", help="from a list of URLs, one a line (# comments)")
    urls.add_argument("urls", type=Path, metavar="FILE")
    urls.add_argument(
        "--base-url", type=_base_url, metavar="URL", help="keep each URL's tree below this one (default: last segment)"
    )
    urls.add_argument("--dest", metavar="DIR", help="the manifest's dest (default: the manifest's own directory)")
    urls.set_defaults(handler=lambda args: _print_manifest(generate.from_urls(args.urls, args.base_url, args.dest)))


def _schema_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    printed = commands.add_parser(
        "schema",
        help="print the manifest's JSON Schema, for editors",
        description="Print the manifest's JSON Schema (draft 2020-12), e.g. bulkdl schema > manifest.schema.json, "
        "then start a manifest with # yaml-language-server: $schema=manifest.schema.json",
    )
    printed.set_defaults(handler=lambda args: _print_manifest(schema_json.text()))


def _base_url(text: str) -> str:
    try:
        return schema.base_url(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _print_manifest(text: str) -> int:
    """A manifest is a UTF-8 file whatever the terminal's encoding: the bytes go out as they are."""
    sys.stdout.flush()
    sys.stdout.buffer.write(text.encode())
    sys.stdout.buffer.flush()
    return EXIT_OK


def _summary_option(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--summary",
        choices=(CHANGES, FULL),
        default=CHANGES,
        help="changes: failures and changed files, a count of the others (default); full: every file",
    )


def main(argv: Sequence[str] | None = None) -> int:
    _print_whatever_the_encoding()
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
        return code
    except (ManifestError, UsageError) as exc:
        print(f"bulkdl: {exc}" if isinstance(exc, UsageError) else str(exc), file=sys.stderr)
        return EXIT_USAGE
    except Locked as exc:
        print(f"bulkdl: {exc}", file=sys.stderr)
        return EXIT_LOCKED
    except BulkdlError as exc:
        print(f"bulkdl: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception:
        traceback.print_exc()
        print("bulkdl: internal error; please report it with the traceback above", file=sys.stderr)
        return EXIT_INTERNAL


def _print_whatever_the_encoding() -> None:
    """A stdout that cannot encode a name (cron with LANG=C, PYTHONIOENCODING=latin-1) must never cost the
    run its summary: what it cannot encode is written as a backslash escape."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")


def _title(command: str, loaded: Manifest) -> str:
    return f"{command}: {counted(len(loaded.jobs), 'file')} {glyph('→', '->')} {loaded.dest}"


def _about(
    command: str, loaded: Manifest, args: argparse.Namespace, started: datetime, repairing: bool = False
) -> About:
    return About(_title(command, loaded), loaded.source.absolute(), started, args.summary == FULL, repairing)


def _earlier(rows: Mapping[str, Row]) -> dict[str, Earlier]:
    return {path: (row.sha256, row.size) for path, row in rows.items()}


def _check(args: argparse.Namespace) -> int:
    loaded = manifest.load(args.manifest, Overrides(dest=args.dest))
    print(f"{args.manifest}: {len(loaded.jobs)} files into {loaded.dest}, valid")
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
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
    )
    loaded = _with_deadline(manifest.load(args.manifest, overrides), started)
    if args.dry_run:
        recorded = _recorded(loaded.dest)
        decisions = decide_all(loaded, recorded, args.force)
        plan = [(job.name, d.action, d.reason) for job, d in zip(loaded.jobs, decisions, strict=True)]
        pruning = None if loaded.prune is None else prune.preview(loaded.dest, loaded.prune, loaded.jobs, recorded)
        print_page(plan_page(plan, _title("bulkdl --dry-run", loaded), args.summary == FULL, pruning))
        return EXIT_OK
    # What the run writes besides the mirror: each checked before anything is fetched, never onto the mirror.
    written = [(args.report, "the report"), (args.changes, "the changes file"), (loaded.trace, "the trace")]
    for target, what in [*written, (loaded.checksums_file, "the checksums file")]:
        outputs.check(loaded, target, what)
    show_progress = sys.stdout.isatty() and not (args.quiet or args.no_progress)
    about = _about("bulkdl", loaded, args, began)
    with _stoppable(), _destination(loaded.dest) as state, _recording(loaded, args.changes, began) as outcome:
        rows = state.rows()
        decisions = decide_all(loaded, rows, args.force)
        results, stopped = download(loaded, decisions, rows, state, show_progress)
        pruned = _prune(loaded, rows, (results, stopped), state)
        state.commit()  # renames durable before the checksums file names them; what was not recorded is said now
        _say_what_was_not_recorded(state)
        results += pruned.results
        outcome.results, outcome.earlier = results, _earlier(rows)
        # Each makes the run fail if it cannot be written: a downstream sync must not read last night's list
        # after a run that says it went well (exit 0, and a fresh trace).
        unwritten: list[str] = []
        for what, path, problem in (
            ("the checksums file", loaded.checksums_file, checksums.write(loaded, results, rows)),
            ("the changes file", args.changes, records.write_changes(args.changes, outcome)),
        ):
            if problem is not None:
                print(f"bulkdl: {problem}", file=sys.stderr)
                unwritten.append(f"{what} {path}")
        about = replace(about, stopped=stopped, left=_left(loaded, results), refused=pruned.refused)
        elapsed = time.monotonic() - started
        outcome.code = _finish(results, elapsed, args.report, about, outcome.earlier, " and ".join(unwritten) or None)
    return outcome.code


def _prune(loaded: Manifest, rows: dict[str, Row], done: tuple[list[FileResult], bool], state: State) -> prune.Pruned:
    """Prune if asked to, still holding the destination; each thing to tell goes to stderr at once."""
    if loaded.prune is None:
        return prune.Pruned()
    pruned = prune.after_run(loaded.dest, loaded.prune, loaded.jobs, rows, done, state)
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


@contextlib.contextmanager
def _stoppable() -> Iterator[None]:
    """SIGTERM winds a download down exactly like Ctrl-C: parts kept, summary printed, exit 130."""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _destination(dest: Path) -> Iterator[State]:
    """Lock the destination and open its state; a destination that cannot be written is one clear error."""
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(DestinationLock(dest))
            state = stack.enter_context(State(dest))
        except (OSError, sqlite3.Error) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise BulkdlError(f"cannot use the destination {dest}: {reason}") from None
        if state.set_aside is not None:
            print(f"bulkdl: {state.set_aside}", file=sys.stderr)
        yield state


def _recorded(dest: Path) -> dict[str, Row]:
    """The state's rows for a read-only command; one that cannot be read is said once and read as empty."""
    try:
        return read_rows(dest)
    except UnreadableState as exc:
        print(f"bulkdl: {exc}", file=sys.stderr)
        return {}


def _say_what_was_not_recorded(state: State) -> None:
    if state.problem is not None:
        print(
            f"bulkdl: could not record this run in the state ({state.problem}); the next run re-checks its files",
            file=sys.stderr,
        )
    if state.unrecorded:
        first, *others = state.unrecorded
        more, them = (f" and {len(others)} more files", "them") if others else ("", "it")
        print(
            f"bulkdl: could not record {first}{more} in the state; the next run downloads {them} again", file=sys.stderr
        )


def _verify(args: argparse.Namespace) -> int:
    began, started = datetime.now(timezone.utc), time.monotonic()
    overrides = Overrides(dest=args.dest, workers=args.workers, ca_bundle=args.ca_bundle)
    loaded = manifest.load(args.manifest, overrides)
    outputs.check(loaded, args.report, "the report")
    about = _about("bulkdl verify --repair" if args.repair else "bulkdl verify", loaded, args, began, args.repair)
    rows = _recorded(loaded.dest)
    results = verify(loaded.jobs, rows, loaded.workers)
    found = [r for r in results if r.status in (CORRUPT, MISSING)]
    stopped = False
    if found:
        results, stopped = _act_on(loaded, results, found, rows, args.repair)
    about = replace(about, stopped=stopped)
    return _finish(results, time.monotonic() - started, args.report, about, {})  # it downloads only to repair


def _act_on(
    loaded: Manifest, results: list[FileResult], found: list[FileResult], rows: dict[str, Row], repair: bool
) -> tuple[list[FileResult], bool]:
    """Forget the state's rows of the files verify found broken, so that the next run fetches them (it would
    skip them: their size and mtime still match); with ``repair``, fetch them now."""
    stale = [rows[r.name] for r in found if r.name in rows]
    if not (stale or repair):
        return results, False  # nothing to write: no lock to take
    try:
        with _stoppable(), _destination(loaded.dest) as state:
            for row in stale:
                state.forget(row)
            state.commit()
            fixed, stopped = redownload(loaded, found, state, sys.stdout.isatty()) if repair else ([], False)
        _say_what_was_not_recorded(state)
    except BulkdlError as exc:  # another run holds the destination, or it cannot be written: still report
        left = "nothing was repaired and the state" if repair else "the state"
        print(f"bulkdl: {exc}; {left} was left as it is", file=sys.stderr)
        return results, False
    by_index = {r.index: r for r in fixed}
    return [by_index.get(r.index, r) for r in results], stopped


def _finish(
    results: Sequence[FileResult],
    elapsed: float,
    report: Path | None,
    about: About,
    earlier: Mapping[str, Earlier],
    unwritten: str | None = None,
) -> int:
    """Write the report, print the summary, and choose the exit code (EXIT_PRECEDENCE); ``unwritten``: what
    the run could not write before (the checksums file), said on stderr already."""
    ordered = sorted(results, key=lambda r: r.index)
    totals = Totals.of(ordered, elapsed)
    # The report first: a line saying it could not be written comes before the summary, and the verdict,
    # which says so too, stays last.
    if report is not None:
        try:
            write_json(report, ordered, totals)
        except OSError as exc:  # a disk that filled, a directory removed since the check: the files are done
            print(f"bulkdl: could not write the report {report}: {exc.strerror or exc}", file=sys.stderr)
            unwritten = unwritten or f"the report {report}"
    print_page(summary_page(ordered, totals, earlier, about, unwritten))
    left = about.left.files if about.left is not None else 0  # interrupted by the time budget, not by a stop
    if about.stopped or totals.count(Status.INTERRUPTED) > left:
        return EXIT_INTERRUPTED
    if totals.bad or unwritten is not None:
        return EXIT_FAILED
    if left:
        return EXIT_OUT_OF_TIME
    return EXIT_PRUNE_CAPPED if about.refused is not None else EXIT_OK


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt
