"""The manifest parser under hypothesis: every input is a valid plan or a ManifestError, nothing else."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bulkdl.errors import ManifestError
from bulkdl.parent import yamldoc
from bulkdl.parent.manifest import Manifest, Overrides, parse

SOURCE = Path("/fuzz/m.yaml")
KEYS = ["version", "dest", "workers", "defaults", "files", "url", "path", "size", "sha256", "md5", "segments",
        "min_segment_size", "retries", "timeout", "headers", "User-Agent", "blake2b", "x"]  # fmt: skip

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(["http://h/a", "https://h/b.iso", "ftp://h/c", "http://h/", "../x", "/abs", "4MiB", "a" * 64]),
)
documents = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), scalars), children, max_size=6),
    ),
    max_leaves=30,
)


def _outcome(text: str) -> None:
    try:
        manifest = parse(text, SOURCE, Overrides())
    except ManifestError as exc:
        assert str(exc), "a manifest error always says what is wrong"
        assert all(line.startswith(f"{SOURCE}:") for line in exc.problems), exc.problems
        return
    assert isinstance(manifest, Manifest) and manifest.jobs
    for job in manifest.jobs:
        assert job.path.is_relative_to(manifest.dest), job.path


@settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", 400)), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(documents)
def test_any_yaml_document(document: object) -> None:
    _outcome(yaml.safe_dump(document, allow_unicode=True))


@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", 400)), deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes(raw: bytes) -> None:
    _outcome(raw.decode("utf-8", errors="replace"))


@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", 300)), deadline=None)
@given(st.dictionaries(st.sampled_from(KEYS), documents, max_size=5), st.lists(documents, max_size=4))
def test_manifest_shaped_documents(top: dict[str, object], files: list[object]) -> None:
    _outcome(yaml.safe_dump({**top, "files": files}, allow_unicode=True))


def test_yaml_bombs_and_oddities_are_manifest_errors() -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(8)
    )
    for text in [
        bomb + "files: *i\n",
        "files: !!python/object:os.system [x]\n",
        "--- 1\n--- 2\n",
        "\t",
        "files: [http://h/a]\n\x00",
    ]:
        _outcome(text)


# The fast path's data must be YAML's: yamldoc.read against PyYAML's own SafeLoader on generated documents
# of every resolved scalar type, plain and quoted, explicit tags, anchors and aliases, flow and block style.
PLAIN = ["12", "-3", "+7", "0", "017", "0x1F", "0b101", "1_000", "190:20:30", "1.5", "-2.5e+3", "1.0e-2", ".inf",
         "-.Inf", ".NaN", "685.230_15e+03", "yes", "No", "on", "OFF", "true", "False", "~", "null", "NULL",
         "2001-12-14", "2001-12-14t21:59:43.10-05:00", "2001-12-14 21:59:43.10 -5", "http://h/a", "a b",
         "x"]  # fmt: skip
TAGGED = ["!!str 12", "!!int '7'", "!!float '3'", "!!bool 'yes'", "!!null ''", "!!binary aGVsbG8=",
          "!!timestamp 2001-12-14", "! 12", "!!str", "!!int 0o17"]  # fmt: skip
words = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.\-/]{0,8}", fullmatch=True)
texts = st.text(st.characters(min_codepoint=32, max_codepoint=0xFFFD, blacklist_categories=("Cs", "Cc")), max_size=12)
quoted = st.one_of(
    texts.map(lambda s: "'" + s.replace("'", "''") + "'"), texts.map(lambda s: json.dumps(s, ensure_ascii=False))
)
scalar_text = st.one_of(st.sampled_from(PLAIN), st.sampled_from(TAGGED), words, quoted)


class _Writer:
    """Writes a random YAML document, keeping anchors unique and aliasing only values already complete."""

    def __init__(self, draw: st.DrawFn) -> None:
        self.draw = draw
        self.done: list[str] = []
        self.count = 0

    def anchored(self, write: Callable[[], str]) -> str:
        if not self.draw(st.booleans()):
            return write()
        self.count += 1
        name = f"a{self.count}"
        text = f"&{name} {write()}"
        self.done.append(name)
        return text

    def flow(self, depth: int) -> str:
        kind = self.draw(st.sampled_from(["scalar", "alias", "list", "map"] if depth < 3 else ["scalar", "alias"]))
        if kind == "alias" and self.done:
            return "*" + self.draw(st.sampled_from(self.done))
        if kind == "list":
            return self.anchored(lambda: "[" + ", ".join(self.flow(depth + 1) for _ in range(self.size())) + "]")
        if kind == "map":
            return self.anchored(lambda: "{" + ", ".join(self.pair(depth) for _ in range(self.size())) + "}")
        return self.anchored(lambda: self.draw(scalar_text))

    def pair(self, depth: int) -> str:
        return f"{self.draw(st.one_of(words, quoted, st.sampled_from(PLAIN)))}: {self.flow(depth + 1)}"

    def size(self) -> int:
        return self.draw(st.integers(0, 4))

    def block(self) -> str:
        lines = []
        for _ in range(self.draw(st.integers(1, 5))):
            key = self.draw(st.one_of(words, quoted))
            if self.draw(st.booleans()):
                lines.append(f"{key}: {self.flow(1)}")
            else:
                lines.append(f"{key}:")
                lines += [f"  - {self.flow(2)}" for _ in range(self.draw(st.integers(1, 3)))]
        return "\n".join(lines) + "\n"


@st.composite
def yaml_documents(draw: st.DrawFn) -> str:
    writer = _Writer(draw)
    return writer.block() if draw(st.booleans()) else writer.flow(0) + "\n"


def _same(a: object, b: object, seen: dict[int, int]) -> bool:
    """Equal, NaN equal to NaN, and shared where the other is shared (an alias is the anchor's object)."""
    if isinstance(a, list | dict):
        if type(a) is not type(b) or seen.setdefault(id(a), id(b)) != id(b) or len(a) != len(b):  # type: ignore[arg-type]
            return False
        if isinstance(a, dict):
            return all(_same(x, y, seen) for x, y in zip([*a.items()], [*b.items()], strict=True))  # type: ignore[union-attr]
        return all(_same(x, y, seen) for x, y in zip(a, b, strict=True))  # type: ignore[call-overload]
    if isinstance(a, tuple):
        return isinstance(b, tuple) and all(_same(x, y, seen) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and (a == b or (a != a and b != b))


@pytest.mark.parametrize("loader", ["libyaml", "pure-python"])
@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", 300)), deadline=None)
@given(text=yaml_documents())
def test_the_fast_path_reads_what_safe_load_reads(loader: str, text: str) -> None:
    try:
        expected = yaml.load(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return  # what PyYAML refuses, the manifest reports; test_any_yaml_document covers that side
    with mock.patch.object(yamldoc, "_LOADER", yaml.SafeLoader if loader == "pure-python" else yamldoc._LOADER):
        try:
            document = yamldoc.read(text)
        except yamldoc.Unreadable as exc:
            assert "alias" in exc.message, (text, exc.message)  # only the alias rules refuse what YAML allows
            return
    assume(not any(bad.key is not None for _, found in document.bad_keys.values() for bad in found))  # given twice
    assert _same(document.data, expected, {}), (text, document.data, expected)
