"""The manifest as a JSON Schema (draft 2020-12): what ``bulkdl schema`` prints, for editors and linters.

It is made from schema.py's key tables and the JSON each converter is ``described`` with, so a key added
there is in the schema too, and nothing is copied by hand. Editors that use yaml-language-server (VS Code's
YAML extension, Neovim, Helix...) complete and check a manifest against it given
``# yaml-language-server: $schema=manifest.schema.json`` on its first line. The schema is looser than
``bulkdl check`` where JSON Schema cannot say a rule (a destination claimed twice, an unset environment
variable, a relative url without a base_url), never stricter: what bulkdl accepts, it accepts.
"""

from __future__ import annotations

import json
from typing import Any

from . import schema
from .schema import JSON_OF, Json

DRAFT = "https://json-schema.org/draft/2020-12/schema"
# What a header name may be (schema.Reader.headers): no colon or line break, no space at either end.
_HEADER_NAME = r"^[^:\s](?:[^:\r\n]*[^:\s])?$"


def _of(table: dict[str, schema.Convert]) -> dict[str, Json]:
    return {key: JSON_OF[convert] for key, convert in table.items()}


def manifest_schema() -> Json:
    headers = {
        "type": "object",
        "propertyNames": {"pattern": _HEADER_NAME},
        "additionalProperties": JSON_OF[schema.header_value],
    }
    settings = {**_of(schema.SETTING_KEYS), "headers": headers}
    url = JSON_OF[schema.entry_url]
    entry_keys = {
        **_of(schema.ENTRY_KEYS),
        "url": url,
        "mirrors": {"type": "array", "items": JSON_OF[schema.http_url]},
    }
    entry = {
        "type": "object",
        "required": ["url"],
        "properties": {**settings, **entry_keys},
        "additionalProperties": False,
    }
    top: dict[str, Any] = {
        **_of(schema.TOP_VALUES),
        **_of(schema.BUDGET_KEYS),
        **_of(schema.PRUNE_KEYS),
        "defaults": {"type": "object", "properties": settings, "additionalProperties": False},
        "files": {"type": "array", "minItems": 1, "items": {"anyOf": [url, entry]}},
    }
    return {
        "$schema": DRAFT,
        "title": "bulkdl manifest",
        "description": "The files bulkdl mirrors and how; `bulkdl check` says more than this schema can.",
        "type": "object",
        "required": ["version", "files"],
        "properties": top,
        "additionalProperties": False,
    }


def text() -> str:
    return json.dumps(manifest_schema(), indent=2) + "\n"
