"""The manifest parser under hypothesis: every input is a valid plan or a ManifestError, nothing else."""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bulkdl.errors import ManifestError
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
