"""What would make an infeasible problem feasible: fewer layers' bytes per device, or more room.

Each suggestion is a changed problem that was checked, not a guess: the device count (the fewest
stages any partition needs), the largest smaller micro-batch (the model rebuilt at it), per
operator granularity (rebuilt), a tensor-parallel degree (the problem with stages split up to 2,
4 or 8 ways, solved), the next larger memory tier of the device that holds the plan. Only
changes under which a plan exists are returned, the first ``limit`` found in that order, within
a time budget; what the budget did not reach is left out without a word.

A change is checked with the feasibility test ``solve`` itself starts from (``diagnose``), which
decides the canonical and the tiered-residency problems exactly; where it does not (tensor
parallelism, clusters, training, engine rules), with an exact method (dp, or ilp for residency
with tensor parallelism) under the time left.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Literal

from ..algorithms.base import SolveOptions
from ..algorithms.kv import KV_CAPACITY, with_kv_tokens
from ..algorithms.registry import METHODS
from ..algorithms.solve import solve
from ..core.errors import CachepartError
from ..core.extensions import Extension
from ..core.feasibility import diagnose, fewest_stages
from ..core.problem import Problem
from ..core.status import Status
from ..core.units import format_bytes, parse_shape
from ..hardware.catalogue import capacity_for, get_device
from ..hardware.footprint import Workload

if TYPE_CHECKING:
    from ..frontend.graph import LayerGraph
    from ..frontend.sources import LoadedModel

__all__ = [
    "DEFAULT_BUDGET_S",
    "MAX_FIXES",
    "TP_DEGREES",
    "Fix",
    "Situation",
    "infeasible_message",
    "suggest_fixes",
]

DEFAULT_BUDGET_S = 10.0
"""Seconds all the checks together may take (a check under way is not interrupted; an exact
solve is given the time left as its limit)."""
MAX_FIXES = 3
TP_DEGREES = (2, 4, 8)
"""The widest degrees tried, smallest first; a suggestion lets each stage use 1 up to it."""

FixKind = Literal["devices", "micro_batch", "granularity", "tp", "tier"]
_REBUILT = ("zoo", "spec", "hf-config", "hf-checkpoint", "torch")
"""Model kinds built from an architecture, which a workload or granularity can rebuild."""
_DECIDED_BY_DIAGNOSE = frozenset({Extension.RESIDENCY})
"""Extensions under which ``diagnose`` returning None means a plan exists."""


@dataclass(frozen=True)
class Fix:
    """One change under which a plan exists: the command-line text and what was checked."""

    option: str
    """The option to add or change, as typed: ``--devices 6``, ``--micro-batch 2``."""
    why: str
    """What was checked, with the numbers."""
    kind: FixKind
    value: int | str
    """The number or name ``option`` sets."""

    @property
    def text(self) -> str:
        """How the one-line message names it: ``6 devices``, else the option."""
        return f"{self.value} devices" if self.kind == "devices" else self.option


@dataclass(frozen=True)
class Situation:
    """What an infeasible solve had: the problem as solved (its extensions included) and what
    it was built from, so that a changed model can be rebuilt the same way. Fields left at their
    defaults switch off the suggestions that need them (no ``source``: nothing is rebuilt; no
    ``graph``: no TP degree)."""

    problem: Problem
    source: str | None = None
    """MODEL as given (a zoo name, a file, a module factory)."""
    kind: str | None = None
    """LoadedModel.kind: zoo, spec, hf-config, hf-checkpoint, chain or torch."""
    graph: LayerGraph | None = None
    """The model's layer graph (the TP extension reads its layer kinds and link)."""
    workload: Workload | None = None
    granularity: str = "block"
    device: str = "h100-sxm"
    tier: str | None = None
    """The capacity's tier of ``device`` (None: a byte count, or a cluster)."""
    input_shape: tuple[int, ...] | None = None
    input_dtype: str | None = None
    tp_given: bool = False
    """The user chose the tensor-parallel degrees (--tp): no other degree is suggested."""
    devices_per_node: int = 8
    engine: str | None = None
    """Engine-shaped: only the device count is suggested."""
    profiled: bool = False
    """Latencies from a profile measured at this workload and granularity: neither changes."""
    objective: str = "latency"
    workers: int = 2
    seed: int = 0

    @classmethod
    def from_args(cls, args: Any, problem: Problem, loaded: LoadedModel | None = None,
                  tier: str | None = None) -> Situation:
        """From parsed command-line options (any object with their attribute names; missing
        ones take the defaults), the problem solved and, where the command kept it, the loaded
        model and the capacity's tier."""
        def get(name: str) -> Any:
            return getattr(args, name, None)

        device = get("device") or "h100-sxm"
        capacity = get("capacity")
        if tier is None and isinstance(capacity, str) and not get("cluster"):
            try:
                tier = capacity_for(capacity, get_device(device))[1]
            except CachepartError:
                tier = None
        graph = loaded.graph if loaded is not None else None
        try:
            shape = parse_shape(get("input_shape"))
        except CachepartError:
            shape = None
        return cls(problem=problem, source=get("model"),
                   kind=loaded.kind if loaded is not None else None, graph=graph,
                   workload=_workload_of(graph), granularity=get("granularity") or "block",
                   device=device, tier=tier, input_shape=shape, input_dtype=get("input_dtype"),
                   tp_given=get("tp") is not None,
                   devices_per_node=get("devices_per_node") or 8, engine=get("engine"),
                   profiled=bool(get("profile")), objective=get("objective") or "latency",
                   workers=get("workers") or 2, seed=get("seed") or 0)


def infeasible_message(diagnosis: str | None, fixes: list[Fix]) -> str:
    """The diagnosis and, when some change was found to fit, ``; would fit: A, or B``: one
    line."""
    text = " ".join((diagnosis or "no plan fits").split())
    if fixes:
        text += "; would fit: " + ", or ".join(fix.text for fix in fixes)
    return text


def suggest_fixes(situation: Situation, *, budget_s: float = DEFAULT_BUDGET_S,
                  limit: int = MAX_FIXES,
                  clock: Callable[[], float] = time.perf_counter) -> list[Fix]:
    """The changes under which a plan exists, at most ``limit``, in this order: the device
    count, the micro-batch, the granularity, the TP degree, the tier. Checks stop when
    ``budget_s`` has passed (measured with ``clock``); one that fails for any reason of the
    tool's own (CachepartError) is skipped."""
    search = _Search(situation, clock() + budget_s, clock)
    found: list[Fix] = []
    for candidate in (_devices, _micro_batch, _granularity, _tensor_parallel, _tier):
        if len(found) >= limit or search.out_of_time():
            break
        try:
            fix = candidate(search)
        except CachepartError:
            fix = None
        if fix is not None:
            found.append(fix)
    return found


# ----- the checks ----------------------------------------------------------------------------


class _Search:
    """The situation, the deadline and the feasibility test every candidate uses."""

    def __init__(self, situation: Situation, deadline: float,
                 clock: Callable[[], float]) -> None:
        self.s, self.deadline, self.clock = situation, deadline, clock

    def out_of_time(self) -> bool:
        return self.clock() >= self.deadline

    def fits(self, problem: Problem) -> bool | None:
        """Whether a plan exists for ``problem``; None when the time ran out first (or the
        exact method could not say in the time left)."""
        if self.out_of_time():
            return None
        if self.s.objective == KV_CAPACITY and problem.kv_bytes_per_token is not None:
            problem = with_kv_tokens(problem, 1)  # the objective needs a token on every stage
        if diagnose(problem) is not None:
            return False
        if not problem.extensions - _DECIDED_BY_DIAGNOSE:
            return True
        left = self.deadline - self.clock()
        if left <= 0:
            return None
        method = "dp" if not problem.extensions - METHODS["dp"].supports else "ilp"
        options = SolveOptions(time_limit_s=left, workers=self.s.workers, seed=self.s.seed)
        try:
            part = solve(problem, method, options)
        except CachepartError:  # a backend that found nothing in time: no answer
            return None
        return part.status is not Status.INFEASIBLE

    @property
    def rebuildable(self) -> bool:
        """A model built from an architecture, with nothing that pins its workload or layers."""
        s, p = self.s, self.s.problem
        return (s.source is not None and s.kind in _REBUILT and s.workload is not None
                and not s.profiled and s.engine is None and p.fleet is None
                and p.training is None)

    def rebuild(self, workload: Workload, granularity: str) -> Problem:
        """The problem for the same model, capacity and devices at another workload or
        granularity, with the same extensions."""
        from ..frontend.lower import problem_from_graph, residency_for, tensor_parallel_for
        from ..frontend.sources import load_model

        s, base = self.s, self.s.problem
        graph = load_model(s.source or "", workload, granularity=granularity,  # type: ignore[arg-type]
                           device=s.device, input_shape=s.input_shape,
                           input_dtype=s.input_dtype, tier=s.tier).graph
        problem = problem_from_graph(graph, base.capacity_bytes, base.max_stages,
                                     base.memory_model)
        tp = base.tensor_parallel
        if tp is not None:
            problem = problem.replace(tensor_parallel=tensor_parallel_for(
                graph, tp.degrees, tp.devices_per_node, tp.link))
        if base.residency is not None:
            problem = problem.replace(residency=residency_for(graph))
        return problem


def _devices(search: _Search) -> Fix | None:
    """The fewest devices (stages, TP groups counted whole) under which a plan exists."""
    p = search.s.problem
    given = p.max_stages
    if not p.extensions:
        needed = fewest_stages(p.capacity_reach)
        if needed is None or needed <= given or not search.fits(p.replace(max_stages=needed)):
            return None
        return _devices_fix(needed, given, p, "the fewest stages any partition needs")
    widest = max(p.tensor_parallel.degrees) if p.tensor_parallel is not None else 1
    upper = p.n * widest if p.fleet is None else min(p.n * widest, p.fleet.size)
    if given >= upper:
        return None
    # Double from the devices given until a plan exists, then halve the gap: feasibility only
    # grows with the devices, and each probe costs about as much as its count.
    lo, hi, probe = given, None, given
    while hi is None:
        probe = min(max(2 * probe, probe + 1), upper)
        ok = search.fits(p.replace(max_stages=probe))
        if ok is None:
            return None
        if ok:
            hi = probe
        elif probe == upper:
            return None
        else:
            lo = probe
    while hi - lo > 1:
        mid = (lo + hi) // 2
        ok = search.fits(p.replace(max_stages=mid))
        if ok is None:
            break  # hi is checked: a plan exists there, if not with the fewest
        lo, hi = (lo, mid) if ok else (mid, hi)
    exact = hi - lo == 1
    return _devices_fix(hi, given, p, "the fewest with which a plan exists" if exact else
                        "a plan exists (the time ran out before fewer were ruled out)")


def _devices_fix(count: int, given: int, p: Problem, what: str) -> Fix:
    where = f"cluster {p.fleet.name}" if p.fleet is not None else \
        f"capacity {format_bytes(p.capacity_bytes)}"
    return Fix(f"--devices {count}", f"{count} devices at {where}: {what} ({given} given)",
               "devices", count)


def _micro_batch(search: _Search) -> Fix | None:
    """The largest micro-batch below the current one under which a plan exists."""
    s = search.s
    if not search.rebuildable or s.workload is None or s.workload.phase == "train":
        return None
    current = s.workload.sequences
    if current <= 1:
        return None

    workload = s.workload

    def fits(m: int) -> bool | None:
        return search.fits(search.rebuild(_with(workload, micro_batch=m), s.granularity))

    if not fits(1):
        return None
    lo, hi = 1, current  # fits at lo; not at hi (the problem given)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        ok = fits(mid)
        if ok is None:
            break  # lo was checked
        lo, hi = (mid, hi) if ok else (lo, mid)
    return Fix(f"--micro-batch {lo}", f"the model rebuilt at micro-batch {lo} (of batch "
               f"{s.workload.batch}) fits {s.problem.max_stages} devices", "micro_batch", lo)


def _granularity(search: _Search) -> Fix | None:
    """One node per operator where whole blocks do not fit."""
    s = search.s
    if not search.rebuildable or s.granularity != "block" or s.workload is None:
        return None
    if not search.fits(search.rebuild(s.workload, "op")):
        return None
    return Fix("--granularity op", f"the model split per operator fits "
               f"{s.problem.max_stages} devices", "granularity", "op")


def _tensor_parallel(search: _Search) -> Fix | None:
    """The smallest widest degree (2, 4, 8; within a node and the devices) under which a plan
    exists on the devices given, each stage using 1 up to it."""
    from ..frontend.lower import tensor_parallel_for

    s, p = search.s, search.s.problem
    if (s.tp_given or s.graph is None or s.engine is not None or p.fleet is not None
            or p.training is not None or s.objective == KV_CAPACITY):
        return None
    link = s.graph.link if s.graph.link is not None else get_device(s.device).link
    for widest in TP_DEGREES:
        if widest > s.devices_per_node or widest > p.max_stages:
            break
        degrees = tuple(t for t in (1, *TP_DEGREES) if t <= widest)
        tp = tensor_parallel_for(s.graph, degrees, s.devices_per_node, link)
        ok = search.fits(p.replace(tensor_parallel=tp))
        if ok is None:
            return None
        if ok:
            text = ",".join(map(str, degrees))
            return Fix(f"--tp {text}", f"stages split up to {widest} ways fit "
                       f"{p.max_stages} devices", "tp", text)
    return None


def _tier(search: _Search) -> Fix | None:
    """The smallest larger memory tier of the device that holds a plan."""
    s, p = search.s, search.s.problem
    if s.tier is None or s.kind not in _REBUILT or p.fleet is not None or s.engine is not None:
        return None
    device = get_device(s.device)
    for name, size in sorted(device.tiers.items(), key=lambda item: item[1]):
        if size <= p.capacity_bytes:
            continue
        if p.residency is not None and name == device.main_memory:
            break  # residency streams from main memory; it needs an on-chip tier
        ok = search.fits(p.replace(capacity_bytes=size))
        if ok is None:
            return None
        if ok:
            return Fix(f"--capacity {name}", f"{device.name}'s {name} ({format_bytes(size)}) "
                       f"holds a plan on {p.max_stages} devices", "tier", name)
    return None


# ----- helpers -------------------------------------------------------------------------------


def _workload_of(graph: LayerGraph | None) -> Workload | None:
    """The workload a model was built with, from its graph's record (None for a chain)."""
    if graph is None:
        return None
    record = graph.metadata.get("workload")
    if not isinstance(record, dict):
        return None
    names = {f.name for f in fields(Workload)}
    try:
        return Workload(**{k: v for k, v in record.items() if k in names})
    except (CachepartError, TypeError):
        return None


def _with(workload: Workload, **changes: Any) -> Workload:
    values = {f.name: getattr(workload, f.name) for f in fields(Workload)}
    values.update(changes)
    return Workload(**values)
