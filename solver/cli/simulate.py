"""``cachepart simulate PLAN``: run a plan through the GPipe forward simulator (a training plan:
its GPipe or 1F1B step, plan/schedule.py) and report it."""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import TYPE_CHECKING

from ..core.errors import InvalidInputError
from ..core.link import check_whole
from .exit_codes import ExitCode
from .tables import format_table

if TYPE_CHECKING:
    from ..plan import Plan, TrainSim
    from ..plan.simulate import KvServing, SimResult

__all__ = ["kv_report", "register", "report", "run", "train_report"]


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "simulate", help="simulate a plan's pipeline: makespan, tokens/s, TPOT, bubble",
        description="Discrete-event simulation of the GPipe forward schedule of a plan JSON.")
    p.add_argument("plan", metavar="PLAN", help="plan JSON file")
    p.add_argument("--microbatches", "-M", type=int, default=None, metavar="M",
                   help="micro-batches in the batch (default: ceil(batch / micro_batch) from the "
                        "plan's workload, 1 when it has none; a training plan: its own M, and "
                        "another M changes the times only, not the plan's memory)")
    p.add_argument("--decode-steps", type=int, default=1, metavar="N",
                   help="consecutive decode steps; step k+1 of a micro-batch waits for its step k "
                        "to leave the last stage (default 1; decode plans only)")
    p.add_argument("--context", type=int, default=None, metavar="L",
                   help="context length: the sequences of L tokens the plan's KV capacity holds "
                        "(floor(kv_capacity_tokens / L)) and the decode tokens/s they give, "
                        "each decoding one token per pass at the plan's stage times")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=run)
    return p


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g} s ({value * 1e3:.4g} ms)"


def _rate(value: float | None) -> str:
    return "- (workload unknown)" if value is None else f"{value:,.1f}"


def report(result: SimResult, title: str = "") -> str:
    """The text report: headline numbers, then the per-stage utilisation table."""
    phase = result.phase or "phase unknown"
    steps = f", {result.decode_steps} decode steps" if result.phase == "decode" else ""
    if result.phase == "decode":
        tpot_seq = f"{_seconds(result.tpot_per_sequence_s)}  (makespan / decode steps)"
    else:
        tpot_seq = "-  (defined for decode only: a prefill pass emits no token stream)"
    rows = [{"stage": j, "latency_s": f"{t:.6g}", "busy_s": f"{b:.6g}", "utilisation": f"{u:.1%}",
             "bottleneck": "*" if j == result.bottleneck_stage else ""}
            for j, (t, b, u) in enumerate(zip(result.stage_times_s, result.busy_s,
                                              result.utilisation, strict=True))]
    table = format_table(rows)
    lines = [
        f"{title}{result.stages} stages, {result.microbatches} micro-batches, {phase}{steps}",
        f"makespan           {_seconds(result.makespan_s)}",
        f"fill latency       {_seconds(result.fill_latency_s)}  (one micro-batch, empty pipeline)",
        f"tokens/s batch     {_rate(result.tokens_per_s)}  (fill and drain included)",
        f"tokens/s steady    {_rate(result.steady_tokens_per_s)}  (pipeline kept full)",
        f"TPOT per sequence  {tpot_seq}",
        f"TPOT paper         {_seconds(result.tpot_paper_s)}  (1 / batch tokens/s)",
        f"bubble fraction    {result.bubble_fraction:.1%}",
        table,
    ]
    return "\n".join(lines)


def train_report(sim: TrainSim, title: str = "") -> str:
    """A training step under its schedule: headline numbers, then each stage's passes."""
    rows = [{"stage": j, "forward_s": f"{f:.6g}", "backward_s": f"{b:.6g}",
             "busy": f"{u:.1%}", "in_flight": k}
            for j, (f, b, u, k) in enumerate(zip(sim.forward_s, sim.backward_s,
                                                 sim.busy_fraction, sim.peak_in_flight,
                                                 strict=True))]
    mfu = "-  (no device peak or FLOPs in the plan)" if sim.mfu is None else f"{sim.mfu:.1%}"
    lines = [
        f"{title}{sim.stages} stages, {sim.microbatches} micro-batches, {sim.schedule}",
        f"step               {_seconds(sim.step_s)}  (every micro-batch forward and backward)",
        f"tokens/s           {_rate(sim.tokens_per_s)}",
        f"bubble fraction    {sim.bubble_fraction:.1%}",
        f"MFU                {mfu}",
        format_table(rows),
    ]
    return "\n".join(lines)


def kv_report(serving: KvServing) -> str:
    """The serving lines: capacity, sequences at the context length, decode throughput."""
    lines = [
        f"KV capacity        {serving.kv_capacity_tokens:,} tokens  (the tightest stage's free "
        "memory / its KV bytes per token)",
        f"sequences at {serving.context:<6,} {serving.sequences:,}  (floor(capacity / context))",
        f"decode tokens/s    {serving.tokens_per_s:,.1f}  ({serving.sequences:,} sequences x 1 "
        f"token per pass of {_seconds(serving.pass_s)})",
        f"assumed: {serving.assumption}",
    ]
    if serving.planned_cache is not None:
        lines.append(f"note: {serving.planned_cache}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ..plan import load_plan, simulate_plan, verify_plan
    from ..plan.simulate import kv_serving

    plan = load_plan(args.plan)
    verify_plan(plan, args.plan)
    if plan.workload.get("phase") == "train":
        return _run_training(args, plan)
    try:
        serving = None if args.context is None else kv_serving(plan, args.context)
    except InvalidInputError as exc:
        if exc.field == "context":
            raise
        raise InvalidInputError(f"{args.plan}: {exc}") from None
    try:
        result = simulate_plan(plan, microbatches=args.microbatches,
                               decode_steps=args.decode_steps)
    except InvalidInputError as exc:
        if exc.field in ("microbatches", "decode_steps"):
            raise
        raise InvalidInputError(f"{args.plan}: {exc}") from None
    if args.json:
        doc = result.to_dict()
        if serving is not None:
            doc["kv_serving"] = serving.to_dict()
        print(json.dumps(doc, indent=2))
    else:
        cluster = plan.hardware.cluster
        where = f" on cluster {cluster['name']} ({cluster['placement']} placement)" \
            if cluster else ""
        print(report(result, f"{plan.model.name} ({plan.method}{where}): "))
        if serving is not None:
            print(kv_report(serving))
    return ExitCode.OK


def _run_training(args: argparse.Namespace, plan: Plan) -> int:
    """A training plan: its step under its schedule, with --microbatches M if given."""
    from ..plan.build import train_simulation

    if args.context is not None or args.decode_steps != 1:
        raise InvalidInputError("--context and --decode-steps apply to serving plans; this is "
                                "a training plan", field="context")
    planned = plan.predicted
    base = train_simulation(plan)
    sim = base
    if args.microbatches is not None:
        m = check_whole(args.microbatches, "microbatches")
        sim = train_simulation(dataclasses.replace(
            plan, workload={**plan.workload, "microbatches": m}))
    mfu = planned.get("mfu")
    if isinstance(mfu, float) and sim.step_s > 0:
        # the same FLOPs per micro-batch: utilisation scales with micro-batches per second
        mfu *= (sim.microbatches / sim.step_s) / (base.microbatches / base.step_s)
        sim = dataclasses.replace(sim, mfu=mfu)
    if args.json:
        print(json.dumps(sim.to_dict(with_slots=False), indent=2))
    else:
        print(train_report(sim, f"{plan.model.name} ({plan.method}): "))
    return ExitCode.OK
