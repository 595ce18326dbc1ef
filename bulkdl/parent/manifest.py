"""The manifest: YAML in, validated immutable jobs out.

The text becomes plain data in yamldoc.py and values are read through schema.py, so every problem names the
line it stands on. Validation never stops
at the first problem: all of them are collected and raised together as one ManifestError, one
``manifest.yaml:LINE: key: what is wrong`` line each (``LINE:COL`` for a YAML syntax error). Command-line
overrides are applied here too, so a Job is final when it leaves this module.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .. import credentials, sums
from ..errors import ManifestError, UsageError
from ..paths import check_relpath, name_from_url, query_in_name
from ..values import Budget, Job, Settings
from . import claims, schema, yamldoc
from .prune import Cap, Pruning
from .schema import DIGEST_HEX_LENGTHS


@dataclass(frozen=True, slots=True)
class Overrides:
    """Command-line options that replace manifest values."""

    dest: Path | None = None
    workers: int | None = None
    segments: int | None = None
    ca_bundle: Path | None = None
    connections: int | None = None
    max_connections_per_host: int | None = None
    limit_rate: int | None = None
    prune: bool | None = None  # --prune, --no-prune
    max_delete: Cap | None = None
    backup_dir: Path | None = None  # relative to the working directory
    revalidate: bool | None = None
    checksums_file: Path | None = None
    max_duration: float | None = None
    trace: Path | None = None
    scheduler: str | None = None  # --scheduler: a Dask scheduler's address


@dataclass(frozen=True, slots=True)
class Manifest:
    source: Path
    dest: Path
    workers: int
    jobs: tuple[Job, ...]
    budget: Budget = field(default_factory=Budget)
    prune: Pruning | None = None  # None: prune is off
    revalidate: bool = False  # ask the server even about files the state proves current by digest
    checksums_file: Path | None = None  # where to write the mirror's SHA256SUMS after each run (absolute)
    max_duration: float | None = None  # seconds from the start of the command (--max-duration)
    trace: Path | None = None  # where a run without failure writes its trace (parent/trace.py)
    scheduler: str | None = None  # a Dask scheduler's address (bulkdl/cluster/); None: the local pool
    connections_set: bool = False  # the command line or the manifest set ``connections``, not the default


def load(source: Path, overrides: Overrides | None = None) -> Manifest:
    """Read and validate ``source``; raise ManifestError listing every problem."""
    overrides = overrides or Overrides()
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{source}:1: manifest: cannot read: {exc}") from None
    with _no_collection():
        return parse(text, source, overrides)


@contextlib.contextmanager
def _no_collection() -> Iterator[None]:
    """The cyclic garbage collector held off while a manifest is read.

    Reading makes several objects per entry that live on (the data, then each Job, its Path and digests) and
    no cycles; the collector would walk all of them again each time their number grew by a quarter: 6 full
    collections, 0.3 s of a 100,000-entry manifest's 2.3 s. They are walked once, later, as any new objects.
    """
    if not gc.isenabled():  # someone else's choice: theirs to undo
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def parse(text: str, source: Path, overrides: Overrides) -> Manifest:
    problems = schema.Problems(str(source))
    manifest = None
    try:
        document = yamldoc.read(text)
    except yamldoc.Unreadable as exc:
        problems.at(exc.line, "yaml", exc.message, exc.column)
    else:
        if document.empty:
            problems.at(1, "manifest", "the file is empty")
        else:
            manifest = _Builder(schema.Reader(document, problems), source, overrides).build(document.data)
            if manifest is None and document.data.__class__ is str:
                _refuse_checksum_file(text, source)
    if problems.found or manifest is None:
        raise problems.error(lambda: yamldoc.lines(text))
    return manifest


def _refuse_checksum_file(text: str, source: Path) -> None:
    """``bulkdl check SHA256SUMS``: YAML reads a checksum file as one string; say what it is, and what to run."""
    try:
        sums.parse(text, str(source))
    except ManifestError:
        return
    raise ManifestError(
        f"{source}:1: manifest: a checksum file, not a manifest; "
        f"`bulkdl manifest from-sums {source} --base-url URL` makes one of it"
    )


class _Builder:
    def __init__(self, reader: schema.Reader, source: Path, overrides: Overrides) -> None:
        self.reader = reader
        self.problems = reader.problems
        self.source = source
        self.overrides = overrides
        self._credentials: credentials.Resolver | None = None
        self._shared: dict[tuple[Settings, credentials.Headers], Settings] = {}  # one per distinct result
        self._claims = claims.Claims()
        self._directories: dict[str, Path] = {}  # "a/b" → dest/a/b, for the entries' paths
        self._entry_keys = schema.ENTRY_KEYS

    def _resolver(self, path: schema.Where) -> credentials.Resolver:
        """The credentials of the manifest's URLs; an unusable netrc file is a problem of the manifest's run."""
        if self._credentials is None:
            try:
                lookup = credentials.netrc_lookup()
            except ValueError as exc:
                self.problems.add(path, str(exc), key="netrc")
                lookup = _no_login
            self._credentials = credentials.Resolver(lookup)
        return self._credentials

    def build(self, root: Any) -> Manifest | None:
        top = dict(self.reader.items(root, ()))
        for key in top.keys() - schema.TOP_KEYS:
            self.problems.add((key,), schema.top_key(key))
        if "version" in top:
            self.reader.scalar(top["version"], ("version",), schema.version)
        elif root.__class__ is dict:
            self.problems.add((), schema.MISSING_VERSION, key="version")
        dest = self._dest(top)
        settings = Settings(ca_bundle=self._ca_bundle(top))
        if "defaults" in top:
            settings, _ = self._settings(top["defaults"], ("defaults",), settings, {})
        if self.overrides.segments is not None:
            settings = replace(settings, segments=self.overrides.segments)
        if "files" not in top:
            self.problems.add((), "missing: list the URLs to fetch", key="files")
            return None
        self._base_url(top)
        jobs = self._jobs(top["files"], dest, settings)
        workers = self._workers(top, len(jobs))
        budget = self._budget(top)
        pruning = self._pruning(top, dest)
        revalidate = self._revalidate(top)
        checksums_file = self._checksums_file(top, dest, len(jobs))
        max_duration = self.overrides.max_duration
        if max_duration is None and "max_duration" in top:
            max_duration = self.reader.scalar(top["max_duration"], ("max_duration",), schema.duration)
        trace = self._trace(top, dest, jobs)
        scheduler = self.overrides.scheduler
        if scheduler is None and "scheduler" in top:
            scheduler = self.reader.scalar(top["scheduler"], ("scheduler",), schema.scheduler)
        if self.problems.found:
            return None
        return Manifest(
            source=self.source,
            dest=dest,
            workers=workers,
            jobs=tuple(jobs),
            budget=budget,
            prune=pruning,
            revalidate=revalidate,
            checksums_file=checksums_file,
            max_duration=max_duration,
            trace=trace,
            scheduler=scheduler,
            connections_set=self.overrides.connections is not None or "connections" in top,
        )

    def _revalidate(self, top: dict[str, Any]) -> bool:
        """--revalidate or --no-revalidate, else the manifest's ``revalidate:``, else off."""
        if self.overrides.revalidate is not None:
            return self.overrides.revalidate
        return "revalidate" in top and self.reader.scalar(top["revalidate"], ("revalidate",), schema.flag) is True

    def _base_url(self, top: dict[str, Any]) -> None:
        """Entries' ``url`` from now on: relative ones resolved against the top-level ``base_url``."""
        base = self.reader.scalar(top["base_url"], ("base_url",), schema.base_url) if "base_url" in top else None
        self._entry_keys = {**schema.ENTRY_KEYS, "url": schema.entry_url(base)}

    def _checksums_file(self, top: dict[str, Any], dest: Path, index: int) -> Path | None:
        """Where the checksums file goes: --checksums-file (from the working directory), else the manifest's,
        a path below dest that no entry may claim."""
        if self.overrides.checksums_file is not None:
            return self.overrides.checksums_file.absolute()  # parent/checksums.py refuses one on a download
        if "checksums_file" not in top:
            return None
        raw = self.reader.scalar(top["checksums_file"], ("checksums_file",), schema.non_empty_text)
        try:
            name = None if raw is None else check_relpath(raw)
        except ValueError as exc:
            self.problems.add(("checksums_file",), str(exc))
            return None
        clash = None if name is None else self._claims.clash(name, index)
        if clash is not None:
            self.problems.add(
                ("checksums_file",), f"{name!r} clashes with the entry for {clash[0]!r}", see=("files", clash[1])
            )
        return None if name is None else dest / name

    def _trace(self, top: dict[str, Any], dest: Path, jobs: list[Job]) -> Path | None:
        """The trace file: --trace (from the working directory), else the manifest's, a path below dest that
        no entry of the manifest may also claim."""
        if self.overrides.trace is not None:
            return self.overrides.trace.absolute()
        raw = self.reader.scalar(top["trace"], ("trace",), schema.non_empty_text) if "trace" in top else None
        if raw is None:
            return None
        try:
            name = check_relpath(raw)
        except ValueError as exc:
            self.problems.add(("trace",), str(exc))
            return None
        if any(job.name == name for job in jobs):
            self.problems.add(("trace",), f"{name!r} is also a file of the manifest")
        return dest / name

    def _budget(self, top: dict[str, Any]) -> Budget:
        """The run's budget: the command line's, else the manifest's, else the built-in one."""
        given: dict[str, Any] = {}
        for key, convert in schema.BUDGET_KEYS.items():
            value = getattr(self.overrides, key)
            if value is None and key in top:
                value = self.reader.scalar(top[key], (key,), convert)
            if value is not None:
                given[key] = value
        if "max_connections_per_host" in given:
            given["per_host"] = given.pop("max_connections_per_host")
        return Budget(**given)

    def _pruning(self, top: dict[str, Any], dest: Path) -> Pruning | None:
        """Prune's settings, the command line's over the manifest's; None when prune is off."""
        given = {
            key: self.reader.scalar(top[key], (key,), convert)
            for key, convert in schema.PRUNE_KEYS.items()
            if key in top
        }
        wanted = self.overrides.prune if self.overrides.prune is not None else given.get("prune")
        backup = self._backup_dir(given.get("backup_dir"), dest)
        if not wanted:
            return None
        return Pruning(cap=self.overrides.max_delete or given.get("max_delete") or Cap(), backup_dir=backup)

    def _backup_dir(self, raw: str | None, dest: Path) -> Path | None:
        """The backup directory, absolute: --backup-dir from the working directory, the manifest's from dest.

        It must not overlap dest (rclone refuses the same): inside it, its files would look like the mirror's
        and a later manifest could name them; around it, a file moved below it could land back inside dest.
        """
        if self.overrides.backup_dir is not None:
            backup = self.overrides.backup_dir.absolute()
        elif raw is not None:
            backup = Path(os.path.normpath(dest / raw))
        else:
            return None
        mine, theirs = backup.resolve(), dest.resolve()
        if mine == theirs or mine.is_relative_to(theirs) or theirs.is_relative_to(mine):
            why = f"{backup} overlaps the destination {dest}; choose a directory outside it"
            if self.overrides.backup_dir is not None:
                raise UsageError(f"--backup-dir {why}")
            self.problems.add(("backup_dir",), why)
        return backup

    def _settings(
        self, value: Any, path: schema.Where, base: Settings, extra: dict[str, schema.Convert]
    ) -> tuple[Settings, dict[str, Any]]:
        """Read a mapping of settings plus ``extra`` keys; return the settings (``base`` if none) and the extras."""
        values: dict[str, Any] = {}
        found: dict[str, Any] = {}
        headers = None
        for key, item in self.reader.items(value, path):
            if key == "mirrors" and key in extra:
                found[key] = self._mirrors(item, (*path, key))
            elif key in extra:
                found[key] = self.reader.scalar(item, (*path, key), extra[key])
            elif key in schema.SETTING_KEYS:
                converted = self.reader.scalar(item, (*path, key), schema.SETTING_KEYS[key])
                if converted is not None:
                    values[key] = converted
            elif key == "headers":
                headers = {**(headers or dict(base.headers)), **self.reader.headers(item, (*path, key))}
            elif key == "insecure":
                self.problems.add((*path, key), "allowed per entry only, so each unverified file is chosen")
            elif key in schema.ENTRY_KEYS:
                self.problems.add((*path, key), "allowed in an entry only: it names one file")
            else:
                self.problems.add((*path, key), schema.unknown_key(key, [*extra, *schema.SETTING_KEYS, "headers"]))
        if headers is not None:
            values["headers"] = schema.merge_headers(headers)
        return (replace(base, **values) if values else base), found

    def _dest(self, top: dict[str, Any]) -> Path:
        if self.overrides.dest is not None:
            return self.overrides.dest.absolute()
        raw = self.reader.scalar(top["dest"], ("dest",), schema.non_empty_text) if "dest" in top else "."
        return Path(os.path.normpath(self.source.absolute().parent / (raw or ".")))

    def _mirrors(self, value: Any, path: schema.Where) -> tuple[str, ...]:
        if value.__class__ is not list:
            self.problems.add(path, "expected a list of URLs")
            return ()
        urls = []
        for i, item in enumerate(value):
            url = self.reader.scalar(item, (*path, i), schema.http_url)
            if url is not None and urlsplit(url).username is not None:
                self.problems.add((*path, i), "credentials in a mirror URL would go to another host")
            elif url is not None:
                urls.append(url)
        return tuple(urls)

    def _ca_bundle(self, top: dict[str, Any]) -> str | None:
        """The CA file to trust: --ca-bundle (from the working directory), else the manifest's (from its own)."""
        if self.overrides.ca_bundle is not None:
            return str(self.overrides.ca_bundle.absolute())  # the command line checked it exists
        raw = (
            self.reader.scalar(top["ca_bundle"], ("ca_bundle",), schema.non_empty_text) if "ca_bundle" in top else None
        )
        if raw is None:
            return None
        path = self.source.absolute().parent / raw
        if not path.is_file():
            self.problems.add(("ca_bundle",), f"no such file: {path}")
        return str(path)

    def _workers(self, top: dict[str, Any], n_jobs: int) -> int:
        wanted = self.overrides.workers
        if wanted is None and "workers" in top:
            wanted = self.reader.scalar(top["workers"], ("workers",), schema.positive_int)
        return max(1, min(wanted or os.cpu_count() or 1, n_jobs))

    def _jobs(self, value: Any, dest: Path, settings: Settings) -> list[Job]:
        if value.__class__ is not list or not value:
            self.problems.add(("files",), "expected a non-empty list of URLs or entries")
            return []
        jobs: list[Job] = []
        for index, entry in enumerate(value):
            job = self._job(index, entry, dest, settings)
            if job is not None and self._claim(job.name, index):
                jobs.append(job)
        return jobs

    def _job(self, index: int, entry: Any, dest: Path, base: Settings) -> Job | None:
        path = ("files", index)
        found: dict[str, Any]
        if entry.__class__ is not dict and entry.__class__ is not list:  # a bare URL
            settings, found = base, {"url": self.reader.scalar(entry, path, self._entry_keys["url"])}
        else:
            settings, found = self._settings(entry, path, base, self._entry_keys)
            if "url" not in found and entry.__class__ is dict:
                self.problems.add(path, "missing", key=f"{schema.label(path)}.url")
        if self.overrides.segments is not None and settings is not base:
            settings = replace(settings, segments=self.overrides.segments)
        if found.get("insecure"):
            settings = replace(settings, insecure=True)
        url = found.get("url")
        name = self._name(path, url, found)
        if url is None or name is None:
            return None
        resolved = self._resolver(path).resolve(url, settings.headers)
        return Job(
            index=index,
            url=resolved.url,
            shown_url=resolved.shown_url,
            mirrors=found.get("mirrors") or (),
            secrets=resolved.secrets,
            name=name,
            path=self._below(dest, name),
            size=found.get("size"),
            digests=tuple((algo, found[algo]) for algo in DIGEST_HEX_LENGTHS if found.get(algo)),
            settings=self._with_headers(settings, resolved.headers),
        )

    def _below(self, dest: Path, name: str) -> Path:
        """``dest / name``, made from its directory's Path: pathlib parses each join again (0.17 s of 100,000
        entries on Python 3.11), and where its private child-of-a-directory step exists that is 5 times less."""
        head, _, leaf = name.rpartition("/")  # name is normalised: no empty, "." or ".." parts
        directory = self._directories.get(head)
        if directory is None:
            directory = self._directories[head] = dest / head if head else dest
        return directory / leaf if _CHILD is None else _CHILD(directory, leaf)

    def _with_headers(self, settings: Settings, headers: credentials.Headers) -> Settings:
        """``settings`` with the resolved headers; the same object for every job that resolves alike."""
        if headers == settings.headers:
            return settings
        key = (settings, headers)
        if key not in self._shared:
            self._shared[key] = replace(settings, headers=headers)
        return self._shared[key]

    def _name(self, path: schema.Where, url: str | None, found: dict[str, Any]) -> str | None:
        """The destination below dest: the entry's path, else the URL's last segment."""
        try:
            if "path" in found:
                return None if found["path"] is None else check_relpath(found["path"])
            if url is None:
                return None
            query_in_name(url)
            return check_relpath(name_from_url(url))
        except ValueError as exc:
            if "path" in found:
                self.problems.add((*path, "path"), str(exc))
            else:
                self.problems.add(path, str(exc), key=f"{schema.label(path)}.url")
            return None

    def _claim(self, name: str, index: int) -> bool:
        clash = self._claims.clash(name, index)
        if clash is not None:
            other, other_index = clash
            self.problems.add(
                ("files", index),
                f"destination {name!r} clashes with {other!r}",
                key=f"files[{index}].path",
                see=("files", other_index),
            )
        return clash is None


# The step Path.iterdir takes for each name in a directory (Python 3.10-3.12; 3.13 joins as fast without it).
_CHILD = getattr(Path, "_make_child_relpath", None)


def _no_login(host: str) -> None:
    return None
