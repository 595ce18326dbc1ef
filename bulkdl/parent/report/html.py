"""The HTML report (``--html-report FILE``): the JSON report's document as one page to open in a browser.

Built from the very document the JSON report is written from (jsonreport.document), so that the two cannot
disagree, and with the summary's verdict line word for word. Self-contained: the CSS and the few lines of
script that sort the tables are inline, and the page loads nothing (no font, no image, no link it follows),
so it opens the same from a mail attachment, a web server or a disk with no network. In the summary's order:
the verdict, what failed (path, code, message, URL), what was interrupted or is gone, what changed (with the
size and the full SHA-256), and what did not, in a closed ``<details>``. A click on a column's header sorts
every table of the page that has that column, and so does ``#sort=size`` (``#sort=-size``: descending) in
the address, so that a sorted page can be bookmarked.

Every text is escaped, and a name that is not UTF-8 shows as its backslash escape (``caf\\xe9.bin``), as on
the terminal. The unchanged files are listed up to UNCHANGED_SHOWN, the page saying how many it leaves out
(the JSON report has them all): 100,000 unchanged rows made a 19 MB page (too big to mail) that headless
chromium took 3.0 s to draw and 7.5 s to load and serialise, against 1.1 s for a page of 10 rows; 10,000 make
1.9 MB and 1.5 s. Failures and changes are never capped: each is news.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ... import durable
from ...sizes import format_size

UNCHANGED_SHOWN = 10_000
GENERATOR = "bulkdl"  # the <meta name="generator">: a page bulkdl may replace, not a user's file
_PROBLEMS = (
    ("failed", "Failed", ("failed", "corrupt", "missing")),
    ("interrupted", "Interrupted", ("interrupted",)),
    ("gone", "Gone upstream, local copy kept", ("gone",)),
)
_CHANGED = ("new", "updated", "re-fetched", "repaired", "removed")
_UNCHANGED = ("adopted", "unchanged", "not modified", "verified", "unverified")

File = Mapping[str, Any]
# A column: its key (for #sort=KEY), its heading, its cell's text, and the value it sorts by if not its text.
Column = tuple[str, str, Callable[[File], str], Callable[[File], int] | None]


def _size(f: File) -> str:
    return "-" if f["bytes"] is None else format_size(f["bytes"])


def _bytes(f: File) -> int:
    return -1 if f["bytes"] is None else int(f["bytes"])


_PATH: Column = ("path", "Path", lambda f: f["path"], None)
_STATUS: Column = ("status", "Status", lambda f: f["status"], None)
_SIZE: Column = ("size", "Size", _size, _bytes)
_SHA: Column = ("sha256", "SHA-256", lambda f: f["sha256"] or "", None)
_PROBLEM_COLUMNS = (
    _PATH,
    _STATUS,
    ("code", "Code", lambda f: f["code"] or "", None),
    ("message", "Message", lambda f: f["error"] or "", None),
    ("url", "URL", lambda f: f["url"], None),
)
_FILE_COLUMNS = (_PATH, _STATUS, _SIZE, _SHA)

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1a1a1a;background:#fff}
h1{font-size:1.15em;padding:.6em .8em;border-radius:4px;color:#fff;overflow-wrap:anywhere}
h1.ok{background:#1b7a2e}h1.failed{background:#b3261e}
h2{font-size:1.05em;margin-top:1.6em}
table{border-collapse:collapse;margin:.4em 0}
th,td{border:1px solid #ccc;padding:.2em .5em;text-align:left;vertical-align:top}
th{background:#eee;cursor:pointer;user-select:none;white-space:nowrap}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
td.n{text-align:right;white-space:nowrap}
td.d,td.u{font-family:ui-monospace,monospace;font-size:.9em;overflow-wrap:anywhere}
dl{display:grid;grid-template-columns:max-content auto;gap:.1em 1em}dt{color:#555}dd{margin:0}
summary{cursor:pointer;font-weight:600}
"""
# Sorting happens on a change of the address's #sort=, whether a click on a header or the user set it.
_JS = """
(function () {
  function value(row, i, numeric) {
    var cell = row.cells[i];
    return numeric ? Number(cell.getAttribute("data-v")) : cell.textContent;
  }
  function sortTable(table, key, descending) {
    var heads = table.tHead.rows[0].cells, i = -1;
    for (var h = 0; h < heads.length; h++) {
      heads[h].removeAttribute("aria-sort");
      if (heads[h].getAttribute("data-key") === key) i = h;
    }
    if (i < 0) return;
    heads[i].setAttribute("aria-sort", descending ? "descending" : "ascending");
    var numeric = heads[i].hasAttribute("data-numeric"), body = table.tBodies[0];
    var rows = Array.prototype.map.call(body.rows, function (r, n) { return [value(r, i, numeric), n, r]; });
    rows.sort(function (a, b) {
      var order = a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0;
      return (descending ? -order : order) || a[1] - b[1];
    });
    var sorted = document.createDocumentFragment();
    rows.forEach(function (r) { sorted.appendChild(r[2]); });
    body.appendChild(sorted);
  }
  function fromAddress() {
    var found = /^#sort=(-?)([a-z0-9]+)$/.exec(location.hash);
    if (!found) return;
    document.querySelectorAll("table.sortable").forEach(function (t) { sortTable(t, found[2], found[1] === "-"); });
  }
  document.querySelectorAll("table.sortable th").forEach(function (th) {
    th.addEventListener("click", function () {
      var up = th.getAttribute("aria-sort") === "ascending";
      location.hash = "sort=" + (up ? "-" : "") + th.getAttribute("data-key");
    });
  });
  window.addEventListener("hashchange", fromAddress);
  fromAddress();
})();
"""


def write_html(path: Path, doc: Mapping[str, Any], verdict: str) -> None:
    """Write the page of ``doc`` (a JSON report's document) at ``path``, atomically, as the JSON report is."""
    path.parent.mkdir(parents=True, exist_ok=True)
    durable.write_bytes(path, page(doc, verdict).encode())


def is_ours(path: Path) -> bool:
    """Whether ``path`` holds an HTML report, which a command that failed early may replace."""
    try:
        with path.open("rb") as found:
            head = found.read(1024)
    except OSError:
        return False
    return f'<meta name="generator" content="{GENERATOR}'.encode() in head


def early_verdict(doc: Mapping[str, Any]) -> str:
    """The verdict of a command that failed before it looked at any file: its exit code and why."""
    error = doc["error"] or {"message": "failed"}
    return f"FAILED (exit {doc['exit_code']}): {error['message']}"


def page(doc: Mapping[str, Any], verdict: str) -> str:
    files: Sequence[File] = doc["files"]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta name="generator" content="{GENERATOR} {_text(doc["bulkdl_version"])}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>bulkdl {_text(doc['command'])}: {_text(verdict.split(':', 1)[0])}</title>",
        f"<style>{_CSS}</style></head><body>",
        f'<h1 class="{"ok" if verdict.startswith("OK") else "failed"}">{_text(verdict)}</h1>',
        _about(doc),
    ]
    for key, heading, statuses in _PROBLEMS:
        parts += _section(key, heading, [f for f in files if f["status"] in statuses], _PROBLEM_COLUMNS)
    parts += _section("changed", "Changed", [f for f in files if f["status"] in _CHANGED], _FILE_COLUMNS)
    parts += _unchanged([f for f in files if f["status"] in _UNCHANGED])
    parts += [f"<script>{_JS}</script>", "</body></html>", ""]
    return "\n".join(parts)


def _about(doc: Mapping[str, Any]) -> str:
    totals: Mapping[str, int] = doc["totals"]
    counts = ", ".join(
        f"{n:,} {name}" for name, n in totals.items() if name not in ("bytes", "transferred", "elapsed_s") and n
    )
    rows = [
        ("files", f"{len(doc['files']):,}" + (f" ({counts})" if counts else "")),
        ("in place", format_size(totals["bytes"])),
        ("received", format_size(totals["transferred"])),
        ("manifest", doc["manifest"]),
        ("started", doc["started"]),
        ("ended", doc["ended"]),
        ("exit code", str(doc["exit_code"])),
        ("bulkdl", doc["bulkdl_version"]),
    ]
    if doc["error"] is not None:
        rows.append(("error", f"{doc['error']['code']}: {doc['error']['message']}"))
    items = "".join(f"<dt>{name}</dt><dd>{_text(value)}</dd>" for name, value in rows)
    return f'<dl id="about">{items}</dl>'


def _section(key: str, heading: str, files: Sequence[File], columns: Sequence[Column]) -> list[str]:
    if not files:
        return []
    return [f'<h2 id="{key}">{heading} ({len(files):,})</h2>', _table(key, files, columns)]


def _unchanged(files: Sequence[File]) -> list[str]:
    if not files:
        return []
    shown = files[:UNCHANGED_SHOWN]
    left = len(files) - len(shown)
    note = (
        f'<p id="unchanged-left">{left:,} more not listed here: the JSON report (--report) lists every file.</p>'
        if left
        else ""
    )
    return [
        f'<details id="unchanged"><summary>Unchanged ({len(files):,})</summary>',
        note,
        _table("unchanged", shown, _FILE_COLUMNS),
        "</details>",
    ]


def _table(key: str, files: Sequence[File], columns: Sequence[Column]) -> str:
    heads = "".join(
        f'<th data-key="{name}"{" data-numeric" if number else ""} title="sort by {heading.lower()}">{heading}</th>'
        for name, heading, _, number in columns
    )
    rows = "\n".join("<tr>" + "".join(_cell(f, column) for column in columns) + "</tr>" for f in files)
    return f'<table class="sortable" id="{key}-files"><thead><tr>{heads}</tr></thead><tbody>\n{rows}\n</tbody></table>'


def _cell(f: File, column: Column) -> str:
    name, _, text, number = column
    if number is not None:
        return f'<td class="n" data-v="{number(f)}">{_text(text(f))}</td>'
    kind = {"sha256": ' class="d"', "url": ' class="u"'}.get(name, "")
    return f"<td{kind}>{_text(text(f))}</td>"


def _text(value: str) -> str:
    """``value`` as HTML text: escaped, its control characters and what is not UTF-8 (a name's undecodable
    bytes, kept as surrogates) shown as backslash escapes."""
    try:
        value.encode()
    except UnicodeEncodeError:
        value = value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    if not value.isprintable():
        value = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in value)
    return html.escape(value, quote=True)
