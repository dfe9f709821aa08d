"""Links between devices, and the number checks every input reader shares."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from models.textio import shorten

from .errors import InvalidInputError

__all__ = ["MAX_BYTES", "MAX_SECONDS", "Link", "check_fields", "check_number", "check_whole"]

MAX_BYTES = 2**62
"""Byte counts stay below this so sums over a stage fit int64."""
MAX_SECONDS = 1e12
"""A chain's times (all its layers, one transfer) stay below this (31,000 years), so sums and
searches over them stay finite."""

_LINK_FIELDS = frozenset({"bandwidth_bytes_per_s", "latency_s"})


def check_number(value: Any, where: str, *, positive: bool = False, integral: bool = False) -> float:
    """Return ``value`` as a float, or raise InvalidInputError naming ``where`` and the value."""
    shown = shorten(value)  # a message quotes at most 60 characters of what it was given
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInputError(f"expected a number, got {shown}", field=where)
    try:
        number = float(value)
    except OverflowError:  # an int past a float's range
        raise InvalidInputError(f"{shown} is beyond any count this tool takes",
                                field=where) from None
    if not math.isfinite(number):
        raise InvalidInputError(f"expected a finite number, got {shown}", field=where)
    if positive and number <= 0:
        raise InvalidInputError(f"must be > 0, got {shown}", field=where)
    if number < 0:
        raise InvalidInputError(f"must be >= 0, got {shown}", field=where)
    if integral and number != int(number):
        raise InvalidInputError(f"must be a whole number of bytes, got {shown}", field=where)
    if integral and number >= MAX_BYTES:
        raise InvalidInputError(f"{shown} bytes is beyond the 2^62 this tool counts", field=where)
    return number


def check_whole(value: Any, field: str, least: int = 1) -> int:
    """``value`` as an int, or InvalidInputError naming ``field``: a whole number >= ``least``
    (a bool is not one)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise InvalidInputError(f"must be a whole number >= {least}, got {shorten(value)}",
                                field=field)
    return int(value)


def check_fields(doc: Any, known: frozenset[str], where: str | None = None) -> dict[str, Any]:
    """``doc`` as a dict with no field outside ``known``; else InvalidInputError naming
    ``where`` (none: the document's top level) and the first unknown field."""
    if not isinstance(doc, dict):
        raise InvalidInputError(f"expected a JSON object, got {type(doc).__name__}", field=where)
    unknown = sorted(set(doc) - known)
    if unknown:
        level = "" if where else "top-level "
        raise InvalidInputError(f"unknown {level}field {unknown[0]!r} (known: "
                                f"{', '.join(sorted(known))})", field=where)
    return doc


@dataclass(frozen=True)
class Link:
    """The link between consecutive devices: a transfer of b bytes costs b / bandwidth + latency."""

    bandwidth_bytes_per_s: float
    latency_s: float = 0.0

    def __post_init__(self) -> None:
        check_number(self.bandwidth_bytes_per_s, "link.bandwidth_bytes_per_s", positive=True)
        check_number(self.latency_s, "link.latency_s")

    def transfer_s(self, nbytes: float) -> float:
        return nbytes / self.bandwidth_bytes_per_s + self.latency_s

    @classmethod
    def from_dict(cls, raw: Any, where: str = "link") -> Link:
        """A link from its JSON object; errors name ``where`` and the field."""
        if not isinstance(raw, dict) or "bandwidth_bytes_per_s" not in raw:
            raise InvalidInputError("expected {'bandwidth_bytes_per_s': ..., 'latency_s': ...}, "
                                    f"got {raw!r:.80}", field=where)
        check_fields(raw, _LINK_FIELDS, where)
        return cls(check_number(raw["bandwidth_bytes_per_s"], f"{where}.bandwidth_bytes_per_s",
                                positive=True),
                   check_number(raw.get("latency_s", 0.0), f"{where}.latency_s"))

    def to_dict(self) -> dict[str, float]:
        return {"bandwidth_bytes_per_s": self.bandwidth_bytes_per_s, "latency_s": self.latency_s}
