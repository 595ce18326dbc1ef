"""The words of ``--help`` beyond each option's own line: what a command is for, examples, the exit codes."""

from __future__ import annotations

import textwrap

from .exitcodes import exit_code_table
from .parent.log import EVENTS

PRECEDENCE = (
    "A setting given on the command line wins over the manifest's entry for a file, which wins over its "
    "defaults:, which win over bulkdl's built-in defaults (as with rclone's flags over its config)."
)
DESCRIPTIONS = {
    "run": "Download every file the manifest lists into its dest, resuming what an earlier run left and "
    "skipping what it proved current; verify each file, and put it in place atomically. " + PRECEDENCE,
    "check": "Validate the manifest, as run would, and exit: nothing is downloaded, nothing is written.",
    "verify": "Re-hash the files on disk against the manifest's digests and the ones earlier runs recorded, "
    "offline; the corrupt and missing ones are forgotten, so that the next run fetches them again.",
    "report-schema": "Print the JSON Schema (draft 2020-12) of the --report file, for validators and editors.",
}
_EXAMPLES = {
    None: (
        "bulkdl run mirror.yaml",
        "bulkdl check mirror.yaml",
        "bulkdl COMMAND --help",
    ),
    "run": (
        "bulkdl run mirror.yaml",
        "bulkdl run mirror.yaml --dry-run                      # what would be done, and why",
        "bulkdl run mirror.yaml --quiet --report last.json     # from cron: quiet unless a file failed",
        "bulkdl run mirror.yaml --max-duration 2h --limit-rate 20M",
        "bulkdl run mirror.yaml --prune --max-delete 5%        # remove what the manifest dropped",
    ),
    "check": ("bulkdl check mirror.yaml", "bulkdl check mirror.yaml --dest /srv/mirror"),
    "verify": (
        "bulkdl verify mirror.yaml",
        "bulkdl verify mirror.yaml --repair --report verify.json",
    ),
    "manifest": (
        "bulkdl manifest from-sums SHA256SUMS --base-url https://example.org/pub/ > mirror.yaml",
        "bulkdl manifest from-urls urls.txt > mirror.yaml",
    ),
    "from-sums": ("bulkdl manifest from-sums SHA256SUMS --base-url https://example.org/pub/ > mirror.yaml",),
    "from-urls": ("bulkdl manifest from-urls urls.txt --base-url https://example.org/pub/ > mirror.yaml",),
    "report-schema": ("bulkdl report-schema > report.schema.json",),
}
_WITH_EXIT_CODES = ("run", "verify")


def description(command: str) -> str | None:
    """What ``command`` is for, wrapped as argparse would (its raw formatter keeps the examples' lines)."""
    text = DESCRIPTIONS.get(command)
    return None if text is None else textwrap.fill(text, 79)


def epilog(command: str | None) -> str:
    """Examples of ``command`` (None: of bulkdl itself), and the exit-code table for those that download."""
    parts = ["examples:\n" + "\n".join(f"  {line}" for line in _EXAMPLES[command])]
    if command in _WITH_EXIT_CODES:
        parts += [_events(), exit_code_table()]
    return "\n\n".join(parts)


def _events() -> str:
    """The log's events and their keys, as -v and --log-file write them."""
    rows = [f"  {kind:<12}{keys}" for kind, keys, _ in EVENTS]
    return "\n".join(["log events (-v, --log-file; each line has ts, event and the file's path):", *rows])
