"""The end of a command: its report, its summary, its exit code."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path

from ..exitcodes import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_OUT_OF_TIME, EXIT_PRUNE_CAPPED
from ..parent.manifest import Manifest
from ..parent.report.html import early_verdict, is_ours, write_html
from ..parent.report.jsonreport import Header, document, write_json
from ..parent.report.page import counted, glyph, print_page
from ..parent.report.summary import About, Earlier, Totals, label, summary_page, verdict
from ..parent.state import Row
from ..values import FileResult, Status

CHANGES, FULL = "changes", "full"  # --summary


def title(command: str, loaded: Manifest) -> str:
    return f"{command}: {counted(len(loaded.jobs), 'file')} {glyph('→', '->')} {loaded.dest}"


def make_about(
    command: str, loaded: Manifest, args: argparse.Namespace, started: datetime, repairing: bool = False
) -> About:
    shown = title(command, loaded)
    return About(shown, loaded.source.absolute(), started, args.summary == FULL, repairing, quiet=args.quiet)


def earlier(rows: Mapping[str, Row]) -> dict[str, Earlier]:
    return {path: (row.sha256, row.size) for path, row in rows.items()}


def finish(
    results: Sequence[FileResult],
    elapsed: float,
    report: Path | None,
    about: About,
    earlier: Mapping[str, Earlier],
    unwritten: str | None = None,
    command: str = "run",
    html_report: Path | None = None,
) -> int:
    """Write the report, print the summary, and choose the exit code (EXIT_PRECEDENCE); ``unwritten``: what
    the run could not write before (the checksums file), said on stderr already."""
    ordered = sorted(results, key=lambda r: r.index)
    totals = Totals.of(ordered, elapsed)
    code = _exit_code(totals, about, unwritten)
    # The reports first: a line saying one could not be written comes before the summary, and the verdict,
    # which says so too, stays last.
    if report is not None or html_report is not None:
        header = Header(command, about.manifest, about.started, code)
        unwritten = _write_reports(header, (ordered, totals, earlier), about, (report, html_report), unwritten)
        code = _exit_code(totals, about, unwritten)
    print_page(summary_page(ordered, totals, earlier, about, unwritten))
    return code


def _write_reports(
    header: Header,
    run: tuple[Sequence[FileResult], Totals, Mapping[str, Earlier]],
    about: About,
    paths: tuple[Path | None, Path | None],
    unwritten: str | None,
) -> str | None:
    """Write the JSON and the HTML report, both from one document; what could not be written, if anything."""
    results, totals, earlier = run
    report, html_report = paths
    doc = document(header, results, totals, earlier, about.repairing)
    if report is not None and not _wrote(report, "the report", lambda: write_json(report, doc)):
        unwritten = unwritten or f"the report {report}"
    if html_report is not None:
        # The page's verdict and exit code are the summary's, which a JSON report that failed has changed.
        shown = verdict(Counter(label(r, earlier, about.repairing) for r in results), totals, about, unwritten)
        doc = {**doc, "exit_code": _exit_code(totals, about, unwritten)}
        if not _wrote(html_report, "the HTML report", lambda: write_html(html_report, doc, shown.text)):
            unwritten = unwritten or f"the HTML report {html_report}"
    return unwritten


def _wrote(path: Path, what: str, write: Callable[[], None]) -> bool:
    try:
        write()
    except OSError as exc:  # a disk that filled, a directory removed since the check: the files are done
        print(f"bulkdl: could not write {what} {path}: {exc.strerror or exc}", file=sys.stderr)
        return False
    return True


def _exit_code(totals: Totals, about: About, unwritten: str | None) -> int:
    left = about.left.files if about.left is not None else 0  # interrupted by the time budget, not by a stop
    if about.stopped or totals.count(Status.INTERRUPTED) > left:
        return EXIT_INTERRUPTED
    if totals.bad or unwritten is not None:
        return EXIT_FAILED
    if left:
        return EXIT_OUT_OF_TIME
    return EXIT_PRUNE_CAPPED if about.refused is not None else EXIT_OK


def report_failure(report: Path, header: Header) -> None:
    """Write the report of a command that failed before it looked at its files. One that cannot be written
    is left unsaid: the failure itself was said, and is most often that very report.

    Only over nothing or over a report: a command that failed early (a bad manifest) cannot tell whether the
    path is one of the mirror's files, and must not replace one with its report."""
    if os.path.lexists(report) and not _is_report(report):
        return
    with contextlib.suppress(OSError):
        write_json(report, document(header, [], Totals.of([], 0.0), {}, repairing=False))


def html_failure(path: Path, header: Header) -> None:
    """The HTML report of a command that failed before it looked at its files, as report_failure's."""
    if os.path.lexists(path) and not is_ours(path):
        return
    doc = document(header, [], Totals.of([], 0.0), {}, repairing=False)
    with contextlib.suppress(OSError):
        write_html(path, doc, early_verdict(doc))


def _is_report(path: Path) -> bool:
    try:
        found = json.loads(path.read_bytes())
    except (OSError, ValueError):  # unreadable, or not JSON: not ours to replace
        return False
    return isinstance(found, dict) and "files" in found
