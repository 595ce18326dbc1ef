"""What a YAML syntax error means to whoever wrote the manifest: the parser's words, plus how to fix it.

libyaml and PyYAML say what their grammar met ("found character that cannot start any token"); the person
at the terminal needs to know it was a tab, or an unquoted ``*.iso``. The rules look at the parser's problem
and context and at the character the error points to, and add one hint each.
"""

from __future__ import annotations

TAB_HINT = "YAML does not allow tabs for indentation; use spaces"
# (words in the parser's problem or context, the hint): the first that matches is given.
_BY_WORDS = (
    ("while scanning an alias", "a value starting with * is an alias in YAML; quote it: '*.iso'"),
    ("mapping values are not allowed", "a value holding ': ' must be quoted: key: \"a: b\""),
    ("while scanning a quoted scalar", "a quote is not closed"),
    ("while scanning a block scalar", "check the indentation of the text after | or >"),
    (
        "while parsing a block",
        "check the indentation: the keys of one mapping, and the dashes of one list, start in the same column",
    ),
)


def explain(problem: str, context: str | None, line_text: str, column: int) -> tuple[str, str | None]:
    """(what is wrong, a hint or None) for an error at 0-based ``column`` of ``line_text``."""
    here = line_text[column : column + 1]
    indent = line_text[: len(line_text) - len(line_text.lstrip(" \t"))]
    if here == "\t" or "\t" in indent:
        return "a tab character", TAB_HINT
    said = f"{problem} {context or ''}"
    for words, hint in _BY_WORDS:
        if words in said:
            return problem, hint
    if here in ("@", "`"):
        return f"a value cannot start with {here}", "YAML reserves it; quote the value"
    return problem, None


def context_worth_saying(context: str | None) -> bool:
    """The parser's context, unless it says only that it was looking for a token, as it always is."""
    return bool(context) and context != "while scanning for the next token"
