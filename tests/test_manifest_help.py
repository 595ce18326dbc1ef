"""Manifest help: each kind of mistake a person makes by hand gets its line (and column) and how to fix it."""

from __future__ import annotations

from pathlib import Path

import pytest

from bulkdl.errors import ManifestError
from bulkdl.parent.manifest import Overrides, parse
from bulkdl.parent.yamlhints import TAB_HINT

from .conftest import run_cli

V = "version: 1\n"
FILES = "files: [http://h/a]\n"
HEX = "ab" * 32
ENCODE = "if that is part of the file name, percent-encode it:"

MISTAKES = {
    "typo-top": (
        V + "fils: [http://h/a]\n",
        ["1: files: missing: list the URLs to fetch", "2: fils: unknown key; did you mean files?"],
    ),
    "typo-defaults": (
        V + "defaults:\n  segmets: 8\n" + FILES,
        ["3: defaults.segmets: unknown key; did you mean segments?"],
    ),
    "typo-digest": (
        V + f"files:\n  - url: http://h/a\n    sha265: {HEX}\n",
        ["4: files[0].sha265: unknown key; did you mean sha256?"],
    ),
    "upper-case-key": (
        V + "files:\n  - url: http://h/a\n    SHA256: x\n",
        ["4: files[0].SHA256: unknown key; did you mean sha256?"],
    ),
    "setting-at-top": (
        V + "segments: 4\n" + FILES,
        ["2: segments: not a top-level key; write it under defaults: or in an entry"],
    ),
    "typo-of-a-setting-at-top": (
        V + "segmets: 4\n" + FILES,
        ["2: segmets: unknown key; did you mean segments? (under defaults: or in an entry)"],
    ),
    "entry-key-at-top": (
        V + f"sha256: {HEX}\n" + FILES,
        ["2: sha256: not a top-level key; write it in an entry of files:"],
    ),
    "entry-key-in-defaults": (
        V + f"defaults:\n  sha256: {HEX}\n" + FILES,
        ["3: defaults.sha256: allowed in an entry only: it names one file"],
    ),
    "tab-indentation": (V + "defaults:\n\tsegments: 8\n" + FILES, [f"3:1: yaml: a tab character ({TAB_HINT})"]),
    "tab-in-an-entry": (V + "files:\n  - url: http://h/a\n\t path: x\n", [f"4:1: yaml: a tab character ({TAB_HINT})"]),
    "unquoted-glob": (
        V + "files:\n  - *.iso\n",
        [
            "3:6: yaml: did not find expected alphabetic or numeric character (while scanning an alias on line 3; "
            "a value starting with * is an alias in YAML; quote it: '*.iso')"
        ],
    ),
    "reserved-at": (
        V + "files:\n  - @x\n",
        ["3:5: yaml: a value cannot start with @ (YAML reserves it; quote the value)"],
    ),
    "unquoted-colon": (
        V + "defaults:\n  headers:\n    User-Agent: a: b\n" + FILES,
        [
            "4:18: yaml: mapping values are not allowed in this context "
            "(a value holding ': ' must be quoted: key: \"a: b\")"
        ],
    ),
    "unclosed-quote": (
        V + "files:\n  - 'http://h/a\n",
        ["4:1: yaml: found unexpected end of stream (while scanning a quoted scalar on line 3; a quote is not closed)"],
    ),
    "indentation": (
        V + "files:\n  - url: http://h/a\n   path: x\n",
        [
            "4:4: yaml: did not find expected '-' indicator (while parsing a block collection on line 3; check the "
            "indentation: the keys of one mapping, and the dashes of one list, start in the same column)"
        ],
    ),
    "control-character": (
        V + "files: [http://h/a\x00]\n",
        ["2:19: yaml: control characters are not allowed ('\\x00')"],
    ),
    "digest-read-as-a-number": (
        V + "files:\n  - url: http://h/a\n    sha256: " + "0" * 64 + "\n",
        [
            "4: files[0].sha256: YAML read the unquoted digest as the number 0 (all its hex digits are decimal ones); "
            'quote it: sha256: "..."'
        ],
    ),
    "path-read-as-a-number": (
        V + "files:\n  - url: http://h/a\n    path: 2024\n",
        ["4: files[0].path: expected text, but YAML read the unquoted value as the number 2024: quote it"],
    ),
    "path-read-as-a-date": (
        V + "files:\n  - url: http://h/a\n    path: 2024-01-01\n",
        ["4: files[0].path: expected text, but YAML read the unquoted value as the date 2024-01-01: quote it"],
    ),
    "dest-read-as-a-boolean": (
        V + "dest: yes\n" + FILES,
        ["2: dest: expected text, but YAML read the unquoted value as the boolean true: quote it"],
    ),
    "version-quoted": (
        'version: "1"\n' + FILES,
        ['1: version: write version: 1 without quotes: a number, not the text "1"'],
    ),
    "version-missing": (
        FILES,
        ["1: version: missing; write version: 1 as the manifest's first line (the format this bulkdl reads)"],
    ),
    "version-2": (
        "version: 2\n" + FILES,
        ["1: version: only version 1 is supported, got 2; this bulkdl reads version: 1 manifests"],
    ),
    "url-space": (
        V + "files:\n  - http://h/a b.iso\n",
        [f"3: files[0]: URL contains a space; {ENCODE} http://h/a%20b.iso"],
    ),
    "url-fragment": (
        V + "files:\n  - url: http://h/notes#1.txt\n",
        [f"3: files[0].url: URL contains '#'; {ENCODE} http://h/notes%231.txt"],
    ),
    "url-bare-percent": (
        V + "files:\n  - http://h/100%.txt\n",
        [f"3: files[0]: URL contains a '%' that starts no %XX escape; {ENCODE} http://h/100%25.txt"],
    ),
    "relative-url-as-written": (
        V + "base_url: http://h/pub/\nfiles:\n  - a b#1.iso\n",
        [f"4: files[0]: URL contains a space and '#'; {ENCODE} a%20b%231.iso"],
    ),
    "mirror-fragment": (
        V + "files:\n  - url: http://h/a\n    mirrors: ['http://m/a#b']\n",
        [f"4: files[0].mirrors[0]: URL contains '#'; {ENCODE} http://m/a%23b"],
    ),
    "question-mark-in-a-name": (
        V + "files:\n  - http://h/what?.iso\n",
        [
            "3: files[0].url: '?' starts a query string, so the file would be 'what': if '?' is part of its name "
            "write it as %3F (http://h/what%3F.iso); if it starts a query, name the file with path:"
        ],
    ),
}


@pytest.mark.parametrize("case", MISTAKES)
def test_each_mistake_names_its_line_and_the_fix(case: str) -> None:
    text, expected = MISTAKES[case]
    with pytest.raises(ManifestError) as caught:
        parse(text, Path("m.yaml"), Overrides())
    assert caught.value.problems == [f"m.yaml:{line}" for line in expected]


def test_a_real_query_and_a_chosen_name_keep_their_question_mark() -> None:
    text = V + "files:\n  - http://h/a.iso?token=1\n  - {url: 'http://h/get?latest', path: latest.iso}\n"
    jobs = parse(text, Path("m.yaml"), Overrides()).jobs
    assert [(job.url, job.name) for job in jobs] == [
        ("http://h/a.iso?token=1", "a.iso"),
        ("http://h/get?latest", "latest.iso"),
    ]


def test_encoded_names_pass_and_decode_to_the_file_name() -> None:
    text = V + "files:\n  - http://h/notes%231.txt\n  - http://h/a%20b.iso\n  - http://h/100%25.txt\n"
    assert [job.name for job in parse(text, Path("m.yaml"), Overrides()).jobs] == ["notes#1.txt", "a b.iso", "100%.txt"]


def test_check_prints_the_column_and_the_hint_through_the_cli(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text(V + "defaults:\n\tsegments: 8\n" + FILES)
    result = run_cli("check", "m.yaml", cwd=tmp_path)
    assert (result.code, result.stderr) == (2, f"m.yaml:3:1: yaml: a tab character ({TAB_HINT})\n")
