"""Byte sizes: parse '50MiB', '48MB', '80GB' or a plain count; format for tables; shapes."""

from __future__ import annotations

import math
import re

from .errors import InvalidInputError

__all__ = ["format_bytes", "parse_bytes", "parse_shape"]

_UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_PATTERN = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def parse_bytes(text: str | int | float, field: str = "capacity") -> int:
    """Parse a byte count: an integer, or a number with a unit (kB/MB/GB/TB are powers of
    1000, KiB/MiB/GiB/TiB powers of 1024; units are case-insensitive). A plain byte count must be whole;
    a size with a unit rounds down to whole bytes."""
    if isinstance(text, bool):
        raise InvalidInputError(f"expected a byte count, got {text!r}", field=field)
    if isinstance(text, int | float):
        value, unit = float(text), ""
    else:
        match = _PATTERN.match(text)
        if match is None:
            raise InvalidInputError(
                f"cannot read {text!r} as a byte count (examples: 52428800, 50MiB, 80GB)", field=field)
        value, unit = float(match.group(1)), match.group(2).lower()
    if unit not in _UNITS:
        known = ", ".join(u for u in ("B", "kB", "MB", "GB", "TB", "KiB", "MiB", "GiB", "TiB"))
        raise InvalidInputError(f"unknown unit {unit!r} in {text!r} (known: {known})", field=field)
    total = value * _UNITS[unit]
    if not math.isfinite(total) or total < 1:
        raise InvalidInputError(f"must be a positive byte count, got {text!r}", field=field)
    if total >= 2**62:
        raise InvalidInputError(f"{text!r} is beyond the 2^62 bytes this tool counts", field=field)
    if unit in ("", "b") and total != int(total):
        raise InvalidInputError(f"a byte count must be whole, got {text!r}", field=field)
    return int(total)  # a size with a unit rounds down to whole bytes


def format_bytes(n: float) -> str:
    """Binary units, three significant digits: 52428800 -> '50.0 MiB'."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.3g} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def parse_shape(text: str | None, field: str = "input_shape") -> tuple[int, ...] | None:
    """'8,128' -> (8, 128); None stays None."""
    if text is None:
        return None
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise InvalidInputError(f"expected whole numbers like 8,128, got {text!r}",
                                field=field) from None
    if not shape or any(v < 1 for v in shape):
        raise InvalidInputError(f"every size must be >= 1, got {text!r}", field=field)
    return shape
