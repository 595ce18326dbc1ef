"""Live progress on a terminal: the overall bar and one row per file in flight. Draws nothing when off."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from types import TracebackType

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from ...values import FileResult


class ProgressView:
    """Overall bytes and files plus one bar per active file; draws nothing when disabled."""

    def __init__(self, enabled: bool, names: Mapping[int, str], sizes: Mapping[int, int | None]) -> None:
        self._names = names
        self._progress: Progress | None = None
        self._files: dict[int, TaskID] = {}
        self._sizes = {index: size for index, size in sizes.items() if size is not None}
        self._finished: set[int] = set()
        if enabled:
            self._progress = Progress(
                TextColumn("{task.description}", justify="left"),
                BarColumn(),
                DownloadColumn(binary_units=True),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=Console(file=sys.stdout),
                transient=True,
            )
            self._overall = self._progress.add_task(self._overall_label(), total=sum(self._sizes.values()) or None)

    def __enter__(self) -> ProgressView:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.stop()

    @property
    def active(self) -> list[str]:
        """The files that have a bar of their own right now."""
        return [self._names[index] for index in self._files]

    def _overall_label(self) -> str:
        return f"[bold]all files {len(self._finished)}/{len(self._names)}"

    def tick(self, index: int, n: int, size: int | None) -> None:
        # A file's last tick travels on another channel than its result and may arrive after it.
        if self._progress is None or index in self._finished:
            return
        if index not in self._files:
            self._files[index] = self._progress.add_task(escape(self._names[index]), total=size)
            if size is not None:
                self._sizes[index] = size
                self._progress.update(self._overall, total=sum(self._sizes.values()))
        self._progress.advance(self._files[index], n)
        self._progress.advance(self._overall, n)

    def finished(self, result: FileResult) -> None:
        if self._progress is None:
            return
        self._finished.add(result.index)
        task = self._files.pop(result.index, None)
        if task is not None:
            self._progress.remove_task(task)
        self._progress.update(self._overall, description=self._overall_label())
