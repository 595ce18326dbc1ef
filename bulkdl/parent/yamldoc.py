"""YAML text to plain data, straight from the parser's events: no nodes, no marks kept, no constructor pass.

Composing PyYAML nodes costs a Node and two Marks per value and the Python resolver per scalar: 4 s of a
100,000-entry manifest. Here libyaml's events (PyYAML's own parser without libyaml) become dicts, lists and
scalars in one loop, plain scalars resolved with PyYAML's implicit-resolver table and built by its
SafeConstructor, so the data is what ``yaml.safe_load`` returns. What plain data cannot say is kept beside
it: the keys of a mapping given twice or not strings (``Document.bad_keys``), and an
alias that expands the document far beyond its text or names a node it lies in (``Unreadable``, like a
syntax error). Lines are found only when a problem needs one: ``lines`` reads the text again and builds the
same shape with each value replaced by the line it starts on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.events import (
    AliasEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
)

from . import yamlhints
from .scalars import RESOLVED_FIRST, Invalid, scalar

# libyaml's events are several times faster to come by than the pure-Python parser's.
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MAX_DEPTH = 1000  # libyaml refuses more itself; the pure-Python parser has no limit
_ALIAS_ALLOWANCE = 100_000  # values aliases may add beyond one per character of the text
_NO_KEY: Any = object()  # a mapping waits for its next key
_SKIP: Any = object()  # the value of a key that cannot be used


class Unreadable(Exception):
    """The text is not one YAML document this can read; ``line`` (and ``column``, when known) is where."""

    def __init__(self, line: int, message: str, column: int | None = None) -> None:
        super().__init__(message)
        self.line = line
        self.message = message
        self.column = column


@dataclass(frozen=True, slots=True)
class BadKey:
    """A key that cannot be used, and where: ``before`` keys of its mapping come first."""

    before: int
    key: str | None  # the key given twice; None for one that is not a string
    line: int
    problem: str


@dataclass
class Document:
    data: Any = None
    empty: bool = True  # the stream holds no document at all
    # id(mapping) → the mapping and its keys given twice or not strings, for the few mappings that have any.
    # The mapping is held so that its id stays its own: a mapping that was dropped (the value of a key given
    # twice) would free it for a later one, which then got its messages.
    bad_keys: dict[int, tuple[dict[Any, Any], list[BadKey]]] = field(default_factory=dict)


def read(text: str) -> Document:
    """The document in ``text`` as plain data; raises Unreadable."""
    return _Build(len(text), lines=False).run(text)


def lines(text: str) -> Callable[[tuple[Any, ...]], int]:
    """Where each value of the (readable) ``text`` starts: path → 1-based line."""
    tree = _Build(len(text), lines=True).run(text).data

    def line(path: tuple[Any, ...]) -> int:
        # An alias used once as a key and once as a value makes the line tree differ in shape from the data
        # (a key stays its value, a value becomes its line): the problem is then reported at the line of the
        # deepest container the walk reached, never with a traceback.
        node, found = tree, 1
        try:
            for step in path:
                found = int(node[0])
                node = node[1][step]
            return node if isinstance(node, int) else int(node[0])
        except (KeyError, IndexError, TypeError, ValueError):
            return found

    return line


class _Build:
    """One pass over the events; with ``lines`` each value is its line and each container (line, container)."""

    def __init__(self, text_length: int, lines: bool) -> None:
        self.limit = text_length + _ALIAS_ALLOWANCE
        self.lines = lines
        self.doc = Document()
        self.anchors: dict[str, Any] = {}
        self.sizes: dict[str, int] = {}  # anchor → its value's size with aliases written out; absent: still open
        self.marks: dict[str, Any] = {}  # anchor → the mark of its node
        self.stack: list[tuple[Any, ...]] = []  # per open container: the enclosing state and where it began

    def run(self, text: str) -> Document:
        self.text = text
        try:
            loader = _LOADER(text)  # the pure-Python reader checks every character here
            try:
                self._events(loader.get_event)
            finally:
                loader.dispose()
        except yaml.MarkedYAMLError as exc:
            raise _marked(exc, text) from None
        except yaml.reader.ReaderError as exc:  # a character YAML does not allow, such as NUL
            raise _unprintable(text, exc) from None
        except yaml.YAMLError as exc:
            raise Unreadable(1, str(exc)) from None
        return self.doc

    def _events(self, get_event: Callable[[], Any]) -> None:
        root: list[Any] = []  # holds the document, so the root is filed like any list item
        cur: Any = root  # the open container
        key: Any = _NO_KEY  # the key waiting for its value, in a mapping
        nodes = 0  # values so far, each alias counted as the size of what it names
        lines = self.lines
        while (event := get_event()) is not None:
            kind = event.__class__
            nodes += 1
            if kind is ScalarEvent:
                obj = (
                    event.start_mark.line + 1
                    if lines and (key is not _NO_KEY or cur.__class__ is not dict)
                    else event.value  # what scalar(event) gives, without the call: most of a manifest's scalars
                    if event.tag is None and event.value[:1] not in RESOLVED_FIRST
                    else scalar(event)
                )
                if event.anchor is not None:
                    self._anchor(event, obj, 1)
            elif kind is AliasEvent:
                obj, size = self._alias(event)
                nodes += size - 1
            elif kind is MappingStartEvent or kind is SequenceStartEvent:
                self.stack.append((cur, key, event, nodes - 1))
                cur, key = ({} if kind is MappingStartEvent else []), _NO_KEY
                self._open(event, cur)
                continue
            elif kind is MappingEndEvent or kind is SequenceEndEvent:
                nodes -= 1  # counted at its start
                frame = self.stack.pop()
                obj = self._close(cur, frame, nodes)
                cur, key, event = frame[0], frame[1], frame[2]  # the start event: where the container began
            else:
                nodes -= 1
                self._document(event, root)
                continue
            if cur.__class__ is list:
                cur.append(obj)
            elif key is not _NO_KEY:
                cur[key] = obj  # under _SKIP when the key cannot be used; _close drops it
                key = _NO_KEY
            elif obj.__class__ is str and obj not in cur:
                key = obj
            else:
                key = self._key(cur, obj, event)
        self.doc.data, self.doc.empty = (root[0], False) if root else (None, True)

    def _open(self, event: Any, container: Any) -> None:
        if len(self.stack) > _MAX_DEPTH:
            raise Unreadable(event.start_mark.line + 1, "nested too deeply")
        if event.anchor is not None:  # registered before its contents, so an alias inside it is seen
            self._anchor(event, (event.start_mark.line + 1, container) if self.lines else container, None)

    def _close(self, container: Any, frame: tuple[Any, ...], nodes: int) -> Any:
        _, _, start, nodes_before = frame
        size = nodes - nodes_before
        if size > self.limit:
            raise Unreadable(
                start.start_mark.line + 1,
                f"aliases expand the manifest to over {self.limit} values, far more than it holds; write them out",
            )
        if start.anchor is not None:
            self.sizes[start.anchor] = size
        if self.doc.bad_keys and container.__class__ is dict:
            container.pop(_SKIP, None)
        return (start.start_mark.line + 1, container) if self.lines else container

    def _anchor(self, event: Any, obj: Any, size: int | None) -> None:
        if event.anchor in self.anchors:  # PyYAML's composer refuses it, with these words and marks
            raise yaml.composer.ComposerError(
                "found duplicate anchor; first occurrence",
                self.marks[event.anchor],
                "second occurrence",
                event.start_mark,
            )
        self.anchors[event.anchor] = obj
        self.marks[event.anchor] = event.start_mark
        if size is not None:
            self.sizes[event.anchor] = size

    def _alias(self, event: Any) -> tuple[Any, int]:
        if event.anchor not in self.anchors:
            raise yaml.composer.ComposerError(None, None, "found undefined alias", event.start_mark)
        if event.anchor not in self.sizes:  # its node is still open: the alias lies inside what it names
            raise Unreadable(self.marks[event.anchor].line + 1, "an alias refers to a node that contains it")
        return self.anchors[event.anchor], self.sizes[event.anchor]

    def _document(self, event: Any, root: list[Any]) -> None:
        if event.__class__ is DocumentStartEvent and root:  # PyYAML's words; its mark is the first document's
            first: Any = _LOADER(self.text)
            while not isinstance(start := first.get_event(), yaml.NodeEvent):
                pass
            first.dispose()
            marks: list[Any] = [start.start_mark, event.start_mark]
            raise yaml.composer.ComposerError(
                "expected a single document in the stream", marks[0], "but found another document", marks[1]
            )

    def _key(self, mapping: dict[Any, Any], key: Any, event: Any) -> Any:
        """A key that cannot be used is noted; its value goes under _SKIP, and a key's first value stays."""
        text = key.__class__ is str
        before = len(mapping) - (_SKIP in mapping)
        problem = "given twice" if text else _not_text(key)
        self.doc.bad_keys.setdefault(id(mapping), (mapping, []))[1].append(
            BadKey(before, key if text else None, event.start_mark.line + 1, problem)
        )
        if text or isinstance(key, Invalid | list | dict | tuple):
            return _SKIP  # a list or mapping cannot be a key at all (a tuple: one, in lines)
        return key  # a number, date or null: kept, as safe_load keeps it


def _not_text(key: Any) -> str:
    if isinstance(key, Invalid):
        return key.message
    return f"keys must be strings, got {None if isinstance(key, list | dict | tuple) else key!r}"


def _marked(exc: yaml.MarkedYAMLError, text: str) -> Unreadable:
    mark = exc.problem_mark or exc.context_mark
    if mark is None:
        return Unreadable(1, str(exc.problem or exc.context))
    lines = text.split("\n", mark.line + 1)  # up to the error's line: the rest stays one string
    line_text = lines[mark.line] if mark.line < len(lines) else ""
    problem, hint = yamlhints.explain(str(exc.problem or exc.context), exc.context, line_text, mark.column)
    context = exc.context_mark if yamlhints.context_worth_saying(exc.context) and problem != "a tab character" else None
    where = [f"{exc.context} on line {context.line + 1}"] if context is not None else []
    notes = "; ".join([*where, *([hint] if hint else [])])
    return Unreadable(mark.line + 1, f"{problem} ({notes})" if notes else problem, mark.column + 1)


def _unprintable(text: str, exc: yaml.reader.ReaderError) -> Unreadable:
    character = chr(exc.character) if isinstance(exc.character, int) else exc.character
    before = text[: exc.position]
    if issubclass(_LOADER, getattr(yaml, "CSafeLoader", ())):  # libyaml counts bytes of UTF-8, not characters
        before = text.encode("utf-8", "surrogatepass")[: exc.position].decode("utf-8", "replace")
    column = len(before) - (before.rfind("\n") + 1) + 1
    return Unreadable(before.count("\n") + 1, f"{exc.reason} ({character!r})", column)
