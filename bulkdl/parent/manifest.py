"""The manifest: YAML in, validated immutable jobs out.

Values are read through schema.py, so every problem names the line it stands on. Validation never stops
at the first problem: all of them are collected and raised together as one ManifestError, one
``manifest.yaml:LINE: key: what is wrong`` line each. Command-line overrides are applied here too, so a
Job is final when it leaves this module.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from .. import credentials
from ..errors import ManifestError
from ..paths import check_relpath, name_from_url
from ..sizes import parse_size
from ..values import Job, Settings
from . import schema
from .schema import DIGEST_HEX_LENGTHS

_MAX_SEGMENTS = 64


@dataclass(frozen=True, slots=True)
class Overrides:
    """Command-line options that replace manifest values."""

    dest: Path | None = None
    workers: int | None = None
    segments: int | None = None
    ca_bundle: Path | None = None


@dataclass(frozen=True, slots=True)
class Manifest:
    source: Path
    dest: Path
    workers: int
    jobs: tuple[Job, ...]


_SETTING_KEYS: dict[str, schema.Convert] = {
    "segments": schema.whole(1, _MAX_SEGMENTS, "segments per file"),
    "min_segment_size": schema.positive_size,
    "retries": schema.whole(0),
    "timeout": schema.seconds,
    "min_speed": parse_size,
    "stall_time": schema.seconds,
    "max_retry_after": schema.seconds,
    "max_size": schema.positive_size,
}
_ENTRY_KEYS: dict[str, schema.Convert] = {
    "url": schema.http_url,
    "path": schema.non_empty_text,
    "size": parse_size,
    **{name: schema.hex_digest(name) for name in DIGEST_HEX_LENGTHS},
    "insecure": schema.flag,
    "mirrors": schema.http_url,  # each item of the list
}
_TOP_KEYS = {"version", "dest", "workers", "defaults", "files", "ca_bundle"}


def _merge_headers(headers: dict[str, str]) -> tuple[tuple[str, str], ...]:
    by_lower: dict[str, tuple[str, str]] = {}
    for name, value in headers.items():
        by_lower[name.lower()] = (name, value)
    return tuple(by_lower.values())


def _known(extra: dict[str, schema.Convert]) -> str:
    return ", ".join([*extra, *_SETTING_KEYS, "headers"])


def load(source: Path, overrides: Overrides | None = None) -> Manifest:
    """Read and validate ``source``; raise ManifestError listing every problem."""
    overrides = overrides or Overrides()
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{source}:1: manifest: cannot read: {exc}") from None
    return parse(text, source, overrides)


def parse(text: str, source: Path, overrides: Overrides) -> Manifest:
    problems = schema.Problems(str(source))
    loader, root = schema.compose(text, problems)
    try:
        manifest = None
        if root is None and not problems.found:
            problems.at(1, "manifest", "the file is empty")
        elif root is not None and loader is not None:
            manifest = _Builder(schema.Reader(loader, problems), source, overrides).build(root)
    finally:
        if loader is not None:
            loader.dispose()
    if problems.found or manifest is None:
        raise problems.error()
    return manifest


class _Builder:
    def __init__(self, reader: schema.Reader, source: Path, overrides: Overrides) -> None:
        self.reader = reader
        self.source = source
        self.overrides = overrides
        self._netrc_lookup: credentials.Netrc | None = None
        self._dirs: dict[str, str] = {}  # a directory some destination lies in → the first such destination

    def _netrc(self, node: yaml.Node) -> credentials.Netrc:
        """The netrc lookup, read once; an unusable netrc file is a problem of the manifest's run."""
        if self._netrc_lookup is None:
            try:
                self._netrc_lookup = credentials.netrc_lookup()
            except ValueError as exc:
                self.reader.problems.add(node, "netrc", str(exc))
                self._netrc_lookup = lambda host: None
        return self._netrc_lookup

    def build(self, root: yaml.Node) -> Manifest | None:
        top = dict(self.reader.items(root, ""))
        for key in top.keys() - _TOP_KEYS:
            self.reader.problems.add(top[key], key, f"unknown key (expected one of {', '.join(sorted(_TOP_KEYS))})")
        if "version" in top and self.reader.scalar(top["version"], "version", schema.positive_int) not in (1, None):
            self.reader.problems.add(top["version"], "version", "only version 1 is supported")
        dest = self._dest(top.get("dest"))
        settings = Settings(ca_bundle=self._ca_bundle(top.get("ca_bundle")))
        if "defaults" in top:
            settings, _ = self._settings(top["defaults"], "defaults", settings, {})
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

    def _settings(
        self, node: yaml.Node, where: str, base: Settings, extra: dict[str, schema.Convert]
    ) -> tuple[Settings, dict[str, tuple[yaml.Node, Any]]]:
        """Read a mapping of settings plus ``extra`` keys; return new settings and the extra values."""
        values: dict[str, Any] = {}
        found: dict[str, tuple[yaml.Node, Any]] = {}
        headers = dict(base.headers)
        for key, value_node in self.reader.items(node, where):
            label = f"{where}.{key}"
            if key == "headers":
                headers.update(self.reader.headers(value_node, label))
            elif key in _SETTING_KEYS:
                value = self.reader.scalar(value_node, label, _SETTING_KEYS[key])
                if value is not None:
                    values[key] = value
            elif key == "mirrors" and key in extra:
                found[key] = (value_node, self._mirrors(value_node, label))
            elif key in extra:
                found[key] = (value_node, self.reader.scalar(value_node, label, extra[key]))
            elif key == "insecure":
                self.reader.problems.add(value_node, label, "allowed per entry only, so each unverified file is chosen")
            else:
                self.reader.problems.add(value_node, label, f"unknown key (expected one of {_known(extra)})")
        return replace(base, headers=_merge_headers(headers), **values), found

    def _dest(self, node: yaml.Node | None) -> Path:
        if self.overrides.dest is not None:
            return self.overrides.dest.absolute()
        raw = "." if node is None else self.reader.scalar(node, "dest", schema.non_empty_text)
        return Path(os.path.normpath(self.source.absolute().parent / (raw or ".")))

    def _mirrors(self, node: yaml.Node, where: str) -> tuple[str, ...]:
        if not isinstance(node, yaml.SequenceNode):
            self.reader.problems.add(node, where, "expected a list of URLs")
            return ()
        urls = []
        for i, item in enumerate(node.value):
            url = self.reader.scalar(item, f"{where}[{i}]", schema.http_url)
            if url is not None and urlsplit(url).username is not None:
                self.reader.problems.add(item, f"{where}[{i}]", "credentials in a mirror URL would go to another host")
            elif url is not None:
                urls.append(url)
        return tuple(urls)

    def _ca_bundle(self, node: yaml.Node | None) -> str | None:
        """The CA file to trust: --ca-bundle (from the working directory), else the manifest's (from its own)."""
        if self.overrides.ca_bundle is not None:
            return str(self.overrides.ca_bundle.absolute())  # the command line checked it exists
        raw = None if node is None else self.reader.scalar(node, "ca_bundle", schema.non_empty_text)
        if node is None or raw is None:
            return None
        path = self.source.absolute().parent / raw
        if not path.is_file():
            self.reader.problems.add(node, "ca_bundle", f"no such file: {path}")
        return str(path)

    def _workers(self, node: yaml.Node | None, n_jobs: int) -> int:
        wanted = self.overrides.workers
        if wanted is None and node is not None:
            wanted = self.reader.scalar(node, "workers", schema.positive_int)
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
            settings, found = base, {"url": (node, self.reader.scalar(node, where, schema.http_url))}
        else:
            settings, found = self._settings(node, where, base, _ENTRY_KEYS)
        if self.overrides.segments is not None:
            settings = _replace_segments(settings, self.overrides.segments)
        if found.get("insecure", (node, None))[1]:
            settings = replace(settings, insecure=True)
        url = found.get("url", (node, None))[1]
        if "url" not in found and isinstance(node, yaml.MappingNode):
            self.reader.problems.add(node, f"{where}.url", "missing")
        name = self._name(node, where, url, found.get("path"))
        if url is None or name is None:
            return None
        digests = tuple((algo, found[algo][1]) for algo in DIGEST_HEX_LENGTHS if algo in found and found[algo][1])
        size = found.get("size", (node, None))[1]
        resolved = credentials.resolve(url, settings.headers, self._netrc(node))
        return Job(
            index=index,
            url=resolved.url,
            shown_url=resolved.shown_url,
            mirrors=found.get("mirrors", (node, ()))[1] or (),
            secrets=resolved.secrets,
            name=name,
            path=dest.joinpath(*name.split("/")),
            size=size,
            digests=digests,
            settings=replace(settings, headers=resolved.headers),
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
        """Reject a destination another entry already uses, or one that is a directory of another.

        ``claimed`` maps each file to its node and each directory above a file to the first such file, so
        every check is a few dictionary look-ups, not a scan of all names.
        """
        parents = ["/".join(name.split("/")[:i]) for i in range(1, name.count("/") + 1)]
        clash = next((other for other in (name, *parents) if other in claimed and other not in self._dirs), None)
        if clash is None and name in self._dirs:
            clash = self._dirs[name]
        if clash is not None:
            line = claimed[clash].start_mark.line + 1
            self.reader.problems.add(node, label, f"destination {name!r} clashes with {clash!r} (line {line})")
            return False
        claimed[name] = node
        for parent in parents:
            self._dirs.setdefault(parent, name)
        return True


def _replace_segments(settings: Settings, segments: int) -> Settings:
    return replace(settings, segments=segments)
