"""The HTML report (--html-report), opened in a real headless chromium: it renders, its tables hold the right
files, they sort by the address's #sort=, and the page logs no console error. Chromium only ever opens
file:// pages here, and resolves no host name at all."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest

from bulkdl.parent.report import html

from . import cdp, png
from .conftest import cli_env, run_cli, write_manifest
from .httpserver import FaultServer, content

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"), reason="chromium is not installed (apt-get install chromium)"
)
ODD = "odd <b>&\"q'.bin"  # a name that is markup if not escaped
RED = (0xB3, 0x26, 0x1E)  # the FAILED verdict's background (html._CSS)
_ELEMENTS = frozenset(("html", "head", "body", "meta", "title", "style", "script", "h1", "h2", "details", "summary"))
_ELEMENTS |= {"p", "dl", "dt", "dd", "table", "thead", "tbody", "tr", "th", "td"}


def _argv(tmp_path: Path) -> list[str]:
    assert CHROMIUM is not None, "chromium is not installed; .ci/run must install it"
    return [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--host-resolver-rules=MAP * ~NOTFOUND",  # no name resolves: nothing but file:// can load
        f"--user-data-dir={tmp_path / 'chromium'}",
        "--enable-logging=stderr",
        "--v=0",
    ]


def _chromium(tmp_path: Path, page: Path, *how: str, fragment: str = "") -> subprocess.CompletedProcess[str]:
    argv = [*_argv(tmp_path), *how, page.as_uri() + fragment]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    _no_console_message(done.stderr.splitlines())
    return done


def _no_console_message(log: list[str]) -> None:
    # Each console message of the page is logged as INFO:CONSOLE; the page has none to say, errors least.
    console = [line for line in log if ":CONSOLE" in line or "Uncaught" in line]
    assert not console, console


class _Tables(HTMLParser):
    """The text of every cell of every table, by table id; each header's data-key and aria-sort."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, list[list[str]]] = {}
        self.heads: dict[str, list[tuple[str, str | None]]] = {}
        self.h1 = ""
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._in_h1 = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        assert tag in _ELEMENTS, f"an element the page never makes: {tag}"
        if tag == "table":
            self._table = found["id"] or ""
            self.rows[self._table], self.heads[self._table] = [], []
        elif tag == "th" and self._table:
            self.heads[self._table].append((found["data-key"] or "", found.get("aria-sort")))
        elif tag == "tr" and self._table and self.heads[self._table]:
            self.rows[self._table].append([])
        elif tag == "td" and self._table:
            self._cell = []
        elif tag == "h1":
            self._in_h1 = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._table = None
        elif tag == "td" and self._table and self._cell is not None:
            self.rows[self._table][-1].append("".join(self._cell))
            self._cell = None
        elif tag == "h1":
            self._in_h1 = False

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._in_h1:
            self.h1 += data


def _tables(dom: str) -> _Tables:
    parsed = _Tables()
    parsed.feed(dom)
    return parsed


@pytest.fixture
def report(builtin: FaultServer, tmp_path: Path) -> Iterator[Path]:
    """The HTML report of a second run: one file updated, one new, one failed, two unchanged."""
    same = content("same", 3000)
    urls = {
        "same.bin": builtin.add("same.bin", same),
        ODD: builtin.add("odd.bin", content("odd", 1000)),
        "moved.bin": builtin.add("moved.bin", content("moved", 5000)),
    }
    files = [{"url": url, "path": name} for name, url in urls.items()]
    manifest = write_manifest(tmp_path, files)
    assert run_cli("run", manifest, cwd=tmp_path).code == 0
    builtin.update("moved.bin", content("moved again", 7000))
    files += [
        {"url": builtin.add("big.bin", content("big", 200_000)), "path": "new/big.bin"},
        {"url": builtin.add_error("lost.bin", 404), "path": "lost.bin"},
    ]
    manifest = write_manifest(tmp_path, files)
    page = tmp_path / "report.html"
    done = run_cli("run", manifest, "--html-report", page, cwd=tmp_path)
    assert done.code == 1, done.stderr
    yield page


@needs_chromium
def test_the_page_renders_its_verdict_in_chromium(report: Path, tmp_path: Path) -> None:
    shot = tmp_path / "shot.png"
    _chromium(tmp_path, report, "--window-size=1000,700", f"--screenshot={shot}")
    width, height, pixels = png.pixels(shot.read_bytes(), 200)  # the verdict and the run's figures are there
    assert (width, height) == (1000, 700)
    colours = set(pixels)
    assert len(colours) > 20, "a blank page, or one without text"
    assert RED in colours, "the FAILED verdict's banner is not drawn"


@needs_chromium
def test_the_dom_has_every_file_in_its_table_with_full_digests_and_escaped_names(report: Path, tmp_path: Path) -> None:
    dom = _chromium(tmp_path, report, "--dump-dom").stdout
    tables = _tables(dom)
    assert tables.h1.startswith("FAILED: 1 of 5 files failed (")
    assert "1 new" in tables.h1 and "1 updated" in tables.h1 and "2 unchanged" in tables.h1
    failed = tables.rows["failed-files"]
    assert [row[:3] for row in failed] == [["lost.bin", "failed", "http_4xx"]] and "404" in failed[0][3]
    assert failed[0][4].endswith("/lost.bin")
    changed = {row[0]: row[1:] for row in tables.rows["changed-files"]}
    assert {name: row[0] for name, row in changed.items()} == {"moved.bin": "updated", "new/big.bin": "new"}
    for name, row in changed.items():
        assert row[2] == _sha256(tmp_path / "mirror" / name)
    unchanged = sorted(row[0] for row in tables.rows["unchanged-files"])
    assert unchanged == sorted(["same.bin", ODD]), "the odd name is one cell of text, not markup"
    assert "<details" in dom and " open" not in dom.split("<details", 1)[1].split(">", 1)[0], "unchanged collapsed"


@needs_chromium
@pytest.mark.parametrize(("sort", "key", "order"), [("-size", "size", "descending"), ("path", "path", "ascending")])
def test_the_address_sorts_every_table_with_that_column(
    report: Path, tmp_path: Path, sort: str, key: str, order: str
) -> None:
    dom = _chromium(tmp_path, report, "--dump-dom", fragment=f"#sort={sort}").stdout
    tables = _tables(dom)
    changed = tables.rows["changed-files"] + tables.rows["unchanged-files"]
    assert len(changed) == 4
    for name in ("changed-files", "unchanged-files"):
        assert (key, order) in tables.heads[name]
        rows = tables.rows[name]
        if key == "path":
            assert [r[0] for r in rows] == sorted(r[0] for r in rows)
        else:
            column = [k for k, _ in tables.heads[name]].index("size")
            sizes = [_parse_size(r[column]) for r in rows]
            assert sizes == sorted(sizes, reverse=True) and sizes != sorted(sizes)


@needs_chromium
def test_a_click_on_a_header_sorts_by_it_and_a_second_click_reverses(report: Path, tmp_path: Path) -> None:
    """Through the DevTools protocol: a mouse press and release over the header, as a user clicks."""
    page = cdp.Page(_argv(tmp_path), report.as_uri())
    sizes = "Array.from(document.querySelectorAll('#changed-files tbody td.n')).map(c => Number(c.dataset.v))"
    head = '#changed-files th[data-key="size"]'
    try:
        page.wait_for("document.readyState === 'complete' && document.querySelectorAll('#changed-files tr').length")
        before = page.evaluate(sizes)
        assert len(before) == 2
        page.click(head)
        page.wait_for(f"document.querySelector('{head}').getAttribute('aria-sort') === 'ascending'")
        assert page.evaluate("location.hash") == "#sort=size"
        assert page.evaluate(sizes) == sorted(before)
        page.click(head)
        page.wait_for(f"document.querySelector('{head}').getAttribute('aria-sort') === 'descending'")
        assert page.evaluate("location.hash") == "#sort=-size"
        assert page.evaluate(sizes) == sorted(before, reverse=True) != before
    finally:
        page.close()
    _no_console_message(page.log)


def test_the_page_loads_nothing_and_escapes_what_it_shows() -> None:
    names = ["caf\udce9.bin", "esc\x1b[31mred.bin", "<script>alert(1)</script>", "a&b\"c'd"]
    files = [_file(name, "unchanged") for name in names]
    text = html.page(_doc(files), "OK: 4 files")
    text.encode()  # every character is UTF-8: the undecodable byte shows as its escape
    assert "caf\\xe9.bin" in text and "esc\\x1b[31mred.bin" in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and "a&amp;b&quot;c&#x27;d" in text
    assert text.count("<script>") == 1  # the page's own
    lowered = text.lower()
    for loading in ("src=", "href=", "url(", "@import", "http://", "https://"):
        assert loading not in lowered.replace("http://h/", ""), loading


def test_unchanged_files_are_capped_and_the_page_says_how_many_it_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(html, "UNCHANGED_SHOWN", 3)
    files = [_file(f"f{i}.bin", "unchanged") for i in range(5)] + [_file("failed.bin", "failed")]
    tables = _tables(html.page(_doc(files), "FAILED: 1 of 6 files failed"))
    assert len(tables.rows["unchanged-files"]) == 3 and len(tables.rows["failed-files"]) == 1
    text = html.page(_doc(files), "x")
    assert "Unchanged (5)" in text and "2 more not listed here" in text


def test_an_early_failure_writes_the_page_but_never_over_a_file_that_is_not_one(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nfiles: [{url: http://127.0.0.1:9/a, segmets: 2}]\n")
    page, mine = tmp_path / "report.html", tmp_path / "notes.html"
    mine.write_text("<p>my notes</p>")
    for target in (page, mine):
        done = subprocess.run(
            [sys.executable, "-m", "bulkdl", "run", str(bad), "--html-report", str(target)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env=cli_env(),
            timeout=60,
            check=False,
        )
        assert done.returncode == 2 and "Traceback" not in done.stderr
    assert _tables(page.read_text()).h1.startswith("FAILED (exit 2): ")
    assert "segmets" in page.read_text()
    assert mine.read_text() == "<p>my notes</p>"


def test_an_html_report_onto_a_mirror_file_is_refused(builtin: FaultServer, tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, [builtin.add("a.bin", b"a" * 100)])
    assert run_cli("run", manifest, cwd=tmp_path).code == 0
    done = run_cli("run", manifest, "--html-report", tmp_path / "mirror/a.bin", cwd=tmp_path)
    assert done.code == 2 and "the HTML report" in done.stderr and "would overwrite a file of the mirror" in done.stderr
    assert (tmp_path / "mirror/a.bin").read_bytes() == b"a" * 100


def _doc(files: list[dict[str, object]]) -> dict[str, object]:
    totals = {name: sum(f["status"] == name for f in files) for name in ("unchanged", "failed")}
    amounts = {"bytes": 0, "transferred": 0, "elapsed_s": 0}
    return {
        "bulkdl_version": "0", "command": "run", "manifest": "/m.yaml", "started": "s", "ended": "e",
        "exit_code": 0, "error": None, "totals": {**totals, **amounts}, "files": files,
    }  # fmt: skip


def _file(name: str, status: str) -> dict[str, object]:
    failed = status == "failed"
    return {
        "url": f"http://h/{len(name)}", "path": name, "status": status, "bytes": None if failed else 10,
        "sha256": None if failed else "ab" * 32, "error": "HTTP 500" if failed else None,
        "code": "http_status" if failed else None,
    }  # fmt: skip


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _parse_size(text: str) -> float:
    number, unit = text.split()
    return float(number) * {"B": 1, "KiB": 1024, "MiB": 1024**2}[unit]


def test_verify_writes_its_page_too(builtin: FaultServer, tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, [builtin.add("a.bin", b"a" * 100), builtin.add("b.bin", b"b" * 50)])
    assert run_cli("run", manifest, cwd=tmp_path).code == 0
    (tmp_path / "mirror/b.bin").write_bytes(b"B" * 50)  # corrupt
    page = tmp_path / "verify.html"
    done = run_cli("verify", manifest, "--html-report", page, cwd=tmp_path)
    assert done.code == 1, done.stderr
    tables = _tables(page.read_text())
    assert tables.h1 == done.stdout.splitlines()[-1], "the page's verdict is the summary's"
    assert [row[:2] for row in tables.rows["failed-files"]] == [["b.bin", "corrupt"]]
    assert [row[:2] for row in tables.rows["unchanged-files"]] == [["a.bin", "verified"]]
