"""The command line: parses arguments and runs a command (commands/), the only code that chooses exit codes.

Exit codes: exitcodes.EXIT_CODES, re-exported here, which ``bulkdl run --help`` prints and the README's table
must match.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import traceback
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import __version__, helptext
from .commands.check import check_command
from .commands.finish import CHANGES, FULL, html_failure, report_failure
from .commands.run import run_command
from .commands.verify import verify_command
from .errors import INTERNAL, INTERRUPTED, BulkdlError, ClusterError, ManifestError, UnsafeOutput, UsageError
from .exitcodes import EXIT_CODES as EXIT_CODES
from .exitcodes import EXIT_FAILED, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_LOCKED, EXIT_OK, EXIT_USAGE
from .exitcodes import EXIT_OUT_OF_TIME as EXIT_OUT_OF_TIME
from .exitcodes import EXIT_PRECEDENCE as EXIT_PRECEDENCE
from .exitcodes import EXIT_PRUNE_CAPPED as EXIT_PRUNE_CAPPED
from .exitcodes import exit_code_table as exit_code_table
from .exitcodes import precedence as precedence
from .parent import generate, log, prune, schema, schema_json
from .parent.lock import Locked
from .parent.report import reportschema
from .parent.report.jsonreport import DESTINATION, LOCKED, MANIFEST, USAGE, Header
from .parent.schema import duration, max_delete, positive_size


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


def _scheduler(text: str) -> str:
    try:
        return schema.scheduler(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _existing_file(text: str) -> Path:
    if not Path(text).is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text}")
    return Path(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bulkdl",
        description="Mirror many files over HTTP(S) in one batch.",
        epilog=helptext.epilog(None),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"bulkdl {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="download every file the manifest lists",
        **_help("run"),
    )
    run.add_argument("manifest", type=Path, help=_MANIFEST)
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
    run.add_argument("--html-report", type=Path, metavar="FILE.html", help=_HTML_REPORT)
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
    run.add_argument(
        "--scheduler",
        type=_scheduler,
        metavar="tcp://HOST:8786",
        help="run the files on this Dask cluster (pip install 'bulkdl[dask]'); dest must be a mount all workers share",
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
        "--dry-run",
        action="store_true",
        help="say what would be fetched, and why, and count what would be checked or skipped; no network",
    )
    _prune_options(run)
    run.add_argument("--no-progress", action="store_true", help="no progress bars; the summary still prints in full")
    _summary_option(run)
    _log_options(run)
    run.set_defaults(handler=run_command)

    check = commands.add_parser("check", help="validate the manifest and exit", **_help("check"))
    check.add_argument("manifest", type=Path, help=_MANIFEST)
    check.add_argument("--dest", type=Path, help="destination directory (overrides the manifest's dest)")
    check.set_defaults(handler=check_command)

    verify_ = commands.add_parser(
        "verify", help="re-hash the files on disk against the manifest and the state; no network", **_help("verify")
    )
    verify_.add_argument("manifest", type=Path, help=_MANIFEST)
    verify_.add_argument("--dest", type=Path, help="destination directory (overrides the manifest's dest)")
    verify_.add_argument("--workers", type=_count(1, 256), help="hashing threads (default: one per core)")
    verify_.add_argument("--report", type=Path, metavar="FILE.json", help="also write a JSON report here")
    verify_.add_argument("--html-report", type=Path, metavar="FILE.html", help=_HTML_REPORT)
    verify_.add_argument(
        "--repair", action="store_true", help="then download the corrupt and missing files again (uses the network)"
    )
    verify_.add_argument("--ca-bundle", type=_existing_file, metavar="PEM", help="for --repair: trust these CAs")
    _summary_option(verify_)
    _log_options(verify_)
    verify_.set_defaults(handler=verify_command)
    _manifest_commands(commands)
    _schema_command(commands)
    shape = commands.add_parser(
        "report-schema", help="print the JSON Schema of the --report file", **_help("report-schema")
    )
    shape.set_defaults(handler=lambda args: _print_manifest(json.dumps(reportschema.schema(), indent=2) + "\n"))
    return parser


_MANIFEST = "the manifest: a YAML file listing the files (see the README)"
_HTML_REPORT = "also write the report as one self-contained web page here, tables sortable by column"


def _help(command: str) -> dict[str, Any]:
    """A subcommand's description, and its examples (and exit codes) below the options, as written."""
    return {
        "description": helptext.description(command),
        "epilog": helptext.epilog(command),
        "formatter_class": argparse.RawDescriptionHelpFormatter,
    }


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
        epilog=helptext.epilog("manifest"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    kinds = made.add_subparsers(dest="kind", required=True, metavar="KIND")
    sums = kinds.add_parser(
        "from-sums",
        help="from a checksum file: SHA256SUMS, `sha256sum --tag` output, MD5SUMS, B2SUMS...",
        **_help("from-sums"),
    )
    sums.add_argument("sums", type=Path, metavar="SUMS", help="the checksum file, as upstream publishes it")
    sums.add_argument(
        "--base-url", type=_base_url, required=True, metavar="URL", help="the URL of the directory the names are in"
    )
    sums.add_argument("--dest", metavar="DIR", help="the manifest's dest (default: the manifest's own directory)")
    sums.set_defaults(handler=lambda args: _print_manifest(generate.from_sums(args.sums, args.base_url, args.dest)))
    urls = kinds.add_parser("from-urls", help="from a list of URLs, one a line (# comments)", **_help("from-urls"))
    urls.add_argument("urls", type=Path, metavar="FILE", help="the file of URLs")
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
        "--quiet",
        "-q",
        action="store_true",
        help="print the failures and the verdict line only, no progress: for cron, which mails what is printed",
    )
    command.add_argument(
        "--summary",
        choices=(CHANGES, FULL),
        default=CHANGES,
        help="changes: failures and changed files, a count of the others (default); full: every file",
    )


def _log_options(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--verbose",
        "-v",
        action="store_true",
        help="log each event (below) as a JSON line on stderr; no progress bars when stderr is a terminal",
    )
    command.add_argument("--log-file", type=Path, metavar="FILE", help="append the same JSON lines to FILE")


def main(argv: Sequence[str] | None = None) -> int:
    _print_whatever_the_encoding()
    began = datetime.now(timezone.utc)
    args = build_parser().parse_args(argv)
    code = _run(args, began)
    log.finish(code)  # the log's last line, run_end, says the code the process exits with
    return code


def _run(args: argparse.Namespace, began: datetime) -> int:
    try:
        code: int = args.handler(args)
        return code
    except (ManifestError, UsageError) as exc:
        print(f"bulkdl: {exc}" if isinstance(exc, UsageError) else str(exc), file=sys.stderr)
        if isinstance(exc, UnsafeOutput):  # the report itself may be what would overwrite the mirror
            return EXIT_USAGE
        return _failed_early(args, began, EXIT_USAGE, (USAGE if isinstance(exc, UsageError) else MANIFEST, str(exc)))
    except Locked as exc:
        print(f"bulkdl: {exc}", file=sys.stderr)
        return _failed_early(args, began, EXIT_LOCKED, (LOCKED, str(exc)))
    except BulkdlError as exc:
        print(f"bulkdl: {exc}", file=sys.stderr)
        what = exc.code if isinstance(exc, ClusterError) else DESTINATION
        return _failed_early(args, began, EXIT_FAILED, (what, str(exc)))
    except KeyboardInterrupt:
        return _failed_early(args, began, EXIT_INTERRUPTED, (INTERRUPTED, "interrupted"))
    except Exception as exc:
        traceback.print_exc()
        print("bulkdl: internal error; please report it with the traceback above", file=sys.stderr)
        return _failed_early(args, began, EXIT_INTERNAL, (INTERNAL, f"{type(exc).__name__}: {exc}"))


def _failed_early(args: argparse.Namespace, began: datetime, code: int, error: tuple[str, str]) -> int:
    """A command that stopped before it could report on its files still replaces the --report (and the
    --html-report) an earlier one left: with no files, its exit code and why (jsonreport.py)."""
    written = ((getattr(args, "report", None), report_failure), (getattr(args, "html_report", None), html_failure))
    for path, write in written:
        if path is not None:
            write(path, Header(args.command, args.manifest.absolute(), began, code, error))
    return code


def _print_whatever_the_encoding() -> None:
    """A stdout that cannot encode a name (cron with LANG=C, PYTHONIOENCODING=latin-1) must never cost the
    run its summary: what it cannot encode is written as a backslash escape."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
