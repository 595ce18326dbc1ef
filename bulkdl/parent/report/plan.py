"""``--dry-run``: what a run would do with each file, and why; the files it would only adopt, check or skip as a count
line per reason (a mirror without digests checks every file every night: 20,000 lines said nothing); and,
with prune, which files it would remove after a run where every file succeeded."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from ...sizes import format_size
from ..decide import ADOPT, CHECK, DOWNLOAD, RESUME, SKIP
from ..prune import LEAVE, REMOVE, Prune, refusal
from .page import Line, Page, Row, counted

_ACTION_STYLES = {
    DOWNLOAD: "green",
    RESUME: "yellow",
    ADOPT: "cyan",
    CHECK: "cyan",
    SKIP: "dim",
    REMOVE: "magenta",
    LEAVE: "dim",
}
_COUNTED = (ADOPT, CHECK, SKIP)  # listed file by file only in --summary full
Preview = tuple[Prune, Sequence[tuple[str, str, str]]]  # the plan, and (path, REMOVE or LEAVE, why) per file


def plan_page(
    plan: Sequence[tuple[str, str, str]],
    title: str,
    full: bool = False,
    pruning: Preview | None = None,
    sizes: Sequence[int | None] = (),
) -> Page:
    """``plan``: (path, action, reason) per file, in manifest order; ``sizes``: the manifest's size of each."""
    lines: list[Line | Row] = [Line(title, "bold")]
    lines += [
        Row(((name, ""), (action, _ACTION_STYLES[action]), (reason, "")))
        for name, action, reason in plan
        if full or action not in _COUNTED
    ]
    if not full:
        tally = Counter((action, reason) for _, action, reason in plan if action in _COUNTED)
        lines += [
            Line(f"{n:,} to {action} ({reason})", _ACTION_STYLES[action])
            for action in _COUNTED
            for (of, reason), n in tally.items()
            if of == action
        ]
    removing = _prune_lines(*pruning) if pruning is not None else []
    lines += removing
    actions = Counter(action for _, action, _ in plan)
    kinds = ", ".join(f"{actions[a]:,} {a}" for a in (RESUME, DOWNLOAD, ADOPT, CHECK, SKIP) if actions[a])
    lines.append(
        Line(
            f"dry run: {counted(len(plan), 'file')}{f' ({kinds})' if kinds else ''}{_to_fetch(plan, sizes)}; "
            "nothing was done",
            "bold",
        )
    )
    return Page(tuple(lines))


def _to_fetch(plan: Sequence[tuple[str, str, str]], sizes: Sequence[int | None]) -> str:
    """How much the run would download at most: a resume fetches less; a check nothing if not modified, and
    if modified a new version of a size no one knows yet (a trial read "up to 178 MiB" and got 234 MiB)."""
    if not sizes:
        return ""
    # An adopted file is fetched only if its bytes turn out not to match: "at most" counts it.
    fetched = [size for (_, action, _), size in zip(plan, sizes, strict=True) if action in (DOWNLOAD, RESUME, ADOPT)]
    checks = " besides what the checks find changed" if any(action == CHECK for _, action, _ in plan) else ""
    if not fetched:
        return f", nothing to fetch{checks}" if checks else ""
    unknown = fetched.count(None)
    known = format_size(sum(size or 0 for size in fetched))
    if unknown == len(fetched):
        return f", size to fetch unknown{checks}"
    return (
        f", up to {known} to fetch" + (f" and {counted(unknown, 'file')} of unknown size" if unknown else "") + checks
    )


def _prune_lines(prune: Prune, files: Sequence[tuple[str, str, str]]) -> list[Line | Row]:
    if not files:
        return [Line("prune: nothing to remove", "dim")]
    going = sum(action == REMOVE for _, action, _ in files)
    if prune.refused:
        head = Line(f"prune would refuse: {refusal(prune)}; a run would remove nothing and exit 4", "bold red")
    else:
        head = Line(f"prune, if every file succeeds: {counted(going, 'file')} to remove", "bold magenta")
    return [head, *(Row(((name, ""), (action, _ACTION_STYLES[action]), (why, ""))) for name, action, why in files)]
