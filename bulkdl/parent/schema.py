"""YAML nodes to checked values: every problem is collected with the line it stands on, none raised.

The manifest is composed into PyYAML nodes rather than loaded into dicts, so that a problem can name its
line; the converters here check one value each and raise ValueError with a message a user can act on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import yaml

from ..credentials import missing_variables
from ..errors import ManifestError
from ..sizes import parse_size

_MAX_SHOWN = 300  # characters of a key or message repeated from the file
_ALIAS_ALLOWANCE = 100_000  # values aliases may add beyond one per character of the file


@dataclass
class Problems:
    source: str
    found: list[tuple[int, str]] = field(default_factory=list)

    def add(self, node: yaml.Node, key: str, message: str) -> None:
        self.at(node.start_mark.line + 1, key, message)

    def at(self, line: int, key: str, message: str) -> None:
        # Keys and values come from the file: escape what is not printable, so one problem stays one line.
        self.found.append((line, f"{self.source}:{line}: {_printable(key)}: {_printable(message)}"))

    def error(self) -> ManifestError:
        """Every problem in file order, one line each."""
        return ManifestError("\n".join(text for _, text in sorted(self.found, key=lambda p: p[0])))


def _printable(text: str) -> str:
    # Short too: a message may quote a value, and aliases can make one long value appear in every entry.
    shown = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text[:_MAX_SHOWN])
    return shown + "..." if len(text) > _MAX_SHOWN else shown


Convert = Callable[[Any], Any]


def whole(minimum: int, maximum: int | None = None, what: str = "") -> Convert:
    def convert(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"expected a whole number of at least {minimum}, got {value!r}")
        if maximum is not None and value > maximum:
            raise ValueError(f"at most {maximum} {what}, got {value}")
        return value

    return convert


positive_int = whole(1)


def flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def positive_size(value: Any) -> int:
    n = parse_size(value)
    if n < 1:
        raise ValueError("must be at least 1 byte")
    return n


def seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 86400:
        raise ValueError(f"expected seconds between 0 and 86400, got {value!r}")
    return float(value)


def non_empty_text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a non-empty string, got {value!r}")
    return value


def http_url(value: Any) -> str:
    url = non_empty_text(value)
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise ValueError("URL contains whitespace or control characters")
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError(f"only http and https URLs are supported, got {parts.scheme or 'no'} scheme")
    if not parts.hostname:
        raise ValueError("URL has no host")
    return url


DIGEST_HEX_LENGTHS = {"md5": 32, "sha1": 40, "sha256": 64, "sha512": 128, "blake2b": 128}


def hex_digest(algorithm: str) -> Convert:
    length = DIGEST_HEX_LENGTHS[algorithm]

    def convert(value: Any) -> str:
        hex_text = non_empty_text(value).strip().lower()
        if len(hex_text) != length or any(ch not in "0123456789abcdef" for ch in hex_text):
            raise ValueError(f"expected {length} hex digits for {algorithm}, got {value!r}")
        return hex_text

    return convert


def header_value(value: Any) -> str:
    text = str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value
    if not isinstance(text, str) or "\r" in text or "\n" in text:
        raise ValueError("header values must be single-line strings")
    missing = missing_variables(text)
    if missing:
        raise ValueError(f"environment variable {', '.join(missing)} is not set")
    return text


class Reader:
    """Walks the node tree, converting scalars and recording problems instead of raising."""

    def __init__(self, loader: yaml.SafeLoader, problems: Problems) -> None:
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

    def scalar(self, node: yaml.Node, where: str, convert: Convert) -> Any:
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
            value = self.scalar(value_node, f"{where}.{name}", header_value)
            if any(ch in name for ch in ":\r\n") or not name.strip() or name != name.strip():
                self.problems.add(value_node, f"{where}.{name}", "not a valid header name")
            elif value is not None:
                headers[name] = value
        return headers


# libyaml composes the same nodes, with the same marks, several times faster (2,000 entries: 0.2 s → 0.04 s).
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def compose(text: str, problems: Problems) -> tuple[yaml.SafeLoader | None, yaml.Node | None]:
    """The document's node tree, or None with the reason recorded; the loader must be disposed of."""
    try:
        loader = _LOADER(text)
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow, such as NUL
        line = text.count("\n", 0, exc.position) + 1
        problems.at(
            line, "yaml", f"{exc.reason} ({chr(exc.character) if isinstance(exc.character, int) else exc.character!r})"
        )
        return None, None
    try:
        root = loader.get_single_node()
    except RecursionError:  # PyYAML's pure-Python composer recurses; libyaml stops at 1000 levels itself
        problems.at(1, "yaml", "nested too deeply")
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        where = f" ({exc.context} on line {exc.context_mark.line + 1})" if exc.context and exc.context_mark else ""
        problems.at(line, "yaml", f"{exc.problem or exc.context}{where}")
    except yaml.YAMLError as exc:
        problems.at(1, "yaml", str(exc))
    else:
        return loader, (root if root is None or _bounded(root, len(text), problems) else None)
    return loader, None


def _bounded(root: yaml.Node, text_length: int, problems: Problems) -> bool:
    """Whether the document, with every alias written out, stays about as large as its text.

    Composing shares an aliased node instead of copying it, but reading the manifest visits each use, so
    nested aliases (a "billion laughs") or one long list aliased in every entry make a small file cost
    hours and gigabytes. A manifest has no reason to expand beyond one value per character of its text
    plus an allowance; counting needs one pass over the distinct nodes, post-order with sizes memoised,
    which also finds an alias inside the node it names (composing allows that; nothing here could end it).
    """
    limit = text_length + _ALIAS_ALLOWANCE
    sizes: dict[int, int] = {}
    ancestors: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            ancestors.discard(key)
            sizes[key] = 1 + sum(sizes[id(child)] for child in _children(node))
            if sizes[key] > limit:
                problems.add(
                    node,
                    "yaml",
                    f"aliases expand the manifest to over {limit} values, far more than it holds; write them out",
                )
                return False
        elif key in ancestors:
            problems.add(node, "yaml", "an alias refers to a node that contains it")
            return False
        elif key not in sizes:
            ancestors.add(key)
            stack.append((node, True))
            stack.extend((child, False) for child in _children(node))
    return True


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [item for pair in node.value for item in pair]
    return []
