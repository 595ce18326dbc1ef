"""Pages of text: the summary and the --dry-run plan, laid out from their strings alone, and printed.

A page is a sequence of lines, each either one text or a row of cells. A column is as wide as its longest
string on the page: no measuring pass per cell (rich's Table measured each one, ~18 s for 20,000 rows),
the last column is never padded, nothing is folded or cut, and no line ends in a space. Not on a terminal
(cron mail, a pipe): plain text, no escape codes. On a terminal: the same lines, coloured through rich, and
a line longer than the window wraps as the terminal wraps it.
"""

from __future__ import annotations

import codecs
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from rich.cells import cell_len
from rich.color import ColorSystem
from rich.console import COLOR_SYSTEMS, Console
from rich.style import Style

Cell = tuple[str, str]  # (text, rich style; "" for none)
_GAP = "  "  # between columns
_INDENT = "  "  # a row's
_UNDER = "      "  # what is shown under a row (notes): indented further than the rows, to read as theirs


@dataclass(frozen=True, slots=True)
class Line:
    text: str
    style: str = ""
    indent: int = 0


@dataclass(frozen=True, slots=True)
class Row:
    cells: tuple[Cell, ...]
    under: tuple[Cell, ...] = ()  # lines below the row, indented: notes, a previous digest


@dataclass(frozen=True, slots=True)
class Page:
    """Lines of text and rows, every row with as many cells as the others."""

    lines: tuple[Line | Row, ...]
    right: frozenset[int] = frozenset()  # the columns aligned right (numbers)


def counted(n: int, noun: str) -> str:
    """``1 file``, ``20,000 files``."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def glyph(fancy: str, plain: str, stream: TextIO | None = None) -> str:
    """``fancy`` where the encoding of ``stream`` (stdout) can show it, else its ASCII stand-in."""
    try:
        fancy.encode(_encoding(stream or sys.stdout))
    except (UnicodeEncodeError, LookupError):
        return plain
    return fancy


def print_page(page: Page, file: TextIO | None = None) -> None:
    stream = file or sys.stdout
    lines = [_trimmed(line) for line in layout(page, _encoding(stream))]
    console = Console(file=stream)
    # Colours only on a terminal that takes them (not NO_COLOR, not TERM=dumb). Each fragment is painted on
    # its own, not through a rich Text: its wrapping pass took 1.5 s for 20,000 rows, and the terminal wraps.
    colours = COLOR_SYSTEMS.get(console.color_system or "") if console.is_terminal else None
    paint = _painter(colours, console.no_color)
    stream.write("".join("".join(paint(text, style) for text, style in line) + "\n" for line in lines))
    stream.flush()


def _painter(colours: ColorSystem | None, no_color: bool) -> Callable[[str, str], str]:
    """What renders a fragment: NO_COLOR (no-color.org) takes the colours away, bold and the like stay."""

    def paint(text: str, style: str) -> str:
        if not style:
            return text
        parsed = Style.parse(style)
        return (parsed.without_color if no_color else parsed).render(text, color_system=colours)

    return paint


def _trimmed(line: list[Cell]) -> list[Cell]:
    """``line`` without the white space it ends in."""
    while line and not line[-1][0].rstrip():
        line = line[:-1]
    if line:
        text, style = line[-1]
        line = [*line[:-1], (text.rstrip(), style)]
    return line


def layout(page: Page, encoding: str) -> list[list[Cell]]:
    """Each line of ``page`` as its fragments, padded into columns; what ``encoding`` cannot show is
    escaped first (``caf\\xe9.bin``), so that widths count what will be printed."""
    fit = _fitting(encoding)
    rows = [line for line in page.lines if isinstance(line, Row)]
    texts = [[fit(text) for text, _ in row.cells] for row in rows]
    sizes = [[_width(text) for text in row] for row in texts]
    widths = [max(column) for column in zip(*sizes, strict=True)]
    laid = iter(zip(rows, texts, sizes, strict=True))
    out: list[list[Cell]] = []
    for line in page.lines:
        if isinstance(line, Line):
            out.append([(" " * line.indent + fit(line.text), line.style)])
            continue
        row, row_texts, row_sizes = next(laid)
        out.append(_row(row_texts, [style for _, style in row.cells], row_sizes, widths, page.right))
        out.extend([(_UNDER + fit(text), style)] for text, style in row.under)
    return out


def _row(texts: list[str], styles: list[str], sizes: list[int], widths: list[int], right: frozenset[int]) -> list[Cell]:
    """One row's fragments: each styled cell alone, the unstyled text between them in one piece."""
    out: list[Cell] = []
    plain = _INDENT
    last = len(texts) - 1
    for column, (text, style, size, width) in enumerate(zip(texts, styles, sizes, widths, strict=True)):
        pad = " " * (width - size)
        if column in right:
            plain += pad
        if style:
            out += [(plain, ""), (text, style)]
            plain = ""
        else:
            plain += text
        if column < last:
            plain += ("" if column in right else pad) + _GAP
    out.append((plain, ""))
    return out


def _width(text: str) -> int:
    """Columns on a terminal: a wide character (CJK) takes two."""
    return len(text) if text.isascii() else cell_len(text)


def _fitting(encoding: str) -> Callable[[str], str]:
    """What makes a text printable in ``encoding``: control characters (a hostile server's reason could hold
    an escape sequence, or a line break) and what the encoding cannot show become backslash escapes."""
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        name = "ascii"
    shows_all = name.startswith("utf")

    def fit(text: str) -> str:
        if not text.isprintable():
            text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)
        if shows_all or text.isascii():
            return text
        return text.encode(name, "backslashreplace").decode(name)

    return fit


def _encoding(stream: TextIO) -> str:
    # A stream without an encoding (io.StringIO) holds any text.
    return getattr(stream, "encoding", None) or "utf-8"
