"""Placeholder replaced by the ILP module."""

from __future__ import annotations

ILP_BACKENDS: dict[str, object] = {}


def solve_ilp(problem, options):  # type: ignore[no-untyped-def]
    raise NotImplementedError
