"""Partition: the answer every method returns; its evaluation and the checks every plan passes."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import SolverError
from .extensions import (
    residency_stage_time,
    resident_stage_memory,
    tp_stage_memory,
    tp_stage_time,
)
from .fleet import ordered_ranks, rank_view
from .problem import Problem
from .status import Status
from .training import train_stage_memory, train_stage_time

__all__ = ["Partition", "StageCost", "check_partition", "evaluate", "relative_gap"]


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
    """Stage boundaries 0 = b0 < b1 < ... < bk = n (stage j holds layers b_j .. b_{j+1}-1), and
    what the problem's extensions let a method decide.

    ``objective`` is the largest stage time, recomputed in floating point from the answer;
    ``bound`` is a proven lower bound on the optimum. An infeasible answer has no bounds and a
    ``diagnosis`` that says why. ``info`` is a record of how the method ran (segments, backend
    status...), written into the plan for the reader; no code reads it back.
    """

    bounds: tuple[int, ...]
    status: Status
    objective: float | None
    bound: float | None
    method: str
    backend: str | None = None
    wall_s: float = 0.0
    diagnosis: str | None = None
    tp_degrees: tuple[int, ...] | None = None
    """Tensor parallelism: devices each stage spans (None: one device per stage)."""
    resident: tuple[bool, ...] | None = None
    """Tiered residency: per layer, whether its weights stay in the capacity tier (None: all)."""
    ranks: tuple[int, ...] | None = None
    """Free placement on a cluster: the first device rank of each stage (None: the stages take
    the ranks in order)."""
    selection: str | None = None
    """Why this method ran when ``auto`` chose it."""
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

    @property
    def degrees(self) -> tuple[int, ...]:
        """Devices per stage (1 each without tensor parallelism)."""
        return self.tp_degrees if self.tp_degrees is not None else (1,) * self.num_stages

    @property
    def device_ranks(self) -> tuple[int, ...]:
        """The first device rank of each stage: ``ranks`` when placed freely, else the stages
        take consecutive ranks in order."""
        return self.ranks if self.ranks is not None else ordered_ranks(self.degrees)

    @property
    def devices_used(self) -> int:
        return sum(self.degrees)

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
            "tp_degrees": None if self.tp_degrees is None else list(self.tp_degrees),
            "resident": None if self.resident is None else list(self.resident),
            "ranks": None if self.ranks is None else list(self.ranks),
            "selection": self.selection,
            "info": dict(self.info),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Partition:
        degrees, resident, ranks = data.get("tp_degrees"), data.get("resident"), data.get("ranks")
        return cls(
            bounds=tuple(int(b) for b in data["bounds"]),
            status=Status(data["status"]),
            objective=data.get("objective"),
            bound=data.get("bound"),
            method=data["method"],
            backend=data.get("backend"),
            wall_s=float(data.get("wall_s", 0.0)),
            diagnosis=data.get("diagnosis"),
            tp_degrees=None if degrees is None else tuple(int(t) for t in degrees),
            resident=None if resident is None else tuple(bool(r) for r in resident),
            ranks=None if ranks is None else tuple(int(r) for r in ranks),
            selection=data.get("selection"),
            info=dict(data.get("info") or {}),
        )


@dataclass(frozen=True)
class StageCost:
    """One stage of an answer, evaluated by the problem's own formulas."""

    start: int
    end: int
    tp_degree: int
    rank: int
    """First device rank."""
    memory_bytes: int
    """Per device of the stage."""
    time_s: float
    """Its layers' time plus its inbound transfer."""
    transfer_in_s: float
    capacity_bytes: int
    """Of its device (its kind's, on a cluster)."""


def evaluate(problem: Problem, bounds: Sequence[int], *, tp_degrees: Sequence[int] | None = None,
             resident: Sequence[bool] | None = None,
             ranks: Sequence[int] | None = None) -> list[StageCost]:
    """Memory and time of each stage of an answer (extensions included); no checks."""
    degrees = list(tp_degrees) if tp_degrees is not None else [1] * (len(bounds) - 1)
    firsts = list(ranks) if ranks is not None else list(ordered_ranks(degrees))
    costs = []
    for j, ((s, e), t) in enumerate(zip(itertools.pairwise(bounds), degrees, strict=True)):
        view = problem
        if problem.fleet is not None:
            view = rank_view(problem, firsts[j], None if j == 0 else firsts[j - 1] + degrees[j - 1] - 1)
        if problem.training is not None:
            # a stage's stashes depend on how many stages follow it (solver/core/training.py)
            memory = train_stage_memory(problem, s, e,
                                        problem.training.in_flight(len(bounds) - 1 - j))
            time = train_stage_time(problem, s, e)
        elif resident is not None:
            memory = resident_stage_memory(problem, s, e, resident[s:e])
            time = residency_stage_time(problem, s, e, resident[s:e])
        elif t != 1:
            memory, time = tp_stage_memory(view, s, e, t), tp_stage_time(view, s, e, t)
        else:
            memory, time = view.stage_memory(s, e), view.stage_time(s, e)
        costs.append(StageCost(s, e, int(t), int(firsts[j]), int(memory), float(time),
                               float(view.transfer_s[s]), int(view.capacity_bytes)))
    return costs


def check_partition(problem: Problem, bounds: Sequence[int], *,
                    tp_degrees: Sequence[int] | None = None,
                    resident: Sequence[bool] | None = None,
                    ranks: Sequence[int] | None = None) -> list[StageCost]:
    """Raise SolverError if the answer is not a contiguous cover of the layers within capacity
    and the device limit, or decides what the problem's extensions do not allow. Called on every
    answer any method returns; returns the evaluated stages."""
    b = list(bounds)
    if len(b) < 2 or b[0] != 0 or b[-1] != problem.n:
        raise SolverError(f"partition {b} does not cover layers 0..{problem.n}")
    if any(x >= y for x, y in itertools.pairwise(b)):
        raise SolverError(f"partition {b} has an empty or out-of-order stage")
    cuts = problem.allowed_cuts
    if cuts is not None:
        bad = [x for x in b if not cuts[x]]
        if bad:
            raise SolverError(f"partition {b} cuts before layer {problem.names[bad[0]]!r}, which "
                              "the problem keeps with the layer before it")
    tp, res = problem.tensor_parallel, problem.residency
    if tp_degrees is not None:
        if tp is None and any(t != 1 for t in tp_degrees):
            raise SolverError(f"partition has TP degrees {list(tp_degrees)} but the problem has "
                              "no tensor parallelism")
        if len(tp_degrees) != len(b) - 1:
            raise SolverError(f"partition has {len(tp_degrees)} TP degrees for {len(b) - 1} stages")
        if tp is not None and any(t not in tp.degrees for t in tp_degrees):
            raise SolverError(f"partition uses TP degrees {list(tp_degrees)}, allowed "
                              f"{list(tp.degrees)}")
        if tp is not None and tp.uniform and len(set(tp_degrees)) > 1:
            raise SolverError(f"partition uses TP degrees {list(tp_degrees)}, but the problem "
                              "asks one degree for every stage")
    if resident is not None:
        if res is None:
            raise SolverError("partition chooses resident layers but the problem has no "
                              "residency extension")
        if len(resident) != problem.n:
            raise SolverError(f"partition has {len(resident)} residency flags for {problem.n} "
                              "layers")
    used = sum(tp_degrees) if tp_degrees is not None else len(b) - 1
    if used > problem.max_stages:
        if tp_degrees is None:
            raise SolverError(f"partition uses {used} stages, more than the {problem.max_stages} "
                              "devices allowed")
        raise SolverError(f"partition uses {used} devices, more than the {problem.max_stages} "
                          "allowed")
    _check_ranks(problem, len(b) - 1, tp_degrees, ranks)
    costs = evaluate(problem, b, tp_degrees=tp_degrees, resident=resident, ranks=ranks)
    for j, cost in enumerate(costs):
        if cost.memory_bytes > cost.capacity_bytes:
            where = f" on {cost.tp_degree} devices" if cost.tp_degree > 1 else ""
            raise SolverError(f"stage {j} (layers {cost.start}..{cost.end - 1}){where} needs "
                              f"{cost.memory_bytes} bytes, more than the capacity "
                              f"{cost.capacity_bytes}")
    return costs


def _check_ranks(problem: Problem, stages: int, tp_degrees: Sequence[int] | None,
                 ranks: Sequence[int] | None) -> None:
    """On a cluster: every stage on existing devices of one node and kind, no device twice,
    the ranks in order for ordered placement. Elsewhere: no ranks at all."""
    fleet = problem.fleet
    if fleet is None:
        if ranks is not None:
            raise SolverError("partition places stages on ranks but the problem has no cluster")
        return
    degrees = list(tp_degrees) if tp_degrees is not None else [1] * stages
    firsts = list(ranks) if ranks is not None else list(ordered_ranks(degrees))
    if len(firsts) != stages:
        raise SolverError(f"partition has {len(firsts)} ranks for {stages} stages")
    if fleet.placement == "ordered" and firsts != list(ordered_ranks(degrees)):
        raise SolverError(f"partition places stages on ranks {firsts}, not in order from 0 "
                          "(placement ordered)")
    used: set[int] = set()
    for j, (r, t) in enumerate(zip(firsts, degrees, strict=True)):
        if not fleet.block_ok(r, t):
            raise SolverError(f"stage {j} on ranks {r}..{r + t - 1}: not devices of one node and "
                              f"one kind of the {fleet.size} of cluster {fleet.name or '?'}")
        block = set(range(r, r + t))
        if used & block:
            raise SolverError(f"stage {j} reuses device {min(used & block)}")
        used |= block
