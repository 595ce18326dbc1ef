"""The JSON Schema (draft 2020-12) of the JSON report, built from the vocabularies jsonreport.py writes with,
so that the two cannot drift apart. ``bulkdl report-schema`` prints it."""

from __future__ import annotations

from ...errors import CODES
from .jsonreport import RUN_CODES, SCHEMA_VERSION, STATUSES

_COUNT = {"type": "integer", "minimum": 0}
_SECONDS = {"type": "number", "minimum": 0}
_TIME = {"type": "string", "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", "description": "UTC, ISO 8601"}


def _enum(pairs: tuple[tuple[str, str], ...]) -> dict[str, object]:
    return {"oneOf": [{"const": name, "description": text} for name, text in pairs]}


def _closed(properties: dict[str, object]) -> dict[str, object]:
    """An object with exactly these keys: every key always present, none other."""
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


def _file() -> dict[str, object]:
    described = _closed(
        {
            "url": {"type": "string"},
            "path": {"type": "string", "description": "below dest, as the manifest names it"},
            "status": _enum(STATUSES),
            "outcome": {
                "type": "string",
                "description": "the coarse status of reports before schema_version 1, kept for their readers: "
                "downloaded (new, updated, re-fetched, repaired), skipped (adopted, unchanged, not modified), "
                "or status",
            },
            "bytes": {"type": ["integer", "null"], "minimum": 0},
            "transferred": _COUNT,
            "sha256": {"type": ["string", "null"], "pattern": "^[0-9a-f]{64}$"},
            "elapsed_s": _SECONDS,
            "error": {"type": ["string", "null"]},
            "code": {"oneOf": [{"type": "null"}, _enum(CODES)]},
            "notes": {"type": "array", "items": {"type": "string"}},
        }
    )
    # A file that failed, was interrupted or is gone upstream says why, in words and as a code.
    failing = {"properties": {"status": {"enum": ["failed", "interrupted", "gone", "corrupt", "missing"]}}}
    explained = {"properties": {"code": {"type": "string"}}}
    return {**described, "if": failing, "then": explained, "else": {"properties": {"code": {"type": "null"}}}}


def schema() -> dict[str, object]:
    counts = {name: _COUNT for name, _ in STATUSES}
    totals = _closed({**counts, "bytes": _COUNT, "transferred": _COUNT, "elapsed_s": _SECONDS})
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "bulkdl report",
        **_closed(
            {
                "schema_version": {"const": SCHEMA_VERSION},
                "bulkdl_version": {"type": "string"},
                "command": {"enum": ["run", "verify"]},
                "manifest": {"type": "string", "description": "absolute path"},
                "started": _TIME,
                "ended": _TIME,
                "exit_code": {"type": "integer", "description": "as `bulkdl run --help` lists them"},
                "error": {
                    "description": "why the command failed before it looked at any file; null once it did",
                    "oneOf": [
                        {"type": "null"},
                        _closed({"code": _enum(RUN_CODES), "message": {"type": "string"}}),
                    ],
                },
                "totals": totals,
                "summary": {
                    "description": "deprecated, for readers of reports before schema_version 1: counts by outcome "
                    "(downloaded, skipped, failed and interrupted always, the others when not 0), bytes, "
                    "transferred, elapsed_s",
                    "type": "object",
                    "additionalProperties": {"type": "number", "minimum": 0},
                },
                "files": {"type": "array", "items": _file()},
            }
        ),
    }
