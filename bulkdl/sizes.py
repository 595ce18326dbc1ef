"""Byte counts: parsing the manifest's size strings and formatting sizes for people."""

from __future__ import annotations

import re
from decimal import Decimal

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "t": 1000**4,
    "tb": 1000**4,
    "tib": 1024**4,
}
MAX_SIZE = 2**63 - 1  # the largest file offset Linux has (off_t): no file is larger
# ASCII digits only: \d and float() also take "٣" (Arabic-Indic 3), which nobody types as a size.
_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-z]*)\s*", re.IGNORECASE | re.ASCII)


def parse_size(value: object) -> int:
    """Return the byte count of ``4MiB``, ``1.5 GB``, ``512`` or an int; raise ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 4MiB, got a boolean")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"size must not be negative, got {value}")
        return _at_most_max(value, value)
    if not isinstance(value, str):
        raise ValueError(f"expected a size such as 4MiB, got {type(value).__name__}")
    match = _SIZE.fullmatch(value)
    unit = _UNITS.get(match.group(2).lower()) if match else None
    if match is None or unit is None:
        raise ValueError(f"{value[:40]!r} is not a size (use B, KiB, MiB, GiB, KB, MB or GB)")
    # Decimal, not float: exact for every size a file can have, and never inf (float("9" * 400) is).
    return _at_most_max(int(Decimal(match.group(1)) * unit), value)


def _at_most_max(n: int, value: object) -> int:
    if n > MAX_SIZE:
        raise ValueError(f"{str(value)[:40]!r} is larger than any file can be (at most {MAX_SIZE} bytes)")
    return n


def format_size(n: int) -> str:
    """Binary units, about three significant digits: ``1.50 GiB``, ``25.0 MiB``, ``512 B``."""
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    decimals = 0 if value >= 100 else 1 if value >= 10 else 2
    return f"{value:.{decimals}f} {unit}"
