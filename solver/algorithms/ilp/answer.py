"""Turning a backend's result into an answer: what every formulation decides the same way.

No solution: infeasible when the backend says so and there was no warm start, the warm start
(unproven) when there was one, else a SolverError (exit 4): nothing within the time limit. A
solution: OPTIMAL only when the backend proved it, else FEASIBLE with the best valid bound.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...core.errors import SolverError
from ...core.partition import Partition
from ...core.status import Status
from ..base import SolveOptions
from .backends import IlpBackend
from .model import MilpResult

__all__ = ["Decided", "no_solution", "settle"]


@dataclass(frozen=True)
class Decided:
    """A plan of a formulation: its cuts, bottleneck, and the extension's typed decisions
    (``Partition`` fields such as ``tp_degrees`` or ``resident``)."""

    bounds: tuple[int, ...]
    objective: float
    fields: Mapping[str, Any] = field(default_factory=dict)


def no_solution(backend: IlpBackend, options: SolveOptions, result: MilpResult) -> SolverError:
    return SolverError(f"ilp ({backend.name}): no solution within {options.time_limit_s:g} s "
                       f"(backend status {result.status})")


def settle(result: MilpResult, *, backend: IlpBackend, options: SolveOptions,
           decode: Callable[[np.ndarray], Decided], warm: Decided | None, floor: float,
           infeasible: Callable[[], Partition], info: dict[str, Any]) -> Partition:
    """The answer ``result`` gives, by the rules of the module doc."""
    if result.values is None:
        if warm is None:
            if result.infeasible:
                return infeasible()
            raise no_solution(backend, options, result)
        answer, proven = warm, False
    else:
        answer, proven = decode(result.values), result.proven
    if proven:
        status, bound = Status.OPTIMAL, answer.objective
    else:
        found = max(floor, result.bound_s) if result.bound_s is not None else floor
        status, bound = Status.FEASIBLE, min(found, answer.objective)
    return Partition(answer.bounds, status, answer.objective, bound, "ilp", backend=backend.name,
                     info=info, **answer.fields)
