"""The serving objective: the most KV-cache tokens every stage can hold, then the fastest plan.

A layer's ``kv_bytes_per_token`` k is what one more token of context costs it. A stage [s, e)
with memory M (the problem's memory model, additive or peak, as :meth:`Problem.stage_memory`
counts it), KV bytes per token K = sum of k over its layers, on a device of capacity C holds
cap(s, e) = floor((C - M) / K) tokens of KV cache; a stage with K = 0 holds no KV and does not
limit anything (unbounded). ``kv-capacity`` maximises the smallest cap over the stages of a
plan, then minimises the bottleneck (the slowest stage) among the plans that reach it, under
every constraint of the problem: capacity, at most K stages, allowed cuts, a cluster's ranks.

The reduction, and why it is exact. For a whole number c >= 0 let P_c be the problem with
c x k added to every layer's weight bytes (nothing else changes).

- Stage memory grows by exactly c x K in both memory models: additive memory is a sum of
  w + a + b; peak memory is the sum of w plus a maximum over (input + a + b), which holds no
  weight, so the added bytes sit outside the maximum. Hence M_c(s, e) = M(s, e) + c K(s, e).
- So a stage fits P_c iff M + c K <= C. With K = 0 that is M <= C (it fits P). With K > 0 it
  is c <= (C - M) / K, which for a whole c is c <= floor((C - M) / K) = cap(s, e), and since
  c >= 0 it implies M <= C. A stage fits P_c iff it fits P and holds at least c tokens.
- Everything else is the same in P and P_c: the allowed cuts, the stage limit, the cluster's
  ranks and their capacities (each stage is checked against its own device's C, so the
  argument holds stage by stage), and every stage time (times and transfers come from
  latencies and activations, never from weights). So the plans P_c accepts are exactly the
  plans P accepts whose smallest KV capacity is at least c, with the same stage times.
- Feasibility of P_c is monotone: P_{c+1} accepts a subset of what P_c accepts. The largest
  feasible c, c*, is found by binary search over whole numbers in [0, U], where U bounds every
  plan: the stage holding a KV layer i has memory >= i's alone (m_i) and K >= k_i, so its
  capacity is at most floor((C_max - m_i) / k_i); U is the least of these over the KV layers.
  Each probe is an exact feasibility test: the fewest stages under the capacity alone (the
  reach arrays of solver/core/feasibility.py, allowed cuts included), or the ordered / free
  search on a cluster.
- No plan holds more than c* tokens, so the plans that hold c* are exactly those P_{c*}
  accepts, and the fastest of them is P_{c*}'s min-bottleneck optimum, which any exact method
  finds (with the canonical ties: fewest stages, least transfer, earliest cuts).

What the reduction does not cover, and is refused: tensor parallelism (a stage split t ways
stores ceil((W + c K) / t) bytes of weights per device, not ceil(W / t) + c K / t, and the KV
heads need not split evenly, so the augmented problem is not the stage's KV capacity), and
partial residency (the ILP could stream the added bytes from main memory as if they were
weights). Heuristic methods are refused too: the objective's second part is a proven optimum.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np

from ..core.errors import InvalidInputError, SolverError
from ..core.feasibility import diagnose, fewest_stages
from ..core.free import free_reach, free_search_fits
from ..core.kv import KV_CAPACITY, LATENCY, OBJECTIVES, smallest_kv_tokens, stage_kv_tokens
from ..core.link import MAX_BYTES
from ..core.ordered import ordered_stages
from ..core.partition import Partition, check_partition
from ..core.problem import MemoryModel, Problem
from ..core.status import Status
from .base import SolveOptions
from .registry import AUTO, choose
from .solve import solve

__all__ = [
    "KV_CAPACITY",
    "LATENCY",
    "OBJECTIVES",
    "KvSearch",
    "kv_refusal",
    "max_kv_tokens",
    "solve_kv",
    "with_kv_tokens",
]

@dataclass(frozen=True)
class KvSearch:
    """The binary search's answer."""

    tokens: int | None
    """c*: the most tokens every stage of some plan holds; None when no plan fits at all."""
    upper: int
    """The bound U the search started from."""
    probes: int
    """Feasibility tests run."""


def with_kv_tokens(problem: Problem, tokens: int) -> Problem:
    """P_c: ``tokens`` x each layer's KV bytes per token added to its weight bytes."""
    kv = _kv(problem)
    return problem.replace(weight_bytes=problem.weight_bytes + np.int64(tokens) * kv)


def kv_refusal(problem: Problem) -> str | None:
    """Why the kv-capacity objective does not apply to ``problem`` (one line), or None."""
    kv = problem.kv_bytes_per_token
    if kv is None:
        return ("needs kv_bytes_per_token on the attention layers (a chain JSON field; zoo, spec "
                "and Hugging Face models compute it), and this model gives none")
    if not kv.any():
        return "every layer's kv_bytes_per_token is 0: no stage holds KV cache to maximise"
    if problem.training is not None:
        return "is a serving objective; a training step holds no KV cache (plan without --phase train)"
    if problem.tensor_parallel is not None:
        return ("is not solved with tensor parallelism (split weights round per device, so the "
                "KV search would not be exact): plan without --tp, or with --tp 1")
    if problem.residency is not None:
        return "cannot be combined with partial residency (the added KV bytes are not weights)"
    fleet = problem.fleet
    if fleet is not None and fleet.placement == "free" and not free_search_fits(problem):
        return "free placement on this cluster is beyond the exact search's reach"
    return None


def _kv(problem: Problem) -> np.ndarray:
    """The KV bytes per token; InvalidInputError when the objective does not apply."""
    kv, reason = problem.kv_bytes_per_token, kv_refusal(problem)
    if reason is not None or kv is None:
        raise InvalidInputError(f"kv-capacity {reason}", field="objective")
    return kv


def _fits(problem: Problem) -> bool:
    """Whether any plan fits (capacity, stage limit, cuts, cluster): an exact test."""
    fleet = problem.fleet
    if fleet is None:
        needed = fewest_stages(problem.capacity_reach)
        return needed is not None and needed <= problem.max_stages
    if fleet.placement == "free":
        return free_reach(problem, None) is not None
    return ordered_stages(problem, None) is not None


def _upper(problem: Problem, kv: np.ndarray) -> int:
    """U: no plan holds more tokens (see the module docstring); and no more than the int64
    sums of P_c can count."""
    fleet = problem.fleet
    largest = max(fleet.capacity_bytes) if fleet is not None else problem.capacity_bytes
    w = problem.weight_bytes
    if problem.memory_model is MemoryModel.ADDITIVE:
        alone = w + problem.activation_bytes + problem.buffer_bytes
    else:
        alone = w + problem.layer_peak_bytes
    held = kv > 0
    upper = int(((largest - alone[held]) // kv[held]).min())
    return max(upper, 0)


def max_kv_tokens(problem: Problem) -> KvSearch:
    """c*, the largest whole c whose P_c has a plan, by binary search (exact: module docstring)."""
    kv = _kv(problem)
    if not _fits(problem):
        return KvSearch(None, 0, 1)
    upper = _upper(problem, kv)
    total = int(problem.weight_bytes.sum() + problem.activation_bytes.sum()
                + problem.buffer_bytes.sum()) + problem.input_bytes
    countable = (MAX_BYTES - 1 - total) // int(kv.sum())
    lo, hi, probes = 0, min(upper, countable), 1
    while lo < hi:  # lo fits, nothing above hi does
        mid = (lo + hi + 1) // 2
        probes += 1
        if _fits(with_kv_tokens(problem, mid)):
            lo = mid
        else:
            hi = mid - 1
    if lo == countable < upper:
        raise InvalidInputError(f"the KV search reaches {lo} tokens, where this model's bytes "
                                "would pass the 2^62 this tool counts", field="objective")
    return KvSearch(lo, upper, probes)


def _no_token(problem: Problem, method: str) -> Partition:
    """The answer when plans fit but none holds one token on every stage: why, with numbers."""
    reason = diagnose(with_kv_tokens(problem, 1))
    if reason is None:  # free placement: diagnose does not decide it; say what was tested
        reason = "no placement of the stages fits with those bytes"
    diagnosis = ("no plan holds even one token of KV cache on every stage: with one token's KV "
                 f"bytes added to each layer's weights, {reason}")
    return Partition((), Status.INFEASIBLE, None, None, method, diagnosis=diagnosis,
                     info={"objective": KV_CAPACITY, "kv_capacity_tokens": 0})


def solve_kv(problem: Problem, method: str = AUTO,
             options: SolveOptions | None = None) -> Partition:
    """The plan with the most KV tokens on its tightest stage, then the smallest bottleneck.

    INFEASIBLE (with a diagnosis) when no plan fits, or when none holds one token on every
    stage. InvalidInputError when the objective does not apply (kv_refusal) or ``method`` is
    not exact; the answer is checked against the original problem before it is returned."""
    _kv(problem)
    chosen, _ = choose(problem, method)
    if not chosen.exact:
        raise InvalidInputError(f"kv-capacity needs an exact method (auto, parametric, dp or "
                                f"ilp); {chosen.name} is a heuristic", field="method")
    start = time.perf_counter()
    search = max_kv_tokens(problem)
    if search.tokens is None:
        return solve(problem, method, options)  # the latency objective's diagnosis
    if search.tokens == 0:
        return dataclasses.replace(_no_token(problem, chosen.name),
                                   wall_s=time.perf_counter() - start)
    options = dataclasses.replace(options or SolveOptions(), hint=None)  # a hint may not fit P_c
    part = solve(with_kv_tokens(problem, search.tokens), method, options)
    if part.status is Status.INFEASIBLE:
        raise SolverError(f"{part.method}: no plan for {search.tokens} KV tokens, which the "
                          "feasibility search found")
    costs = check_partition(problem, part.bounds, tp_degrees=part.tp_degrees,
                            resident=part.resident, ranks=part.ranks)
    held = smallest_kv_tokens(stage_kv_tokens(problem, costs))
    if held != search.tokens:
        raise SolverError(f"{part.method}: the plan holds {held} KV tokens, not the "
                          f"{search.tokens} the search proved")
    info = {**part.info, "objective": KV_CAPACITY, "kv_capacity_tokens": search.tokens,
            "kv_search_probes": search.probes, "kv_search_upper_tokens": search.upper}
    return dataclasses.replace(part, wall_s=time.perf_counter() - start, info=info)
