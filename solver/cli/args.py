"""What the sub-commands share: the parser class, model / workload / problem options, loading a
model and building the problem from them, solve options, and live progress on stderr.

Heavy modules (networkx, pandas, solver backends) are imported inside the functions that need
them, so building the parser stays fast."""

from __future__ import annotations

import argparse
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from ..algorithms.base import DEFAULT_TIME_LIMIT_S, ProgressEvent, SolveOptions
from ..core.errors import InvalidInputError
from ..core.problem import MemoryModel
from ..core.units import parse_shape
from ..hardware.catalogue import DEVICES, capacity_for, get_device
from ..hardware.footprint import DTYPE_BYTES, Workload
from .exit_codes import ExitCode

if TYPE_CHECKING:
    from ..core.problem import Problem
    from ..frontend.sources import LoadedModel

__all__ = [
    "MODEL_HELP",
    "SEQ_DEFAULT",
    "Parser",
    "Progress",
    "add_model_args",
    "add_problem_args",
    "csv_items",
    "load_from_args",
    "options_from_args",
    "problem_from_args",
    "warn",
    "with_training",
]

SEQ_DEFAULT = 2048
MODEL_HELP = ("a zoo name (see `cachepart zoo`), a spec .yaml, a Hugging Face config.json, a chain "
              "JSON, or a torch module factory file.py:factory / package.module:factory")
_WORKLOAD_DEFAULTS: dict[str, Any] = {
    "batch": None, "micro_batch": None, "seq": SEQ_DEFAULT, "phase": "prefill", "dtype": "bf16",
    "weight_dtype": None, "attention": "fused", "granularity": "block", "optimizer": "adam",
    "precision": "mixed", "recompute": "none"}


class Parser(argparse.ArgumentParser):
    """argparse that reports usage errors in one line with exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(ExitCode.BAD_INPUT, f"{self.prog}: error: {message} (see --help)\n")


def warn(message: str) -> None:
    print(f"cachepart: warning: {message}", file=sys.stderr)


def csv_items(text: str, field: str) -> tuple[str, ...]:
    """'a,b,c' -> ('a', 'b', 'c'); an empty item is an error naming ``field``."""
    values = tuple(v.strip() for v in text.split(","))
    if any(not v for v in values):
        raise InvalidInputError(f"empty item in {text!r}", field=field)
    return values


class Progress:
    """Prints the latest best objective and bound to stderr, once a second, after one second.
    Ctrl-C inside the ``with`` block comes out as ``Progress.Interrupted``, a KeyboardInterrupt
    that carries what the solve had found (``summary()``) to the one line cachepart prints."""

    class Interrupted(KeyboardInterrupt):
        """Ctrl-C during a solve, with the Progress that saw it."""

        def __init__(self, progress: Progress) -> None:
            super().__init__()
            self.progress = progress

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

    def __enter__(self) -> Progress:
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if isinstance(exc, KeyboardInterrupt) and not isinstance(exc, Progress.Interrupted):
            raise Progress.Interrupted(self) from None

    def summary(self) -> str:
        """What the solve has so far: 'best 0.0123 s, bound 0.0119 s', or 'no solution yet'."""
        event = self.latest
        bound = "" if event is None or event.bound is None else f"bound {event.bound:.6g} s"
        if event is None or event.objective is None:
            return "no solution yet" + (f", {bound}" if bound else "")
        return f"best {event.objective:.6g} s" + (f", {bound}" if bound else "")


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
    g.add_argument("--phase", choices=["prefill", "decode", "train"], default="prefill",
                   help="prefill (default), decode, or train: a forward and backward pass under "
                        "a pipeline schedule (--schedule; with a chain JSON too)")
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
    g.add_argument("--optimizer", choices=["adam", "sgd"], default="adam",
                   help="--phase train: the optimizer whose state each device holds (default "
                        "adam; sgd with momentum)")
    g.add_argument("--precision", choices=["mixed", "bf16"], default="mixed",
                   help="--phase train: mixed (bf16 weights and gradients, fp32 master weights "
                        "and optimizer state: 16 bytes a parameter with adam; default) or bf16 "
                        "(everything in bf16)")
    g.add_argument("--recompute", choices=["none", "selective", "full"], default="none",
                   help="--phase train: activation recomputation (Korthikanti et al. 2022): "
                        "none (default), selective (attention scores), full (each block's input "
                        "kept, its forward run again)")
    g.add_argument("--input-shape", default=None, metavar="B,S",
                   help="sample input shape for a torch module MODEL, for example 8,128")
    g.add_argument("--input-dtype", default=None, choices=["float32", "bfloat16", "float16",
                                                           "long", "int32"],
                   help="input dtype for a torch module MODEL (default float32); long or int32 "
                        "means token ids of shape B,S, sized per token")


def add_problem_args(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    p.add_argument("--devices", "-k", type=int, default=None, metavar="K",
                   help="devices available: the most stages a plan may use (required without "
                        "--cluster; with one, default every device of the cluster)")
    p.add_argument("--capacity", "-c", default=None, metavar="C",
                   help="bytes per device: a count (52428800), a size with a unit (50MiB, 48MB, "
                        "80GB), or a tier of --device: smem, l2, l2-usable, hbm (required "
                        "unless every kind of --cluster carries capacity_bytes; then a tier of "
                        "each kind's device)")
    p.add_argument("--cluster", default=None, metavar="FILE|NAME",
                   help="plan on a cluster: a cluster JSON, paper (2 x 8 H100 SXM), or "
                        "NODESxPER-DEVICE such as 2x8-h100-sxm; each cut is priced at the link "
                        "it crosses, each stage at its device kind")
    p.add_argument("--placement", choices=["ordered", "free"], default=None,
                   help="with --cluster: ordered (stage j on rank j) or free (the solver picks "
                        "the devices and their order); default ordered for one device kind, "
                        "free for several")
    p.add_argument("--schedule", choices=["gpipe", "1f1b"], default=None,
                   help="--phase train: the pipeline schedule (default 1f1b): stage j of P "
                        "keeps M micro-batches' stashes under gpipe, min(P - j, M) under 1f1b")
    p.add_argument("--microbatches", type=int, default=None, metavar="M",
                   help="--phase train: micro-batches per step (default ceil(batch / "
                        "micro-batch); 1 for a chain JSON)")
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


def _workload(args: argparse.Namespace) -> Workload:
    shape = parse_shape(args.input_shape)
    batch = args.batch if args.batch is not None else (shape[0] if shape else 1)
    seq = args.seq
    if shape is not None and len(shape) >= 2 and args.seq == SEQ_DEFAULT and \
            args.input_dtype in ("long", "int32"):
        seq = shape[1]  # token ids (B, S): the traced sequence length
    return Workload(batch=batch, seq_len=seq, phase=args.phase,
                    micro_batch=args.micro_batch, weight_dtype=args.weight_dtype or args.dtype,
                    activation_dtype=args.dtype, attention=args.attention,
                    optimizer=args.optimizer, precision=args.precision,
                    recompute=args.recompute)


def _check_profile(profile: Any, loaded: LoadedModel, path: str) -> None:
    """A profile measured for another model or workload would plan with the wrong times."""
    if profile.model != loaded.graph.name:
        raise InvalidInputError(f"{path} was measured for model {profile.model!r}, not "
                                f"{loaded.graph.name!r}", field="profile")
    planned = loaded.graph.metadata.get("workload") or {}
    measured = profile.workload or {}
    for key in ("micro_batch", "seq_len", "phase"):
        mine = planned.get(key)
        if key == "micro_batch":
            theirs = measured.get("micro_batch") or measured.get("batch")
        else:
            theirs = measured.get(key)
        if mine is not None and theirs is not None and mine != theirs:
            raise InvalidInputError(f"{path} was measured at {key} {theirs}, but this plan's "
                                    f"workload has {key} {mine}", field="profile")


def load_from_args(args: argparse.Namespace, tier: str | None = None) -> LoadedModel:
    """MODEL with the workload options (and --profile, where the command has it); warnings go
    to stderr."""
    from ..frontend.profiles import apply_profile, load_profile
    from ..frontend.sources import load_model

    if args.phase != "train":
        given = [f"--{name}" for name in ("optimizer", "precision", "recompute")
                 if getattr(args, name) != _WORKLOAD_DEFAULTS[name]]
        if given:
            warn(f"{', '.join(given)}: apply to --phase train only; ignored")
    loaded = load_model(args.model, _workload(args), granularity=args.granularity,
                        device=args.device, input_shape=parse_shape(args.input_shape),
                        input_dtype=args.input_dtype, tier=tier)
    if loaded.kind == "chain":
        given = [f"--{name.replace('_', '-')}" for name, default in _WORKLOAD_DEFAULTS.items()
                 if getattr(args, name, default) != default
                 and not (name == "phase" and args.phase == "train")]  # a chain trains too
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
        warn(warning)
    return loaded


def problem_from_args(args: argparse.Namespace) -> tuple[LoadedModel, Problem, str | None]:
    """The model and its problem from the problem options (with the cluster extension when
    --cluster is given); the capacity's tier."""
    from ..frontend.lower import problem_from_graph

    if getattr(args, "cluster", None):
        return _cluster_problem(args)
    if getattr(args, "placement", None):
        warn("--placement applies to --cluster only; ignored")
    if args.devices is None:
        raise InvalidInputError("required unless --cluster is given", field="max_stages")
    if args.capacity is None:
        raise InvalidInputError("required unless --cluster gives every kind's capacity",
                                field="capacity")
    capacity, tier = capacity_for(args.capacity, get_device(args.device))
    loaded = load_from_args(args, tier)
    problem = problem_from_graph(loaded.graph, capacity, args.devices, args.memory_model)
    return loaded, with_training(args, loaded, problem), tier


def with_training(args: argparse.Namespace, loaded: LoadedModel, problem: Problem) -> Problem:
    """--phase train: the problem under --schedule with --microbatches (solver/core/
    training.py); otherwise those options are warned about and the problem is returned as is."""
    from ..frontend.lower import training_for

    schedule, microbatches = getattr(args, "schedule", None), getattr(args, "microbatches", None)
    if args.phase != "train":
        if schedule is not None or microbatches is not None:
            warn("--schedule and --microbatches apply to --phase train only; ignored")
        return problem
    if microbatches is None and loaded.kind == "chain":
        microbatches = 1  # a chain's sizes are per micro-batch; it has no batch to divide
    if microbatches is None:
        workload = _workload(args)
        microbatches = -(-workload.batch // workload.sequences)
    return problem.replace(training=training_for(loaded.graph, schedule or "1f1b", microbatches))


def _cluster_problem(args: argparse.Namespace) -> tuple[LoadedModel, Problem, str | None]:
    """--cluster: each kind's capacity (its own, or --capacity on its device) and layer times
    (a chain JSON's per-kind latency_s, else the cost model of the kind's device)."""
    from ..frontend.lower import fleet_for, kind_latencies, overheads_of, problem_from_graph
    from ..frontend.sources import load_model
    from ..hardware.cluster import get_cluster

    cluster = get_cluster(args.cluster)
    capacities: dict[str, int] = {}
    tiers: dict[str, str | None] = {}
    for kind in cluster.device_types:
        if kind.capacity_bytes is not None:
            capacities[kind.name], tiers[kind.name] = kind.capacity_bytes, None
        elif args.capacity is None:
            raise InvalidInputError(f"cluster {cluster.name!r}: device kind {kind.name!r} has no "
                                    "capacity_bytes: give a tier of its device or bytes",
                                    field="capacity")
        elif kind.device is not None:  # cluster.py: a kind names a capacity, a device or both
            capacities[kind.name], tiers[kind.name] = capacity_for(args.capacity, kind.device)
    if args.capacity is not None and all(t.capacity_bytes is not None
                                         for t in cluster.device_types):
        warn(f"--capacity {args.capacity}: every device kind of cluster {cluster.name!r} gives "
             "its own capacity_bytes; ignored")
    used = {k for k, _ in cluster.ranks}
    first = cluster.device_type(cluster.ranks[0][0])
    if first.device is not None:
        args.device = first.device.name  # rank 0's device: the plan's record and the cost model
    loaded = load_from_args(args, tiers[first.name])
    graph = loaded.graph
    if loaded.kind == "chain":
        if graph.link is not None:
            warn(f"{args.model}: a chain's own link is ignored with --cluster; the cluster's "
                 "links price every cut")
        latencies = kind_latencies(graph, cluster.kinds)
        fixed: dict[str, np.ndarray] | None = None
    else:
        latencies, fixed = {}, {}
        for kind in cluster.device_types:
            if kind.device is None:
                raise InvalidInputError(
                    f"cluster {cluster.name!r}: device kind {kind.name!r} names no catalogue "
                    f"device to time {args.model!r}'s layers; add \"device\" to it, or plan a "
                    "chain JSON with per-kind latency_s", field="cluster")
            same = kind.device.name == args.device and tiers[kind.name] == tiers[first.name]
            other = graph if same else load_model(
                args.model, _workload(args), granularity=args.granularity, device=kind.device.name,
                input_shape=parse_shape(args.input_shape), input_dtype=args.input_dtype,
                tier=tiers[kind.name]).graph
            latencies[kind.name] = np.array([layer["latency_s"] for layer in other.layers()])
            fixed[kind.name] = overheads_of(other)
    placement = args.placement or ("ordered" if len(used) == 1 else "free")
    fleet = fleet_for(cluster, latencies, capacities, placement, fixed)
    k = args.devices if args.devices is not None else cluster.size
    if k > cluster.size:
        warn(f"--devices {k} exceeds the {cluster.size} devices of cluster {cluster.name!r}; "
             f"at most {cluster.size} are used")
    problem = problem_from_graph(graph, capacities[first.name], k, args.memory_model, fleet=fleet)
    return loaded, with_training(args, loaded, problem), tiers[first.name]


def options_from_args(args: argparse.Namespace, **extra: Any) -> SolveOptions:
    return SolveOptions(time_limit_s=args.time_limit, seed=args.seed, workers=args.workers,
                        **extra)
