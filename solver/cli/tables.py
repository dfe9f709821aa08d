"""Plain-text tables for the commands' output (no pandas on the fast path)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["format_table"]


def _cell(value: Any, fmt: Callable[[float], str] | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and fmt is not None:
        return fmt(value)
    return str(value)


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, *,
                 float_format: Callable[[float], str] | None = None,
                 left: Sequence[str] = ()) -> str:
    """Columns right-aligned under their headers (those in ``left`` left-aligned); a missing
    value prints as '-'."""
    cols = list(columns) if columns is not None else list(dict.fromkeys(
        key for row in rows for key in row))
    cells = [[_cell(row.get(c), float_format) for c in cols] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(cols)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) if c in left else v.rjust(w)
                         for v, w, c in zip(values, widths, cols, strict=True)).rstrip()

    return "\n".join([line(cols), *(line(r) for r in cells)])
