"""Scalars as PyYAML's SafeLoader makes them, from a parser event: resolved, then constructed.

Plain scalars are resolved with PyYAML's own implicit-resolver table (by first character, as its Resolver
does) and built by its SafeConstructor; strings and plain decimal integers, nearly all of a manifest, take
a shortcut with the same result. What cannot be built becomes an Invalid that says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

_INT = "tag:yaml.org,2002:int"
_STR = "tag:yaml.org,2002:str"
_MERGE = "tag:yaml.org,2002:merge"
_WILDCARD: tuple[Any, ...] = tuple(Resolver.yaml_implicit_resolvers.get(None, []))
_RESOLVERS = {first: (*found, *_WILDCARD) for first, found in Resolver.yaml_implicit_resolvers.items()}


class _Every:
    def __contains__(self, item: object) -> bool:
        return True


# The first characters some implicit resolver looks at: an untagged scalar starting with none of them is its text
# (a key, a URL, a path); every one, should a resolver look at every scalar.
RESOLVED_FIRST: frozenset[str] | _Every = _Every() if _WILDCARD else frozenset(_RESOLVERS)
# (tag, text) → value, for the other scalars (true, 1.5, ~, !!binary ...): few distinct ones, all immutable.
_BUILT: dict[tuple[str, str], Any] = {}
_MAX_BUILT = 10_000
_NOT_BUILT: Any = object()


@dataclass(frozen=True, slots=True)
class Invalid:
    """A scalar PyYAML cannot build (``!!int x``, an unknown tag): using it is a problem, carrying it is not."""

    message: str


def scalar(event: Any) -> Any:
    """The value of a ScalarEvent, as PyYAML's SafeLoader would make it."""
    value: str = event.value
    tag = event.tag
    if tag is None or tag == "!":  # resolved as PyYAML's composer does
        if not event.implicit[0]:
            return value
        tag = _STR
        for resolved, regexp in _RESOLVERS.get(value[:1], _WILDCARD):
            if regexp.match(value):
                tag = resolved
                break
        if tag == _STR:
            return value
        if tag == _INT and value.isdigit() and value.isascii() and (value[0] != "0" or value == "0"):
            return int(value)  # what construct_yaml_int makes of plain decimal digits, without a node
    built = _BUILT.get((tag, value), _NOT_BUILT)
    return _construct(tag, event) if built is _NOT_BUILT else built


def _construct(tag: str, event: Any) -> Any:
    """PyYAML's own construction, on a node made for the purpose; its results are immutable, so kept."""
    if tag == _MERGE:
        return Invalid("merge keys (<<) are not supported; write the keys out")
    node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
    try:
        value = SafeConstructor().construct_object(node, deep=True)
    except (yaml.YAMLError, ValueError) as exc:
        return Invalid(str(exc))
    except (TypeError, AttributeError):  # construct_yaml_timestamp on text that is not a timestamp
        return Invalid(f"{event.value!r} is not a valid {tag}")
    if len(_BUILT) < _MAX_BUILT:
        _BUILT[(tag, event.value)] = value
    return value
