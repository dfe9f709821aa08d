"""The ``cachepart`` command line. Exit codes: 0 plan written or shown; 2 bad input;
3 infeasible (with a one-line diagnosis); 4 solver failure."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pandas as pd

from models.zoo import load_zoo_model, zoo_names

from .algorithms import DEFAULT_TIME_LIMIT_S, ILP_BACKENDS, METHODS, ProgressEvent, SolveOptions
from .commands import COMMAND_MODULES
from .compare import compare, compare_table
from .errors import CachepartError, InvalidInputError, SolverError
from .footprint import DTYPE_BYTES, Workload
from .hardware import DEVICES, capacity_for, get_device
from .plan import Plan, build_plan, load_plan
from .problem import MemoryModel, Problem
from .profile_io import apply_profile, load_profile
from .solve_extended import AUTO, solve_extended
from .sources import LoadedModel, load_model
from .status import Status
from .units import format_bytes, parse_shape
from .variants import Residency, TensorParallel, allreduce_bytes_of

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_INFEASIBLE",
    "EXIT_OK",
    "EXIT_SOLVER",
    "add_model_args",
    "add_problem_args",
    "load_from_args",
    "main",
    "options_from_args",
    "problem_from_args",
    "stage_table",
]

EXIT_OK, EXIT_BAD_INPUT, EXIT_INFEASIBLE, EXIT_SOLVER = 0, 2, 3, 4
SEQ_DEFAULT = 2048


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors in one line with exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"cachepart: error: {message} (see --help)\n")


class _Progress:
    """Prints the latest best objective and bound to stderr, once a second, after one second."""

    def __init__(self, stream: TextIO, label: str, enabled: bool = True) -> None:
        self.stream, self.label, self.enabled = stream, label, enabled
        self.latest: ProgressEvent | None = None
        self.start = time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __call__(self, event: ProgressEvent) -> None:
        self.latest = event

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            event, elapsed = self.latest, time.perf_counter() - self.start
            best = "-" if event is None or event.objective is None else f"{event.objective:.6g} s"
            bound = "-" if event is None or event.bound is None else f"{event.bound:.6g} s"
            print(f"[{self.label} {elapsed:5.1f}s] best {best}  bound {bound}",
                  file=self.stream, flush=True)

    def __enter__(self) -> _Progress:
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


MODEL_HELP = ("a zoo name (see `cachepart zoo`), a spec .yaml, a Hugging Face config.json, a chain "
              "JSON, or a torch module factory file.py:factory / package.module:factory")


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    g = p.add_argument_group("workload (not used for a chain JSON, which carries its own sizes)")
    g.add_argument("--batch", type=int, default=None,
                   help="sequences (or images) per batch (default 1; for a torch module, the "
                        "batch of --input-shape)")
    g.add_argument("--micro-batch", type=int, default=None,
                   help="sequences in flight per stage (default: the whole batch)")
    g.add_argument("--seq", type=int, default=SEQ_DEFAULT,
                   help="tokens per sequence; the context length when decoding (default 2048)")
    g.add_argument("--phase", choices=["prefill", "decode"], default="prefill")
    g.add_argument("--dtype", choices=list(DTYPE_BYTES), default="bf16",
                   help="weight and activation dtype (default bf16)")
    g.add_argument("--weight-dtype", choices=list(DTYPE_BYTES), default=None,
                   help="weight dtype when it differs from --dtype (for example int4)")
    g.add_argument("--attention", choices=["fused", "eager"], default="fused",
                   help="eager attention materialises the score matrix in its buffer")
    g.add_argument("--granularity", choices=["block", "op"], default="block",
                   help="one node per block (default) or per operator")
    g.add_argument("--device", default="h100-sxm",
                   help=f"device for tier capacities and latencies (default h100-sxm; "
                        f"known: {', '.join(DEVICES)})")
    g.add_argument("--input-shape", default=None, metavar="B,S",
                   help="sample input shape for a torch module MODEL, for example 8,128")
    g.add_argument("--input-dtype", default=None, choices=["float32", "bfloat16", "float16",
                                                           "long", "int32"],
                   help="input dtype for a torch module MODEL (default float32); long or int32 "
                        "means token ids of shape B,S, sized per token")


def add_problem_args(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    p.add_argument("--devices", "-k", type=int, required=True, metavar="K",
                   help="devices available: the most stages a plan may use")
    p.add_argument("--capacity", "-c", required=True, metavar="C",
                   help="bytes per device: a count (52428800), a size with a unit (50MiB, 48MB, "
                        "80GB), or a tier of --device: smem, l2, l2-usable, hbm")
    p.add_argument("--memory-model", choices=[m.value for m in MemoryModel],
                   default=MemoryModel.ADDITIVE.value,
                   help="additive: sum of weights+activations+buffers (the paper's, default); "
                        "peak: weights plus the largest live input+output+buffer")
    p.add_argument("--time-limit", type=float, default=DEFAULT_TIME_LIMIT_S, metavar="S",
                   help=f"seconds each solve may take (default {DEFAULT_TIME_LIMIT_S:g}); a "
                        "time-limited ILP answer is reported as feasible with its gap")
    p.add_argument("--profile", metavar="FILE", default=None,
                   help="measured per-layer latencies (cachepart profile) instead of the cost model")
    p.add_argument("--seed", type=int, default=0, help="solver random seed (default 0)")
    p.add_argument("--workers", type=int, default=2, help="solver threads (default 2)")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cachepart", description=(
        "Partition a model's layers into contiguous stages, one per device, so each stage fits "
        "the device's memory and the slowest stage is as fast as possible."))
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("solve", help="solve one partition and write the plan JSON")
    add_problem_args(p)
    p.add_argument("--method", "-m", choices=[AUTO, *METHODS], default=AUTO,
                   help="partitioning method (default auto: parametric for the canonical problem, "
                        "ilp with --tp or --residency partial; the plan records which and why)")
    p.add_argument("--tp", default=None, metavar="DEGREES",
                   help="tensor-parallel degrees a stage may use, e.g. 1,2,4,8 (stages of t "
                        "devices within one node; methods ilp, dp, auto)")
    p.add_argument("--devices-per-node", type=int, default=8,
                   help="devices per node, the largest TP degree (default 8)")
    p.add_argument("--residency", choices=["full", "partial"], default="full",
                   help="full: every weight in the capacity tier (default); partial: the ILP "
                        "chooses which weights stay on chip and streams the rest from HBM "
                        "(needs an on-chip --capacity tier)")
    p.add_argument("--solver", choices=list(ILP_BACKENDS), default="cpsat",
                   help="ILP backend (default cpsat)")
    p.add_argument("--output", "-o", metavar="PLAN", help="write the plan JSON here")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress or table")

    p = sub.add_parser("compare", help="run every method and print one table")
    add_problem_args(p)
    p.add_argument("--methods", default=",".join(METHODS),
                   help=f"comma-separated methods (default all: {','.join(METHODS)})")
    p.add_argument("--csv", metavar="PATH", help="also save the table as CSV")

    p = sub.add_parser("show", help="print a plan JSON as a per-stage table")
    p.add_argument("plan", metavar="PLAN", help="plan JSON file")

    p = sub.add_parser("inspect", help="parameters and per-layer footprints of a model")
    add_model_args(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    sub.add_parser("zoo", help="list the built-in models with their parameter counts")
    for module_name in COMMAND_MODULES:
        importlib.import_module(f"solver.commands.{module_name}").register(sub)
    return parser


def _workload(args: argparse.Namespace) -> Workload:
    shape = parse_shape(args.input_shape)
    batch = args.batch if args.batch is not None else (shape[0] if shape else 1)
    seq = args.seq
    if shape is not None and len(shape) >= 2 and args.seq == SEQ_DEFAULT and \
            args.input_dtype in ("long", "int32"):
        seq = shape[1]  # token ids (B, S): the traced sequence length
    return Workload(batch=batch, seq_len=seq, phase=args.phase,
                    micro_batch=args.micro_batch, weight_dtype=args.weight_dtype or args.dtype,
                    activation_dtype=args.dtype, attention=args.attention)


def load_from_args(args: argparse.Namespace, tier: str | None = None) -> LoadedModel:
    loaded = load_model(args.model, _workload(args), granularity=args.granularity,
                        device=args.device, input_shape=parse_shape(args.input_shape),
                        input_dtype=args.input_dtype, tier=tier)
    if loaded.kind == "chain":
        given = [f"--{name.replace('_', '-')}" for name, default in WORKLOAD_DEFAULTS.items()
                 if getattr(args, name, default) != default]
        if given:
            loaded.warnings.append(f"{', '.join(given)}: a chain JSON carries its own sizes and "
                                   "times; these options do not apply to it")
    elif loaded.kind != "torch" and args.input_shape is not None:
        loaded.warnings.append("--input-shape applies to a torch module MODEL only; ignored")
    if getattr(args, "profile", None):
        profile = load_profile(args.profile)
        _check_profile(profile, loaded, args.profile)
        loaded.graph = apply_profile(loaded.graph, profile)
        loaded.graph.metadata["profile"] = str(args.profile)
    for warning in loaded.warnings:
        print(f"cachepart: warning: {warning}", file=sys.stderr)
    return loaded


WORKLOAD_DEFAULTS: dict[str, Any] = {
    "batch": None, "micro_batch": None, "seq": SEQ_DEFAULT, "phase": "prefill", "dtype": "bf16",
    "weight_dtype": None, "attention": "fused", "granularity": "block"}


def _check_profile(profile: Any, loaded: LoadedModel, path: str) -> None:
    """A profile measured for another model or workload would plan with the wrong times."""
    if profile.model != loaded.graph.name:
        raise InvalidInputError(f"--profile: {path} was measured for model {profile.model!r}, "
                                f"not {loaded.graph.name!r}")
    planned = loaded.graph.metadata.get("workload") or {}
    measured = profile.workload or {}
    for key in ("micro_batch", "seq_len", "phase"):
        mine = planned.get(key)
        if key == "micro_batch":
            theirs = measured.get("micro_batch") or measured.get("batch")
        else:
            theirs = measured.get(key)
        if mine is not None and theirs is not None and mine != theirs:
            raise InvalidInputError(f"--profile: {path} was measured at {key} {theirs}, but this "
                                    f"plan's workload has {key} {mine}")


def problem_from_args(args: argparse.Namespace) -> tuple[LoadedModel, Problem, str | None]:
    if args.devices < 1:
        raise InvalidInputError(f"--devices: must be >= 1, got {args.devices}")
    if args.workers < 1:
        raise InvalidInputError(f"--workers: must be >= 1, got {args.workers}")
    capacity, tier = capacity_for(args.capacity, get_device(args.device))
    loaded = load_from_args(args, tier)
    problem = Problem.from_graph(loaded.graph, capacity, args.devices, args.memory_model)
    return loaded, problem, tier


def options_from_args(args: argparse.Namespace, **extra: Any) -> SolveOptions:
    return SolveOptions(time_limit_s=args.time_limit, seed=args.seed, workers=args.workers,
                        **extra)


def stage_table(plan: Plan) -> str:
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
        if st.resident_layers is not None:
            row["resident"] = f"{len(st.resident_layers)}/{len(st.layers)}"
        rows.append(row)
    bottleneck = plan.objective["max_stage_latency_s"]
    sol = plan.solver
    gap = "" if sol.gap is None else f", gap {sol.gap:.2%}"
    tps = plan.predicted.get("tokens_per_s")
    used = sum(st.tp_degree for st in plan.stages)
    lines = [
        f"model {plan.model.name}: {plan.model.num_layers} layers in {len(plan.stages)} stages "
        f"on {used} of "
        f"{plan.hardware.devices} devices, capacity {format_bytes(plan.hardware.capacity_bytes)} "
        f"({plan.hardware.memory_model})",
        pd.DataFrame(rows).to_string(index=False),
        f"bottleneck {bottleneck:.6g} s (stage {plan.objective['bottleneck_stage']}); "
        f"{plan.method}{'/' + sol.backend if sol.backend else ''} {sol.status.value}{gap} "
        f"in {sol.wall_s:.3g} s",
    ]
    if sol.info.get("why"):
        lines.append(f"method chosen by auto: {sol.info['why']}")
    if tps is not None:
        unit = plan.workload.get("throughput_unit", "tokens")
        lines.append(f"predicted {tps:,.0f} {unit}/s at steady state")
    return "\n".join(lines)


def _extensions(args: argparse.Namespace, loaded: LoadedModel, problem: Problem
                ) -> tuple[TensorParallel | None, Residency | None]:
    tp = None
    if args.tp is not None:
        try:
            degrees = tuple(int(v) for v in args.tp.split(","))
        except ValueError:
            raise InvalidInputError(f"--tp: expected degrees like 1,2,4,8, got {args.tp!r}") \
                from None
        if degrees != (1,):
            link = get_device(args.device).link if loaded.kind != "chain" or \
                loaded.graph.link is None else loaded.graph.link
            tp = TensorParallel(degrees, args.devices_per_node,
                                allreduce_bytes_of(loaded.graph, problem), link)
    residency = None
    if args.residency == "partial":
        nodes = loaded.graph.graph.nodes
        order = loaded.graph.order()
        if getattr(args, "profile", None):
            raise InvalidInputError("--residency partial: cannot use --profile (a profile has one "
                                    "latency per layer; residency needs an on-chip and a streamed "
                                    "one)")
        if any("latency_hbm_s" not in nodes[n] for n in order):
            raise InvalidInputError(
                f"--residency partial: --capacity {args.capacity} is not an on-chip tier below "
                f"{args.device}'s main memory; give one (for example l2) with a zoo, spec or HF "
                "model, so each layer has an on-chip and a streamed latency")
        residency = Residency(np.array([nodes[n]["latency_s"] for n in order]),
                              np.array([nodes[n]["latency_hbm_s"] for n in order]))
    return tp, residency


def _cmd_solve(args: argparse.Namespace) -> int:
    if args.output is not None and not args.output.strip():
        raise InvalidInputError("--output: empty path")
    if args.solver != "cpsat" and args.method not in ("ilp", AUTO):
        print(f"cachepart: warning: --solver {args.solver} applies to --method ilp only; "
              f"--method {args.method} ignores it", file=sys.stderr)
    loaded, problem, tier = problem_from_args(args)
    tp, residency = _extensions(args, loaded, problem)
    with _Progress(sys.stderr, args.method, enabled=not args.quiet) as progress:
        options = options_from_args(args, backend=args.solver, progress=progress)
        part = solve_extended(problem, args.method, options, tp=tp, residency=residency)
    if part.status is Status.INFEASIBLE:
        print(f"cachepart: infeasible: {part.diagnosis}", file=sys.stderr)
        return EXIT_INFEASIBLE
    device = None if loaded.kind == "chain" else args.device
    plan = build_plan(loaded.graph, problem, part, time_limit_s=args.time_limit, device=device,
                      tier=tier, source=args.model)
    if args.output:
        plan.save(args.output)
    if not args.quiet:
        print(stage_table(plan))
        if args.output:
            print(f"plan written to {args.output}")
    return EXIT_OK


def _cmd_compare(args: argparse.Namespace) -> int:
    _, problem, _ = problem_from_args(args)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise InvalidInputError(f"--methods: unknown method {unknown[0] if unknown else ''!r} "
                                f"(known: {', '.join(METHODS)})")
    with _Progress(sys.stderr, "compare") as progress:
        answers = compare(problem, methods, options_from_args(args, progress=progress))
    table = compare_table(problem, answers)
    print(f"{problem.n} layers, {problem.max_stages} devices, capacity "
          f"{format_bytes(problem.capacity_bytes)} ({problem.memory_model.value})")
    shown = table.copy()
    shown["min_headroom_bytes"] = [format_bytes(v) if pd.notna(v) else "-"
                                   for v in shown["min_headroom_bytes"]]
    shown = shown.rename(columns={"min_headroom_bytes": "min_headroom"})
    with pd.option_context("display.max_colwidth", 70, "display.width", 200):
        print(shown.to_string(index=False, na_rep="-", float_format=lambda v: f"{v:.4g}"))
    if args.csv:
        try:
            Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
            table.to_csv(args.csv, index=False)
        except OSError as exc:
            raise InvalidInputError(f"--csv: cannot write {args.csv} ({exc.strerror or exc})") \
                from None
        print(f"table written to {args.csv}")
    if all(p.status is Status.INFEASIBLE for _, p in answers):
        print(f"cachepart: infeasible: {answers[0][1].diagnosis}", file=sys.stderr)
        return EXIT_INFEASIBLE
    return EXIT_OK


def _cmd_show(args: argparse.Namespace) -> int:
    print(stage_table(load_plan(args.plan)))
    return EXIT_OK


def _cmd_inspect(args: argparse.Namespace) -> int:
    loaded = load_from_args(args)
    layers = loaded.graph.layers()
    params = loaded.params if loaded.params is not None else None
    weight = int(sum(layer["weight_bytes"] for layer in layers))
    rows = [{"name": layer["name"], "params": layer.get("params"),
             "weight_bytes": layer["weight_bytes"], "activation_bytes": layer["activation_bytes"],
             "buffer_bytes": layer.get("buffer_bytes", 0),
             "kv_cache_bytes": layer.get("kv_cache_bytes", 0),
             "flops": layer.get("flops"), "latency_s": layer["latency_s"]} for layer in layers]
    if args.json:
        doc = {"model": loaded.graph.name, "source_kind": loaded.kind, "params": params,
               "declared_params": loaded.spec.declared_params if loaded.spec else None,
               "weight_bytes": weight, "workload": loaded.graph.metadata.get("workload"),
               "device": loaded.graph.metadata.get("device"), "warnings": loaded.warnings,
               "layers": rows}
        print(json.dumps(doc, indent=2))
        return EXIT_OK
    table = pd.DataFrame(rows)
    for col in ("weight_bytes", "activation_bytes", "buffer_bytes", "kv_cache_bytes"):
        table[col] = [format_bytes(v) for v in table[col]]
    print(f"{loaded.graph.name}: {len(rows)} layers, "
          f"{'?' if params is None else f'{params:,}'} parameters, weights {format_bytes(weight)}")
    with pd.option_context("display.width", 200, "display.max_rows", 400):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return EXIT_OK


def _cmd_zoo(args: argparse.Namespace) -> int:
    rows = []
    for name in zoo_names():
        spec = load_zoo_model(name)
        rows.append({"model": name, "params": f"{spec.params():,}",
                     "published": f"{spec.published_params:,}" if spec.published_params else "-",
                     "active": f"{spec.arch.active_params():,}",
                     "note": "declared " + f"{spec.declared_params:,}" if spec.declared_params
                     else ""})
    print(pd.DataFrame(rows).to_string(index=False))
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed in one line
        return int(exc.code or 0)
    handlers = {"solve": _cmd_solve, "compare": _cmd_compare, "show": _cmd_show,
                "inspect": _cmd_inspect, "zoo": _cmd_zoo}
    try:
        handler = getattr(args, "handler", None) or handlers[args.command]
        return int(handler(args))
    except InvalidInputError as exc:
        print(f"cachepart: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except SolverError as exc:
        print(f"cachepart: solver error: {exc}", file=sys.stderr)
        return EXIT_SOLVER
    except CachepartError as exc:
        print(f"cachepart: error: {exc}", file=sys.stderr)
        return EXIT_SOLVER
    except BrokenPipeError:  # output piped into `head`: not an error
        sys.stderr.close()
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
