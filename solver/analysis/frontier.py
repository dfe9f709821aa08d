"""The capacity frontier: how many devices a model needs when every stage must fit a tier."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd

from ..core.feasibility import fewest_stages
from ..core.problem import Problem
from ..frontend.lower import problem_from_graph
from ..frontend.sources import load_model
from ..hardware.catalogue import capacity_for, get_device
from ..hardware.footprint import Workload

__all__ = ["FrontierPoint", "devices_needed", "frontier_table"]


@dataclass(frozen=True)
class FrontierPoint:
    model: str
    tier: str
    dtype: str
    granularity: str
    capacity_bytes: int
    devices_needed: int | None
    """None: some single layer does not fit the tier, however many devices."""
    largest_layer_bytes: int


def devices_needed(problem: Problem) -> int | None:
    """Fewest stages whose memory fits the capacity (greedy packing is optimal for this)."""
    return fewest_stages(problem.capacity_reach)


def frontier_table(models: Iterable[str], tiers: Iterable[str], dtypes: Iterable[str], *,
                   workload: Workload, device: str = "h100-sxm",
                   granularities: Iterable[str] = ("block", "op")) -> pd.DataFrame:
    dev = get_device(device)
    rows = []
    for model in models:
        for dtype in dtypes:
            wl = Workload(batch=workload.batch, seq_len=workload.seq_len, phase=workload.phase,
                          micro_batch=workload.micro_batch, weight_dtype=dtype,
                          activation_dtype=dtype if dtype in ("fp32", "bf16", "fp16", "fp8")
                          else workload.activation_dtype, attention=workload.attention)
            for gran in granularities:
                graph = load_model(model, wl, granularity=gran, device=device).graph  # type: ignore[arg-type]
                for tier in tiers:
                    cap, _ = capacity_for(tier, dev)
                    # K = n: the question is how many devices, not whether K suffices.
                    problem = problem_from_graph(graph, cap, len(graph))
                    largest = max(problem.stage_memory(i, i + 1) for i in range(problem.n))
                    rows.append(FrontierPoint(model, tier, dtype, gran, cap,
                                              devices_needed(problem), largest))
    return pd.DataFrame([vars(r) for r in rows])
