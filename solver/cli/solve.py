"""``cachepart solve``: one partition, written as a plan JSON, with a per-stage table."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..algorithms.ilp.backends import DEFAULT_BACKEND, ILP_BACKENDS
from ..algorithms.registry import AUTO, METHODS
from ..core.errors import InvalidInputError
from ..core.units import format_bytes
from .args import Progress, add_problem_args, options_from_args, problem_from_args, warn
from .exit_codes import ExitCode
from .tables import format_table

__all__ = ["register", "stage_table"]

# the engines' names, without importing their rules at start-up
ENGINE_NAMES = ["vllm", "sglang", "trtllm", "megatron", "torchtitan", "deepspeed", "pipelining",
                "accelerate"]


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("solve", help="solve one partition and write the plan JSON")
    add_problem_args(p)
    p.add_argument("--method", "-m", choices=[AUTO, *METHODS], default=AUTO,
                   help="partitioning method (default auto: parametric for the canonical problem, "
                        "ilp with --tp or --residency partial; the plan records which and why)")
    p.add_argument("--tp", default=None, metavar="DEGREES",
                   help="tensor-parallel degrees a stage may use, e.g. 1,2,4,8 (stages of t "
                        "devices within one node; each must divide the attention heads; two "
                        "ring all-reduces a block; methods ilp, dp, auto)")
    p.add_argument("--devices-per-node", type=int, default=8,
                   help="devices per node, the largest TP degree (default 8)")
    p.add_argument("--residency", choices=["full", "partial"], default="full",
                   help="full: every weight in the capacity tier (default); partial: the ILP "
                        "chooses which weights stay on chip and streams the rest from HBM "
                        "(needs an on-chip --capacity tier)")
    p.add_argument("--engine", choices=ENGINE_NAMES, default=None,
                   help="plan only splits this engine can take: whole blocks, its embedding and "
                        "head placement, one TP degree for every stage (from --tp), its memory "
                        "reservation (see `cachepart export`)")
    p.add_argument("--engine-memory-fraction", type=float, default=None, metavar="F",
                   help="the share of each device the engine leaves the model (default: the "
                        "engine's own, e.g. vLLM's gpu_memory_utilization 0.9)")
    p.add_argument("--objective", choices=["latency", "kv-capacity"], default="latency",
                   help="latency: the smallest bottleneck (default); kv-capacity: the most KV-cache "
                        "tokens on the tightest stage (free memory / its KV bytes per token), "
                        "then the smallest bottleneck among those plans (exact methods only; "
                        "not with --tp)")
    p.add_argument("--solver", choices=list(ILP_BACKENDS), default=DEFAULT_BACKEND,
                   help=f"ILP backend (default {DEFAULT_BACKEND})")
    p.add_argument("--output", "-o", metavar="PLAN", help="write the plan JSON here")
    p.add_argument("--steady-state", action="store_true",
                   help="headline the tokens/s of a pipeline kept full (default: the batch's, "
                        "fill and drain included)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress or table")
    p.set_defaults(handler=run)
    return p


def stage_table(plan: Any, *, steady: bool = False, micro_given: bool = True) -> str:
    """A plan as text: the header line, one row per stage, the bottleneck and the status."""
    rows = []
    for st in plan.stages:
        first, last = st.layers[0], st.layers[-1]
        row: dict[str, Any] = {
            "stage": st.index,
            "layers": first if first == last else f"{first} .. {last}",
            "count": len(st.layers),
            "memory": format_bytes(st.memory_bytes),
            "headroom": format_bytes(st.headroom_bytes),
            "compute_s": st.compute_s,
            "transfer_s": st.transfer_in_s,
            "latency_s": st.latency_s,
        }
        if any(x.tp_degree > 1 for x in plan.stages):
            row["tp"] = st.tp_degree
        if st.device_type is not None:
            row["device"] = f"{st.device_rank} ({st.device_type}, node {st.node})"
        if st.resident_layers is not None:
            row["resident"] = f"{len(st.resident_layers)}/{len(st.layers)}"
        if st.forward_s is not None:  # a training plan: the passes and the stashes held
            row = {**{k: v for k, v in row.items() if k not in ("compute_s", "transfer_s")},
                   "forward_s": st.forward_s, "backward_s": st.backward_s,
                   "transfer_s": st.transfer_in_s + (st.transfer_out_s or 0.0),
                   "in_flight": st.microbatches_in_flight, "latency_s": st.latency_s}
        rows.append(row)
    bottleneck = plan.objective["max_stage_latency_s"]
    sol = plan.solver
    gap = "" if sol.gap is None else f", gap {sol.gap:.2%}"
    tps = plan.predicted.get("tokens_per_s")
    used = sum(st.tp_degree for st in plan.stages)
    lines = [
        f"model {plan.model.name}: {plan.model.num_layers} layers in {len(plan.stages)} stages "
        f"on {used} of {plan.hardware.devices} devices, " + (
            f"cluster {cluster['name']} ({cluster['placement']} placement)"
            if (cluster := plan.hardware.cluster) else
            f"capacity {format_bytes(plan.hardware.capacity_bytes)}")
        + f" ({plan.hardware.memory_model})",
        format_table(rows, float_format=lambda v: f"{v:.6g}"),
        f"bottleneck {bottleneck:.6g} s (stage {plan.objective['bottleneck_stage']}); "
        f"{plan.method}{'/' + sol.backend if sol.backend else ''} {sol.status.value}{gap} "
        f"in {sol.wall_s:.3g} s",
    ]
    if sol.info.get("certified_by_exact_search"):
        lines.append("the backend did not finish its proof; an exact search proves this plan "
                     "optimal")
    if sol.info.get("why"):
        lines.append(f"method chosen by auto: {sol.info['why']}")
    pred = plan.predicted
    if "step_s" in pred:  # a training plan: its step under the schedule
        mfu = "" if pred.get("mfu") is None else f", MFU {pred['mfu']:.1%}"
        rate = "" if tps is None else f": {tps:,.0f} tokens/s"
        lines.append(f"predicted step {pred['step_s']:.4g} s for {pred['microbatches']} "
                     f"micro-batches under {pred['schedule']}{rate}, bubble "
                     f"{pred['bubble_fraction']:.1%}{mfu}")
    elif tps is not None:
        lines.append(_headline(plan, steady, micro_given))
    kv = plan.objective.get("kv_capacity_tokens")
    if kv is not None:
        tight = min((st for st in plan.stages if st.kv_capacity_tokens is not None),
                    key=lambda st: st.kv_capacity_tokens)
        goal = plan.objective.get("name", "latency")
        lines.append(f"KV capacity {kv:,} tokens (stage {tight.index}: "
                     f"{format_bytes(tight.headroom_bytes)} free / {tight.kv_bytes_per_token:,} "
                     f"bytes a token); objective {goal}")
    return "\n".join(lines)


def _headline(plan: Any, steady: bool, micro_given: bool) -> str:
    """The predicted rate: the batch's (fill and drain included) unless ``steady``; how the
    batch is split, and that the split is the default when the user gave none."""
    pred, wl = plan.predicted, plan.workload
    unit = wl.get("throughput_unit", "tokens")
    batch_tps, steady_tps = pred.get("batch_tokens_per_s"), pred.get("tokens_per_s")
    m, micro, batch = pred.get("microbatches"), wl.get("micro_batch"), wl.get("batch")
    split = "" if m is None or micro is None else \
        f" in {m} micro-batch{'es' if m != 1 else ''} of {micro}"
    default = "" if micro_given else \
        "; the micro-batch is the whole batch by default (set --micro-batch)"
    if steady or batch_tps is None:
        return f"predicted {steady_tps:,.0f} {unit}/s at steady state (a pipeline kept full)"
    return (f"predicted {batch_tps:,.0f} {unit}/s for the batch of {batch}{split}, fill and "
            f"drain included ({steady_tps:,.0f} at steady state){default}")


def _with_extensions(args: argparse.Namespace, loaded: Any, problem: Any, tier: str | None) -> Any:
    """The problem with the extensions --tp and --residency ask for."""
    from ..core.link import Link
    from ..frontend.lower import residency_for, tensor_parallel_for
    from ..hardware.catalogue import get_device

    if args.tp is not None:
        try:
            degrees = tuple(int(v) for v in args.tp.split(","))
        except ValueError:
            raise InvalidInputError(f"expected degrees like 1,2,4,8, got {args.tp!r}",
                                    field="tp_degrees") from None
        if degrees != (1,):
            fleet = problem.fleet
            if fleet is not None:  # TP groups stay inside a node: its own link all-reduces
                per_node = max(fleet.rank_node.count(g) for g in range(fleet.nodes))
                link: Link = fleet.node_links[0]
            else:
                per_node = args.devices_per_node
                link = loaded.graph.link if loaded.kind == "chain" and \
                    loaded.graph.link is not None else get_device(args.device).link
            problem = problem.replace(tensor_parallel=tensor_parallel_for(
                loaded.graph, degrees, per_node, link))
    if args.residency == "partial":
        if args.cluster:
            raise InvalidInputError("--residency partial cannot be combined with --cluster yet")
        if args.profile:
            raise InvalidInputError("--residency partial: cannot use --profile (a profile has one "
                                    "latency per layer; residency needs an on-chip and a "
                                    "streamed one)")
        device = get_device(args.device)
        if tier is None or tier == device.main_memory:
            raise InvalidInputError(
                f"--residency partial: --capacity {args.capacity} is not an on-chip tier below "
                f"{args.device}'s main memory; give one (for example l2) with a zoo, spec or HF "
                "model, so each layer has an on-chip and a streamed latency")
        problem = problem.replace(residency=residency_for(loaded.graph))
    return problem


def _engine_shaped(args: argparse.Namespace, loaded: Any, problem: Any) -> tuple[Any, dict]:
    """The problem under the engine's rules, and the plan's record of them."""
    from ..engines import engine_problem, get_engine

    engine = get_engine(args.engine)
    if args.phase == "train" and engine.name in ("vllm", "sglang", "trtllm", "accelerate"):
        raise InvalidInputError(f"{engine.title} serves (forward passes only); plan a training "
                                "step for megatron, torchtitan, deepspeed or pipelining",
                                field="engine")
    if args.phase == "train" and engine.name == "megatron" and args.schedule == "gpipe":
        raise InvalidInputError("Megatron-Core runs 1F1B (interleaved with virtual stages), not "
                                "GPipe: plan with --schedule 1f1b", field="engine")
    if args.residency == "partial":
        raise InvalidInputError(f"{engine.title} keeps every weight on its devices; "
                                "--residency partial does not apply", field="engine")
    shaped = engine_problem(problem, problem.names, engine,
                            memory_fraction=args.engine_memory_fraction)
    share = shaped.capacity_bytes / problem.capacity_bytes
    record = {"name": engine.name, "memory_fraction": None if share == 1 else round(share, 6),
              "device_capacity_bytes": problem.capacity_bytes}
    return shaped, record


def run(args: argparse.Namespace) -> int:
    from ..algorithms import solve, solve_kv
    from ..core.status import Status
    from ..plan import build_plan

    if args.output is not None and not args.output.strip():
        raise InvalidInputError("empty path", field="output")
    if (args.tp is None or args.cluster) and args.devices_per_node != 8:
        warn(f"--devices-per-node {args.devices_per_node} applies to --tp without --cluster "
             "only (a cluster's nodes say how many devices they hold); ignored")
    if args.solver != DEFAULT_BACKEND and args.method not in ("ilp", AUTO):
        warn(f"--solver {args.solver} applies to --method ilp only; --method {args.method} "
             "ignores it")
    loaded, problem, tier = problem_from_args(args)
    problem = _with_extensions(args, loaded, problem, tier)
    engine = None
    if args.engine is not None:
        problem, engine = _engine_shaped(args, loaded, problem)
    elif args.engine_memory_fraction is not None:
        warn("--engine-memory-fraction applies to --engine only; ignored")
    with Progress(sys.stderr, args.method, enabled=not args.quiet) as progress:
        options = options_from_args(args, backend=args.solver, progress=progress)
        if args.objective == "kv-capacity":
            part = solve_kv(problem, args.method, options)
        else:
            part = solve(problem, args.method, options)
    if part.status is Status.INFEASIBLE:
        from ..analysis.suggest import Situation, infeasible_message, suggest_fixes

        fixes = suggest_fixes(Situation.from_args(args, problem, loaded, tier))
        print(f"cachepart: infeasible: {infeasible_message(part.diagnosis, fixes)}",
              file=sys.stderr)
        return ExitCode.INFEASIBLE
    from ..frontend.sources import absolute_source

    device = None if loaded.kind == "chain" else args.device
    plan = build_plan(loaded.graph, problem, part, time_limit_s=args.time_limit, device=device,
                      tier=tier, source=absolute_source(args.model), engine=engine,
                      objective=args.objective)
    if args.output:
        plan.save(args.output)
    if not args.quiet:
        print(stage_table(plan, steady=args.steady_state,
                          micro_given=args.micro_batch is not None or loaded.kind == "chain"))
        if args.output:
            print(f"plan written to {args.output}")
    return ExitCode.OK
