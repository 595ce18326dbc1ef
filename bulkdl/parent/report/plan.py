"""``--dry-run``: what a run would do with each file, and why; the files it would skip as one count line."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from ..decide import CHECK, DOWNLOAD, RESUME, SKIP
from .page import Line, Page, Row, counted

_ACTION_STYLES = {DOWNLOAD: "green", RESUME: "yellow", CHECK: "cyan", SKIP: "dim"}


def plan_page(plan: Sequence[tuple[str, str, str]], title: str, full: bool = False) -> Page:
    """``plan``: (path, action, reason) per file, in manifest order."""
    lines: list[Line | Row] = [Line(title, "bold")]
    lines += [
        Row(((name, ""), (action, _ACTION_STYLES[action]), (reason, "")))
        for name, action, reason in plan
        if full or action != SKIP
    ]
    if not full:
        skipped = Counter(reason for _, action, reason in plan if action == SKIP)
        lines += [Line(f"{n:,} to skip ({reason})", "dim") for reason, n in skipped.items()]
    actions = Counter(action for _, action, _ in plan)
    kinds = ", ".join(f"{actions[a]:,} {a}" for a in (RESUME, DOWNLOAD, CHECK, SKIP) if actions[a])
    lines.append(
        Line(f"dry run: {counted(len(plan), 'file')}{f' ({kinds})' if kinds else ''}; nothing was done", "bold")
    )
    return Page(tuple(lines))
