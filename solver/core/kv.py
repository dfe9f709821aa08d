"""KV-cache capacity arithmetic shared by the serving objective and plans.

A stage's free memory (capacity - stage memory, per device) holds floor(free x t / K) tokens
of KV cache, K being the KV bytes one token adds to its layers, split over its t devices. A
stage with K = 0 holds none and limits nothing (None: unbounded). A plan's KV capacity is its
tightest stage's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .partition import StageCost
    from .problem import Problem

__all__ = ["KV_CAPACITY", "LATENCY", "OBJECTIVES", "kv_tokens", "smallest_kv_tokens",
           "stage_kv_tokens"]

LATENCY = "latency"
KV_CAPACITY = "kv-capacity"
OBJECTIVES = (LATENCY, KV_CAPACITY)
"""What a plan may be solved for: the smallest bottleneck, or the most KV tokens first."""


def kv_tokens(free_bytes: int, kv_bytes_per_token: int, tp_degree: int = 1) -> int | None:
    """Tokens of KV cache a stage's free bytes hold: floor(free x tp_degree / KV bytes per
    token), free being per device. None when the stage holds no KV (unbounded); negative when
    the stage does not fit at all."""
    if kv_bytes_per_token <= 0:
        return None
    return (int(free_bytes) * int(tp_degree)) // int(kv_bytes_per_token)


def stage_kv_tokens(problem: Problem, costs: Sequence[StageCost]) -> list[int | None]:
    """Per evaluated stage: the KV tokens its free memory holds on its own device (with TP,
    the KV split over the stage's devices); None for a stage holding no KV."""
    return [kv_tokens(c.capacity_bytes - c.memory_bytes, problem.stage_kv_bytes(c.start, c.end),
                      c.tp_degree) for c in costs]


def smallest_kv_tokens(per_stage: Sequence[int | None]) -> int | None:
    """A plan's KV capacity: its smallest stage's; None when no stage holds KV."""
    held = [t for t in per_stage if t is not None]
    return min(held) if held else None
