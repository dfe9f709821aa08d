"""Solve status shared by every method and backend."""

from __future__ import annotations

from enum import Enum

__all__ = ["Status"]


class Status(str, Enum):
    """Outcome of a solve.

    OPTIMAL is used only when optimality is proven; a time-limited or heuristic result with a
    valid plan is FEASIBLE and carries a bound and a gap.
    """

    OPTIMAL = "optimal"
    FEASIBLE = "feasible"
    INFEASIBLE = "infeasible"

    def __str__(self) -> str:
        return self.value
