"""What the cost model predicts for a generation: the plan's stages re-costed at the run's shapes.

A plan's stage latencies are for its own workload (one phase, one sequence length). A greedy
generation runs a prefill of the prompt and then decode steps of one token per sequence at a
growing context, so each stage is costed again from the plan's model: the prefill at the
prompt's length, and a decode step at the mean context of the generation (prompt + N / 2), the
stage's layers summed and its inbound transfer priced at the link the plan's cut crosses. The
GPipe simulator turns those into a time to first token (the prefill's makespan) and a time per
output token (the decode makespan per step: every sequence waits that long for its next token).
No torch here.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..core.link import Link
from ..frontend.sources import load_model
from ..hardware.footprint import Workload
from ..plan.simulate import simulate
from ..plan.types import Plan

__all__ = ["inbound_links", "predict_generation", "stage_times"]


def inbound_links(plan: Plan) -> list[Link | None]:
    """The link each stage's input crosses (None for the first stage): the plan's link, or on a
    cluster the node's own link between stages of one node and the inter-node link else."""
    cluster = plan.hardware.cluster
    plain = Link(**plan.hardware.link) if plan.hardware.link else None
    links: list[Link | None] = [None]
    for prev, st in zip(plan.stages, plan.stages[1:], strict=False):
        if cluster and st.node is not None and prev.node is not None:
            raw = cluster["nodes"][st.node].get("link") if st.node == prev.node \
                else cluster.get("inter_node_link")
            links.append(Link(**raw) if raw else plain)
        else:
            links.append(plain)
    return links


def stage_times(plan: Plan, layers: list[dict[str, Any]]) -> list[float]:
    """Each stage of ``plan`` costed on ``layers`` (a graph's layer rows, by name): the sum of
    its layers' latencies plus its inbound activation over its link."""
    by_name = {row["name"]: row for row in layers}
    order = [row["name"] for row in layers]
    times = []
    for st, link in zip(plan.stages, inbound_links(plan), strict=True):
        compute = sum(float(by_name[name]["latency_s"]) for name in st.layers)
        transfer = 0.0
        first = order.index(st.layers[0])
        if link is not None and first > 0:
            transfer = link.transfer_s(float(by_name[order[first - 1]]["activation_bytes"]))
        times.append(compute + transfer)
    return times


def predict_generation(plan: Plan, workload: Workload, *, batch: int, prompt: int,
                       new_tokens: int, microbatches: int) -> dict[str, Any]:
    """Predicted TTFT, TPOT and tokens/s of ``new_tokens`` greedy tokens after a ``prompt``-token
    prefill of ``batch`` sequences in ``microbatches`` micro-batches, on the plan's device."""
    micro = batch // microbatches
    source = plan.model.source or ""
    device = plan.hardware.device or "h100-sxm"
    granularity: Any = plan.model.granularity or "block"

    def costed(phase: Any, seq: int) -> list[float]:
        w = replace(workload, batch=batch, seq_len=seq, phase=phase, micro_batch=micro)
        graph = load_model(source, w, granularity=granularity, device=device,
                           tier=plan.hardware.tier).graph
        return stage_times(plan, graph.layers())

    prefill = simulate(costed("prefill", prompt), microbatches, tokens_per_microbatch=micro * prompt)
    ttft = prefill.makespan_s
    tpot = None
    total = ttft
    if new_tokens > 1:
        steps = new_tokens - 1
        decode = simulate(costed("decode", prompt + new_tokens // 2), microbatches,
                          tokens_per_microbatch=micro, phase="decode", decode_steps=steps)
        tpot = decode.makespan_s / steps
        total += decode.makespan_s
    return {"ttft_s": ttft, "tpot_s": tpot,
            "tokens_per_s": batch * new_tokens / total if total > 0 else None,
            "device": device, "source": "simulator",
            "decode_context": prompt + new_tokens // 2}
