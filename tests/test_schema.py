"""`bulkdl schema`: the manifest's JSON Schema agrees with bulkdl's own validator on every example we ship,
and on manifests both must refuse; the checked-in copies (the schema, the from-sums example) are regenerated."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from bulkdl.errors import ManifestError
from bulkdl.parent import schema
from bulkdl.parent.manifest import Overrides, parse
from bulkdl.parent.schema_json import manifest_schema

from .conftest import cli_env, run_cli

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = sorted((ROOT / "manifests").glob("*.yaml"))
FENCE = re.compile(r"^```yaml\n(.*?)^```", re.MULTILINE | re.DOTALL)
README_BLOCKS = FENCE.findall((ROOT / "README.md").read_text(encoding="utf-8"))
ENV = {"ARTIFACTS_TOKEN": "t0ken", "MIRROR_TOKEN": "t0ken"}  # what the examples' headers name
VALIDATOR = jsonschema.Draft202012Validator(manifest_schema())


def _complete(block: str) -> str:
    """A README block that shows a few top-level keys only, made a whole manifest around them."""
    return block if re.search(r"^files:", block, re.MULTILINE) else f"version: 1\nfiles: [http://h/a]\n{block}"


def _schema_errors(text: str) -> list[str]:
    return [error.message for error in VALIDATOR.iter_errors(yaml.safe_load(text))]


def _bulkdl_accepts(text: str, where: Path) -> bool:
    (where / "private-ca.pem").touch()  # the README's ca_bundle names one beside the manifest
    try:
        parse(text, where / "m.yaml", Overrides())
    except ManifestError:
        return False
    return True


def test_the_schema_is_a_valid_draft_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(manifest_schema())


def test_bulkdl_schema_prints_it_and_the_checked_in_copy_is_current(tmp_path: Path) -> None:
    result = run_cli("schema", cwd=tmp_path)
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout) == manifest_schema()
    assert (ROOT / "manifests/manifest.schema.json").read_text() == result.stdout, (
        "run: bulkdl schema > manifests/manifest.schema.json"
    )


# How manifests/from-sums.yaml was made, from manifests/SHA256SUMS; the date is SOURCE_DATE_EPOCH's.
FROM_SUMS = ["manifest", "from-sums", "SHA256SUMS", "--base-url", "https://downloads.example.org/example-linux/12.8/"]
FROM_SUMS += ["--dest", "../example-linux"]


def test_the_from_sums_example_is_what_from_sums_makes_of_its_input() -> None:
    argv = [sys.executable, "-m", "bulkdl", *FROM_SUMS]
    env = cli_env(SOURCE_DATE_EPOCH="1764633600")
    made = subprocess.run(
        argv, cwd=ROOT / "manifests", capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert made.returncode == 0, made.stderr
    again = f"cd manifests && SOURCE_DATE_EPOCH=1764633600 bulkdl {' '.join(FROM_SUMS)} > from-sums.yaml"
    assert (ROOT / "manifests/from-sums.yaml").read_text(encoding="utf-8") == made.stdout, f"run: {again}"


def test_the_schema_names_every_key_bulkdl_knows() -> None:
    properties: dict[str, Any] = manifest_schema()["properties"]
    assert set(properties) == schema.TOP_KEYS
    assert set(properties["defaults"]["properties"]) == {*schema.SETTING_KEYS, "headers"}
    entry = properties["files"]["items"]["anyOf"][1]["properties"]
    assert set(entry) == {*schema.ENTRY_KEYS, *schema.SETTING_KEYS, "headers"}


@pytest.mark.parametrize("path", MANIFESTS, ids=[path.name for path in MANIFESTS])
def test_every_shipped_manifest_passes_both(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    text = path.read_text(encoding="utf-8")
    assert _schema_errors(text) == []
    parse(text, path, Overrides())


@pytest.mark.parametrize("block", README_BLOCKS, ids=[f"readme-{i}" for i in range(len(README_BLOCKS))])
def test_every_readme_example_passes_both(block: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    text = _complete(block)
    assert _schema_errors(text) == []
    assert _bulkdl_accepts(text, tmp_path)


def test_the_readme_has_examples_to_check() -> None:
    assert len(README_BLOCKS) >= 2 and any("yaml-language-server" in block for block in README_BLOCKS)


V = "version: 1\n"
ONE = "files: [http://h/a]\n"
BAD = {
    "no-version": ONE,
    "quoted-version": 'version: "1"\n' + ONE,
    "version-2": "version: 2\n" + ONE,
    "no-files": V,
    "empty-files": V + "files: []\n",
    "unknown-top-key": V + "colour: red\n" + ONE,
    "typo-in-defaults": V + "defaults: {segmets: 8}\n" + ONE,
    "typo-in-an-entry": V + "files:\n  - {url: http://h/a, sha265: x}\n",
    "entry-key-in-defaults": V + "defaults: {sha256: " + "a" * 64 + "}\n" + ONE,
    "ftp-url": V + "files: [ftp://h/a]\n",
    "url-with-a-space": V + "files: ['http://h/a b']\n",
    "url-with-a-fragment": V + "files: ['http://h/a#b']\n",
    "url-with-a-bare-percent": V + "files: ['http://h/100%.txt']\n",
    "mirror-not-http": V + "files:\n  - {url: http://h/a, mirrors: [ftp://m/a]}\n",
    "entry-without-url": V + "files:\n  - {path: a}\n",
    "short-digest": V + "files:\n  - {url: http://h/a, sha256: abc}\n",
    "digest-read-as-a-number": V + "files:\n  - {url: http://h/a, sha256: " + "0" * 64 + "}\n",
    "size-without-unit-sense": V + "files:\n  - {url: http://h/a, size: huge}\n",
    "negative-size": V + "files:\n  - {url: http://h/a, size: -1}\n",
    "too-many-segments": V + "defaults: {segments: 65}\n" + ONE,
    "segments-as-text": V + "defaults: {segments: eight}\n" + ONE,
    "no-workers": V + "workers: 0\n" + ONE,
    "timeout-too-long": V + "defaults: {timeout: 90000}\n" + ONE,
    "duration-without-unit": V + "max_duration: 90\n" + ONE,
    "prune-as-text": V + "prune: sure\n" + ONE,
    "max-delete-as-words": V + "max_delete: many\n" + ONE,
    "header-value-on-two-lines": V + 'defaults: {headers: {X-A: "a\\nb"}}\n' + ONE,
    "header-name-with-a-colon": V + "defaults: {headers: {'X:A': b}}\n" + ONE,
    "headers-as-a-list": V + "defaults: {headers: [a]}\n" + ONE,
    "insecure-as-text": V + "files:\n  - {url: https://h/a, insecure: maybe}\n",
    "dest-empty": V + "dest: ''\n" + ONE,
    "not-a-mapping": "- http://h/a\n",
}


@pytest.mark.parametrize("case", BAD)
def test_a_bad_manifest_is_refused_by_both(case: str, tmp_path: Path) -> None:
    text = BAD[case]
    assert _schema_errors(text), "the schema accepts it"
    assert not _bulkdl_accepts(text, tmp_path), "bulkdl accepts it"
