"""A large manifest: each kind of problem deep inside it is reported with its message and exact line.

The fast path reads plain data and finds lines only when something is wrong, so these check that every
rule still fires far from the top of the file, and that the line it names is the one a user must edit.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from bulkdl.errors import ManifestError
from bulkdl.parent.manifest import Overrides, parse
from bulkdl.parent.yamlhints import TAB_HINT

N = 5000
BAD = 3217  # the entry a case spoils
SOURCE = Path("/big/m.yaml")
HEAD = ["version: 1", "dest: out", "files:"]  # the defaults follow the list, so they are deep inside too
TAIL = ["defaults:", "  segments: 4"]


def _entry(i: int) -> list[str]:
    return [
        f"  - url: http://127.0.0.1:9/pool/d{i % 100:02d}/f{i}.bin",
        f"    path: d{i % 100:02d}/f{i}.bin",
        f"    sha256: a{i:063x}",
        "    size: 1300",
    ]


def line_of(i: int, field: int = 0) -> int:
    """The 1-based line of entry ``i``'s field (0 url, 1 path, 2 sha256, 3 size)."""
    return len(HEAD) + 4 * i + field + 1


TAIL_LINE = line_of(N)  # the line "defaults:" stands on


def _manifest(change: Callable[[list[str]], None] = lambda lines: None) -> str:
    lines = [*HEAD, *(line for i in range(N) for line in _entry(i)), *TAIL]
    change(lines)
    return "\n".join(lines) + "\n"


def _set(i: int, field: int, text: str) -> Callable[[list[str]], None]:
    def change(lines: list[str]) -> None:
        lines[line_of(i, field) - 1] = text

    return change


def _problems(text: str) -> list[str]:
    with pytest.raises(ManifestError) as caught:
        parse(text, SOURCE, Overrides())
    return caught.value.problems


def _laughs() -> list[str]:
    levels = ["  l0: &l0 [" + ", ".join(["x"] * 10) + "]"]
    levels += [f"  l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, 6)]
    return ["bomb:", *levels]


def _append(*extra: str) -> Callable[[list[str]], None]:
    return lambda lines: lines.extend(extra)


f = f"files[{BAD}]"
SETTINGS = "segments, min_segment_size, chunk_size, retries, timeout, min_speed, stall_time, " + (
    "max_retry_after, max_size, headers"
)
ENTRY = "url, path, size, md5, sha1, sha256, sha512, blake2b, insecure, mirrors"
TOP = (
    "backup_dir, base_url, ca_bundle, checksums_file, connections, defaults, dest, files, limit_rate, "
    "max_connections_per_host, max_delete, max_duration, prune, revalidate, scheduler, trace, version, workers"
)
FLOW = f"(while parsing a flow sequence on line {line_of(BAD, 3)})"
NOT_HTTP = "only http and https URLs are supported, got ftp scheme"
BOMB_LIMIT = len(_manifest(_append(*_laughs()))) + 100_000  # one value per character, and an allowance
CASES: dict[str, tuple[Callable[[list[str]], None], list[str]]] = {
    "unknown-top-key": (_append("colour: red"), [f"{TAIL_LINE + 2}: colour: unknown key (expected one of {TOP})"]),
    "unknown-defaults-key": (
        _append("  colour: red"),
        [f"{TAIL_LINE + 2}: defaults.colour: unknown key (expected one of {SETTINGS})"],
    ),
    "unknown-entry-key": (
        _set(BAD, 3, "    colour: red"),
        [f"{line_of(BAD, 3)}: {f}.colour: unknown key (expected one of {ENTRY}, {SETTINGS})"],
    ),
    "key-given-twice": (_set(BAD, 3, "    path: other.bin"), [f"{line_of(BAD, 3)}: {f}.path: given twice"]),
    "non-string-key": (_set(BAD, 3, "    12: x"), [f"{line_of(BAD, 3)}: {f}: keys must be strings, got 12"]),
    "list-where-a-scalar-goes": (
        _set(BAD, 2, "    sha256: [a, b]"),
        [f"{line_of(BAD, 2)}: {f}.sha256: expected a single value, not a list or mapping"],
    ),
    "bad-digest": (
        _set(BAD, 2, "    sha256: abc"),
        [f"{line_of(BAD, 2)}: {f}.sha256: expected 64 hex digits for sha256, got 'abc'"],
    ),
    "bad-size": (
        _set(BAD, 3, "    size: huge"),
        [f"{line_of(BAD, 3)}: {f}.size: 'huge' is not a size (use B, KiB, MiB, GiB, KB, MB or GB)"],
    ),
    "missing-url": (_set(BAD, 0, "  - retries: 1"), [f"{line_of(BAD)}: {f}.url: missing"]),
    "non-http-url": (_set(BAD, 0, "  - url: ftp://h/x"), [f"{line_of(BAD)}: {f}.url: {NOT_HTTP}"]),
    "url-without-host": (_set(BAD, 0, "  - url: 'http:///x'"), [f"{line_of(BAD)}: {f}.url: URL has no host"]),
    "path-escaping-dest": (
        _set(BAD, 1, "    path: d/../../x"),
        [f"{line_of(BAD, 1)}: {f}.path: path must not contain '..'; it would escape dest"],
    ),
    "path-clash": (
        _set(BAD, 1, "    path: d17/f17.bin"),
        [f"{line_of(BAD)}: {f}.path: destination 'd17/f17.bin' clashes with 'd17/f17.bin' (line {line_of(17)})"],
    ),
    "path-under-a-file": (
        _set(BAD, 1, "    path: d17/f17.bin/x"),
        [f"{line_of(BAD)}: {f}.path: destination 'd17/f17.bin/x' clashes with 'd17/f17.bin' (line {line_of(17)})"],
    ),
    "yaml-syntax-error": (
        _set(BAD, 3, "    size: [1300"),
        [f"{line_of(BAD + 1)}:8: yaml: did not find expected ',' or ']' {FLOW}"],
    ),
    "tab-indentation": (
        _set(BAD, 3, "\tsize: 1300"),
        [f"{line_of(BAD, 3)}:1: yaml: a tab character ({TAB_HINT})"],
    ),
    "nul-character": (
        _set(BAD, 3, "    size: 13\x0000"),
        [f"{line_of(BAD, 3)}:13: yaml: control characters are not allowed ('\\x00')"],
    ),
    "alias-bomb": (
        _append(*_laughs()),
        [
            f"{TAIL_LINE + 8}: yaml: aliases expand the manifest to over {BOMB_LIMIT} values, far more than it holds; "
            "write them out"
        ],
    ),
    "alias-inside-itself": (
        _append("loop: &loop [a, *loop]"),
        [f"{TAIL_LINE + 2}: yaml: an alias refers to a node that contains it"],
    ),
    "bad-header-name": (
        _set(BAD, 3, "    headers: {'X Bad:': v}"),
        [f"{line_of(BAD, 3)}: {f}.headers.X Bad:: not a valid header name"],
    ),
    "bad-header-value": (
        _set(BAD, 3, "    headers:\n      X-Token: ${NOT_SET_4711}"),
        [f"{line_of(BAD, 3) + 1}: {f}.headers.X-Token: environment variable NOT_SET_4711 is not set"],
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_each_problem_deep_inside_names_its_line(case: str) -> None:
    change, expected = CASES[case]
    assert _problems(_manifest(change)) == [f"{SOURCE}:{line}" for line in expected]


def test_several_problems_are_all_reported_in_file_order() -> None:
    def change(lines: list[str]) -> None:
        for edit in [
            _set(4000, 2, "    sha256: nothex"),
            _set(12, 0, "  - url: ftp://h/a"),
            _set(BAD, 3, "    size: -1"),
        ]:
            edit(lines)
        lines.append("  retries: many")

    assert _problems(_manifest(change)) == [
        f"{SOURCE}:{line_of(12)}: files[12].url: {NOT_HTTP}",
        f"{SOURCE}:{line_of(BAD, 3)}: {f}.size: size must not be negative, got -1",
        f"{SOURCE}:{line_of(4000, 2)}: files[4000].sha256: expected 64 hex digits for sha256, got 'nothex'",
        f"{SOURCE}:{TAIL_LINE + 2}: defaults.retries: expected a whole number of at least 0, got 'many'",
    ]


def test_a_problem_inside_an_aliased_value_names_the_line_it_is_written_on() -> None:
    # The value is written once, under an anchor, and used by every entry: the line to edit is the anchor's.
    def change(lines: list[str]) -> None:
        lines[line_of(0, 3) - 1] = "    mirrors: &m [http://m/a, ftp://m/b]"
        lines[line_of(BAD, 3) - 1] = "    mirrors: *m"

    problems = _problems(_manifest(change))
    assert problems == [
        f"{SOURCE}:{line_of(0, 3)}: files[0].mirrors[1]: {NOT_HTTP}",
        f"{SOURCE}:{line_of(0, 3)}: {f}.mirrors[1]: {NOT_HTTP}",
    ]


def test_entries_without_settings_of_their_own_share_one_settings_object() -> None:
    def change(lines: list[str]) -> None:
        lines[line_of(BAD, 3) - 1] = "    segments: 2"

    jobs = parse(_manifest(change), SOURCE, Overrides()).jobs
    shared = {id(job.settings) for i, job in enumerate(jobs) if i != BAD}
    assert len(jobs) == N and len(shared) == 1
    assert jobs[0].settings.segments == 4 and jobs[BAD].settings.segments == 2
    assert jobs[BAD].settings is not jobs[0].settings
    assert jobs[BAD].settings.headers is jobs[0].settings.headers  # and one headers tuple


def test_the_scale_manifest_itself_is_valid() -> None:
    manifest = parse(_manifest(), SOURCE, Overrides())
    assert len(manifest.jobs) == N and manifest.jobs[BAD].name == f"d17/f{BAD}.bin"
    assert manifest.jobs[BAD].digests == (("sha256", f"a{BAD:063x}"),) and manifest.jobs[BAD].size == 1300
