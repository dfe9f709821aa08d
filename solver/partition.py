"""Partition: the answer every method returns, and the checks every plan passes."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import SolverError
from .problem import Problem
from .status import Status

__all__ = ["Partition", "check_partition", "relative_gap"]


def relative_gap(objective: float | None, bound: float | None) -> float | None:
    """(objective - bound) / objective, clipped at 0; None when either is unknown."""
    if objective is None or bound is None:
        return None
    if objective <= 0:
        return 0.0
    gap = (objective - bound) / objective
    return 0.0 if gap < 1e-9 else gap  # below that it is float rounding, not a gap


@dataclass(frozen=True)
class Partition:
    """Stage boundaries 0 = b0 < b1 < ... < bk = n (stage j holds layers b_j .. b_{j+1}-1).

    ``objective`` is the largest stage time, recomputed in floating point from the bounds;
    ``bound`` is a proven lower bound on the optimum. An infeasible answer has no bounds and a
    ``diagnosis`` that says why.
    """

    bounds: tuple[int, ...]
    status: Status
    objective: float | None
    bound: float | None
    method: str
    backend: str | None = None
    wall_s: float = 0.0
    diagnosis: str | None = None
    info: Mapping[str, Any] = field(default_factory=dict)

    @property
    def gap(self) -> float | None:
        if self.status is Status.OPTIMAL:
            return 0.0
        return relative_gap(self.objective, self.bound)

    @property
    def num_stages(self) -> int:
        return max(0, len(self.bounds) - 1)

    @property
    def stages(self) -> list[tuple[int, int]]:
        return list(zip(self.bounds[:-1], self.bounds[1:], strict=True))

    def to_dict(self) -> dict[str, Any]:
        return {
            "bounds": list(self.bounds),
            "status": self.status.value,
            "objective": self.objective,
            "bound": self.bound,
            "gap": self.gap,
            "method": self.method,
            "backend": self.backend,
            "wall_s": self.wall_s,
            "diagnosis": self.diagnosis,
            "info": dict(self.info),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Partition:
        return cls(
            bounds=tuple(int(b) for b in data["bounds"]),
            status=Status(data["status"]),
            objective=data.get("objective"),
            bound=data.get("bound"),
            method=data["method"],
            backend=data.get("backend"),
            wall_s=float(data.get("wall_s", 0.0)),
            diagnosis=data.get("diagnosis"),
            info=dict(data.get("info") or {}),
        )


def check_partition(problem: Problem, bounds: tuple[int, ...] | list[int]) -> None:
    """Raise SolverError if ``bounds`` is not a contiguous cover of the layers within capacity
    and the stage limit. Called on every partition any method returns."""
    b = list(bounds)
    if len(b) < 2 or b[0] != 0 or b[-1] != problem.n:
        raise SolverError(f"partition {b} does not cover layers 0..{problem.n}")
    if any(x >= y for x, y in itertools.pairwise(b)):
        raise SolverError(f"partition {b} has an empty or out-of-order stage")
    if len(b) - 1 > problem.max_stages:
        raise SolverError(f"partition uses {len(b) - 1} stages, more than the {problem.max_stages} "
                          "devices allowed")
    for j, (s, e) in enumerate(itertools.pairwise(b)):
        mem = problem.stage_memory(s, e)
        if mem > problem.capacity_bytes:
            raise SolverError(f"stage {j} (layers {s}..{e - 1}) needs {mem} bytes, more than the "
                              f"capacity {problem.capacity_bytes}")
