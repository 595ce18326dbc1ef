"""The manifest: YAML in, validated immutable jobs out.

The document is composed into PyYAML nodes rather than loaded into dicts, so every problem can name the
line it stands on. Validation never stops at the first problem: all of them are collected and raised
together as one ManifestError, one ``manifest.yaml:LINE: key: what is wrong`` line each. Command-line
overrides are applied here too, so a Job is final when it leaves this module.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from .errors import ManifestError
from .paths import check_relpath, name_from_url
from .sizes import parse_size

DIGEST_HEX_LENGTHS = {"md5": 32, "sha1": 40, "sha256": 64, "sha512": 128, "blake2b": 128}
_MAX_SEGMENTS = 64


@dataclass(frozen=True, slots=True)
class Settings:
    """Per-file knobs; ``defaults:`` sets them for every entry and an entry may override each."""

    segments: int = 8
    min_segment_size: int = 4 * 1024**2
    retries: int = 5
    timeout: float = 30.0
    headers: tuple[tuple[str, str], ...] = (("User-Agent", "bulkdl/0.1"),)


@dataclass(frozen=True, slots=True)
class Job:
    """One file to fetch, fully resolved: the worker needs nothing else."""

    index: int
    url: str
    name: str  # the path below dest, as the user wrote it and reads it in the summary
    path: Path  # absolute destination, built only here after validation
    size: int | None
    digests: tuple[tuple[str, str], ...]  # (algorithm, lower-case hex), manifest order
    settings: Settings


@dataclass(frozen=True, slots=True)
class Overrides:
    """Command-line options that replace manifest values."""

    dest: Path | None = None
    workers: int | None = None
    segments: int | None = None


@dataclass(frozen=True, slots=True)
class Manifest:
    source: Path
    dest: Path
    workers: int
    jobs: tuple[Job, ...]


@dataclass
class _Problems:
    source: str
    found: list[tuple[int, str]] = field(default_factory=list)

    def add(self, node: yaml.Node, key: str, message: str) -> None:
        self.at(node.start_mark.line + 1, key, message)

    def at(self, line: int, key: str, message: str) -> None:
        self.found.append((line, f"{self.source}:{line}: {key}: {message}"))

    def error(self) -> ManifestError:
        """Every problem in file order, one line each."""
        return ManifestError("\n".join(text for _, text in sorted(self.found, key=lambda p: p[0])))


_Convert = Callable[[Any], Any]


def _whole(minimum: int, maximum: int | None = None, what: str = "") -> _Convert:
    def convert(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"expected a whole number of at least {minimum}, got {value!r}")
        if maximum is not None and value > maximum:
            raise ValueError(f"at most {maximum} {what}, got {value}")
        return value

    return convert


_positive_int = _whole(1)


def _positive_size(value: Any) -> int:
    n = parse_size(value)
    if n < 1:
        raise ValueError("must be at least 1 byte")
    return n


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 86400:
        raise ValueError(f"expected seconds between 0 and 86400, got {value!r}")
    return float(value)


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a non-empty string, got {value!r}")
    return value


def _url(value: Any) -> str:
    url = _text(value)
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise ValueError("URL contains whitespace or control characters")
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError(f"only http and https URLs are supported, got {parts.scheme or 'no'} scheme")
    if not parts.hostname:
        raise ValueError("URL has no host")
    return url


def _digest(algorithm: str) -> _Convert:
    length = DIGEST_HEX_LENGTHS[algorithm]

    def convert(value: Any) -> str:
        text = _text(value).strip().lower()
        if len(text) != length or any(ch not in "0123456789abcdef" for ch in text):
            raise ValueError(f"expected {length} hex digits for {algorithm}, got {value!r}")
        return text

    return convert


_SETTING_KEYS: dict[str, _Convert] = {
    "segments": _whole(1, _MAX_SEGMENTS, "segments per file"),
    "min_segment_size": _positive_size,
    "retries": _whole(0),
    "timeout": _seconds,
}
_ENTRY_KEYS: dict[str, _Convert] = {
    "url": _url,
    "path": _text,
    "size": parse_size,
    **{name: _digest(name) for name in DIGEST_HEX_LENGTHS},
}
_TOP_KEYS = {"version", "dest", "workers", "defaults", "files"}


class _Reader:
    """Walks the node tree, converting scalars and recording problems instead of raising."""

    def __init__(self, loader: yaml.SafeLoader, problems: _Problems) -> None:
        self._loader = loader
        self.problems = problems

    def items(self, node: yaml.Node, where: str) -> Iterator[tuple[str, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            self.problems.add(node, where, "expected a mapping of key: value")
            return
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = self._loader.construct_object(key_node) if isinstance(key_node, yaml.ScalarNode) else None
            label = f"{where}.{key}" if where else str(key)
            if not isinstance(key, str):
                self.problems.add(key_node, where or "manifest", f"keys must be strings, got {key!r}")
            elif key in seen:
                self.problems.add(key_node, label, "given twice")
            else:
                seen.add(key)
                yield key, value_node

    def scalar(self, node: yaml.Node, where: str, convert: _Convert) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            self.problems.add(node, where, "expected a single value, not a list or mapping")
            return None
        try:
            return convert(self._loader.construct_object(node))
        except (ValueError, yaml.YAMLError) as exc:
            self.problems.add(node, where, str(exc))
            return None

    def headers(self, node: yaml.Node, where: str) -> dict[str, str]:
        headers: dict[str, str] = {}
        for name, value_node in self.items(node, where):
            value = self.scalar(value_node, f"{where}.{name}", _header_value)
            if any(ch in name for ch in ":\r\n") or not name.strip() or name != name.strip():
                self.problems.add(value_node, f"{where}.{name}", "not a valid header name")
            elif value is not None:
                headers[name] = value
        return headers

    def settings(
        self, node: yaml.Node, where: str, base: Settings, extra: dict[str, _Convert]
    ) -> tuple[Settings, dict[str, tuple[yaml.Node, Any]]]:
        """Read a mapping of settings plus ``extra`` keys; return new settings and the extra values."""
        values: dict[str, Any] = {}
        found: dict[str, tuple[yaml.Node, Any]] = {}
        headers = dict(base.headers)
        for key, value_node in self.items(node, where):
            label = f"{where}.{key}"
            if key == "headers":
                headers.update(self.headers(value_node, label))
            elif key in _SETTING_KEYS:
                value = self.scalar(value_node, label, _SETTING_KEYS[key])
                if value is not None:
                    values[key] = value
            elif key in extra:
                found[key] = (value_node, self.scalar(value_node, label, extra[key]))
            else:
                self.problems.add(value_node, label, f"unknown key (expected one of {_known(extra)})")
        return Settings(headers=_merge_headers(headers), **{**_as_dict(base), **values}), found


def _header_value(value: Any) -> str:
    text = str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value
    if not isinstance(text, str) or "\r" in text or "\n" in text:
        raise ValueError("header values must be single-line strings")
    return text


def _merge_headers(headers: dict[str, str]) -> tuple[tuple[str, str], ...]:
    by_lower: dict[str, tuple[str, str]] = {}
    for name, value in headers.items():
        by_lower[name.lower()] = (name, value)
    return tuple(by_lower.values())


def _as_dict(settings: Settings) -> dict[str, Any]:
    return {key: getattr(settings, key) for key in _SETTING_KEYS}


def _known(extra: dict[str, _Convert]) -> str:
    return ", ".join([*extra, *_SETTING_KEYS, "headers"])


def _compose(text: str, problems: _Problems) -> tuple[yaml.SafeLoader, yaml.Node | None]:
    loader = yaml.SafeLoader(text)
    try:
        return loader, loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        where = f" ({exc.context} on line {exc.context_mark.line + 1})" if exc.context and exc.context_mark else ""
        problems.at(line, "yaml", f"{exc.problem or exc.context}{where}")
    except yaml.YAMLError as exc:
        problems.at(1, "yaml", str(exc))
    return loader, None


def load(source: Path, overrides: Overrides | None = None) -> Manifest:
    """Read and validate ``source``; raise ManifestError listing every problem."""
    overrides = overrides or Overrides()
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{source}:1: manifest: cannot read: {exc}") from None
    return parse(text, source, overrides)


def parse(text: str, source: Path, overrides: Overrides) -> Manifest:
    problems = _Problems(str(source))
    loader, root = _compose(text, problems)
    try:
        manifest = None
        if root is None and not problems.found:
            problems.at(1, "manifest", "the file is empty")
        elif root is not None:
            manifest = _Builder(_Reader(loader, problems), source, overrides).build(root)
    finally:
        loader.dispose()
    if problems.found or manifest is None:
        raise problems.error()
    return manifest


class _Builder:
    def __init__(self, reader: _Reader, source: Path, overrides: Overrides) -> None:
        self.reader = reader
        self.source = source
        self.overrides = overrides

    def build(self, root: yaml.Node) -> Manifest | None:
        top = dict(self.reader.items(root, ""))
        for key in top.keys() - _TOP_KEYS:
            self.reader.problems.add(top[key], key, f"unknown key (expected one of {', '.join(sorted(_TOP_KEYS))})")
        if "version" in top and self.reader.scalar(top["version"], "version", _positive_int) not in (1, None):
            self.reader.problems.add(top["version"], "version", "only version 1 is supported")
        dest = self._dest(top.get("dest"))
        settings = Settings()
        if "defaults" in top:
            settings, _ = self.reader.settings(top["defaults"], "defaults", settings, {})
        if self.overrides.segments is not None:
            settings = _replace_segments(settings, self.overrides.segments)
        if "files" not in top:
            self.reader.problems.add(root, "files", "missing: list the URLs to fetch")
            return None
        jobs = self._jobs(top["files"], dest, settings)
        workers = self._workers(top.get("workers"), len(jobs))
        if self.reader.problems.found:
            return None
        return Manifest(source=self.source, dest=dest, workers=workers, jobs=tuple(jobs))

    def _dest(self, node: yaml.Node | None) -> Path:
        if self.overrides.dest is not None:
            return self.overrides.dest.absolute()
        raw = "." if node is None else self.reader.scalar(node, "dest", _text)
        return Path(os.path.normpath(self.source.absolute().parent / (raw or ".")))

    def _workers(self, node: yaml.Node | None, n_jobs: int) -> int:
        wanted = self.overrides.workers
        if wanted is None and node is not None:
            wanted = self.reader.scalar(node, "workers", _positive_int)
        return max(1, min(wanted or os.cpu_count() or 1, n_jobs))

    def _jobs(self, node: yaml.Node, dest: Path, settings: Settings) -> list[Job]:
        if not isinstance(node, yaml.SequenceNode) or not node.value:
            self.reader.problems.add(node, "files", "expected a non-empty list of URLs or entries")
            return []
        jobs: list[Job] = []
        claimed: dict[str, yaml.Node] = {}
        for index, entry in enumerate(node.value):
            job = self._job(index, entry, dest, settings)
            if job is not None and self._claim(job.name, entry, f"files[{index}].path", claimed):
                jobs.append(job)
        return jobs

    def _job(self, index: int, node: yaml.Node, dest: Path, base: Settings) -> Job | None:
        where = f"files[{index}]"
        found: dict[str, tuple[yaml.Node, Any]]
        if isinstance(node, yaml.ScalarNode):  # a bare URL
            settings, found = base, {"url": (node, self.reader.scalar(node, where, _url))}
        else:
            settings, found = self.reader.settings(node, where, base, _ENTRY_KEYS)
        if self.overrides.segments is not None:
            settings = _replace_segments(settings, self.overrides.segments)
        url = found.get("url", (node, None))[1]
        if "url" not in found and isinstance(node, yaml.MappingNode):
            self.reader.problems.add(node, f"{where}.url", "missing")
        name = self._name(node, where, url, found.get("path"))
        if url is None or name is None:
            return None
        digests = tuple((algo, found[algo][1]) for algo in DIGEST_HEX_LENGTHS if algo in found and found[algo][1])
        size = found.get("size", (node, None))[1]
        return Job(
            index=index,
            url=url,
            name=name,
            path=dest.joinpath(*name.split("/")),
            size=size,
            digests=digests,
            settings=settings,
        )

    def _name(self, node: yaml.Node, where: str, url: str | None, path: tuple[yaml.Node, Any] | None) -> str | None:
        """The destination below dest: the entry's path, else the URL's last segment."""
        try:
            if path is not None:
                return None if path[1] is None else check_relpath(path[1])
            return None if url is None else check_relpath(name_from_url(url))
        except ValueError as exc:
            at, label = (path[0], f"{where}.path") if path else (node, f"{where}.url")
            self.reader.problems.add(at, label, str(exc))
            return None

    def _claim(self, name: str, node: yaml.Node, label: str, claimed: dict[str, yaml.Node]) -> bool:
        """Reject a destination another entry already uses, or one that is a directory of another."""
        parents = ["/".join(name.split("/")[:i]) for i in range(1, name.count("/") + 1)]
        clash = next((other for other in (name, *parents) if other in claimed), None)
        clash = clash or next((other for other in claimed if other.startswith(name + "/")), None)
        if clash is not None:
            line = claimed[clash].start_mark.line + 1
            self.reader.problems.add(node, label, f"destination {name!r} clashes with {clash!r} (line {line})")
            return False
        claimed[name] = node
        return True


def _replace_segments(settings: Settings, segments: int) -> Settings:
    return replace(settings, segments=segments)
