"""Exit codes: the one table of them, which ``bulkdl run --help`` prints and the README's must match."""

from __future__ import annotations

import textwrap

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


def exit_code_table() -> str:
    """The exit codes as --help shows them."""
    rows = [
        textwrap.fill(text, 79, initial_indent=f"  {code:<4} ", subsequent_indent=" " * 7) for code, text in EXIT_CODES
    ]
    return "\n".join(["exit codes:", *rows, precedence()])


def precedence() -> str:
    return f"When several apply, the first of {', '.join(map(str, EXIT_PRECEDENCE))} wins."
