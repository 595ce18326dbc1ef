"""The command line: parses arguments, runs a command, and is the only place that chooses an exit code.

Exit codes: 0 every file present and verified; 1 some files failed (the others completed); 2 bad
invocation or invalid manifest; 130 interrupted; 70 an internal error (a bug: the traceback is printed).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from . import __version__, manifest
from .errors import BulkdlError, ManifestError, UsageError
from .fetch import FileResult
from .manifest import Manifest, Overrides
from .pool import Batch
from .report import ProgressView, Totals, print_summary, summary_table, write_json

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bulkdl", description="Mirror many files over HTTP(S) in one batch.")
    parser.add_argument("--version", action="version", version=f"bulkdl {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="download every file the manifest lists")
    run.add_argument("manifest", type=Path)
    run.add_argument("--dest", type=Path, help="destination directory (overrides the manifest's dest)")
    run.add_argument("--workers", type=_count(1, 256), help="worker processes (files at once)")
    run.add_argument("--segments", type=_count(1, 64), help="maximum segment threads per file")
    run.add_argument("--report", type=Path, metavar="FILE.json", help="also write a JSON report here")
    run.add_argument("--quiet", "-q", action="store_true", help="no progress output (the summary still prints)")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.set_defaults(handler=_run)

    check = commands.add_parser("check", help="validate the manifest and exit")
    check.add_argument("manifest", type=Path)
    check.add_argument("--dest", type=Path)
    check.set_defaults(handler=_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
        return code
    except (ManifestError, UsageError) as exc:
        print(f"bulkdl: {exc}" if isinstance(exc, UsageError) else str(exc), file=sys.stderr)
        return EXIT_USAGE
    except BulkdlError as exc:
        print(f"bulkdl: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception:
        traceback.print_exc()
        print("bulkdl: internal error; please report it with the traceback above", file=sys.stderr)
        return EXIT_INTERNAL


def _check(args: argparse.Namespace) -> int:
    loaded = manifest.load(args.manifest, Overrides(dest=args.dest))
    print(f"{args.manifest}: {len(loaded.jobs)} files into {loaded.dest}, valid")
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    loaded = manifest.load(args.manifest, Overrides(dest=args.dest, workers=args.workers, segments=args.segments))
    show_progress = sys.stdout.isatty() and not (args.quiet or args.no_progress)
    started = time.monotonic()
    results = _download(loaded, show_progress)
    ordered = sorted(results.values(), key=lambda r: r.index)
    totals = Totals.of(ordered, time.monotonic() - started)
    print_summary(summary_table(ordered, totals, f"bulkdl: {len(ordered)} files → {loaded.dest}"))
    if args.report is not None:
        write_json(args.report, ordered, totals)
    if totals.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_FAILED if totals.failed else EXIT_OK


def _download(loaded: Manifest, show_progress: bool) -> dict[int, FileResult]:
    results: dict[int, FileResult] = {}
    view = ProgressView(show_progress, {j.index: j.name for j in loaded.jobs}, {j.index: j.size for j in loaded.jobs})

    def finished(result: FileResult) -> None:
        results[result.index] = result
        view.finished(result)

    previous = signal.signal(signal.SIGTERM, _interrupt)
    batch = Batch(loaded.workers, max(j.settings.segments for j in loaded.jobs))
    try:
        with view:
            batch.run(loaded.jobs, view.tick, finished)
    finally:
        batch.close()
        signal.signal(signal.SIGTERM, previous)
    return results


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM winds down exactly like Ctrl-C: parts kept, summary printed, exit 130.
    raise KeyboardInterrupt
