"""``python -m solver.runner plan.json``: run a plan under torchrun, one stage per rank.

    torchrun --standalone --nproc-per-node 2 -m solver.runner plan.json --verify --report r.json

Exit codes: 0 done (and verified, with --verify); 1 a rank failed or --verify found a
difference; 2 the plan was refused (schema, world size, fingerprint, dtype, memory), by every
rank. Failures are bounded in time: torchrun ends the other workers when one exits, and every
collective and transfer times out after --timeout seconds.

Test hooks (environment): CACHEPART_FAIL_RANK=N makes rank N raise at the start of its stage;
CACHEPART_DEVICE_MEMORY_BYTES=B checks every stage against B bytes of device memory.

``--torch-device`` was called ``--device`` before (still accepted); ``cachepart run`` passes it as
``--torch-device``, and errors name it so.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from ..errors import CachepartError, InvalidInputError
from ..plan import load_plan
from ..units import parse_shape
from .report import RunReport, StageResult, format_report, median, predict
from .validate import RUNNABLE_DTYPES, check_stage_memory, prepare_run

__all__ = ["check_output_path", "check_run_options", "main", "parser"]

PROG = "cachepart runner"
EXIT_OK, EXIT_FAILED, EXIT_REFUSED = 0, 1, 2


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m solver.runner", description=(
        "Run a cachepart plan with torch.distributed.pipelining: one pipeline stage per rank, "
        "micro-batches forward-only (GPipe). Launch with torchrun, one process per stage."))
    p.add_argument("plan", metavar="PLAN", help="plan JSON file")
    p.add_argument("--microbatches", type=int, default=None, metavar="M",
                   help="micro-batches per step (default: batch / the plan's micro_batch)")
    p.add_argument("--steps", type=int, default=3, metavar="S", help="timed steps (default 3)")
    p.add_argument("--warmup", type=int, default=1, metavar="W",
                   help="untimed steps first (default 1)")
    p.add_argument("--verify", action="store_true",
                   help="rank 0 also runs the whole model in one process and compares outputs")
    p.add_argument("--report", metavar="OUT", help="write the report JSON here (rank 0)")
    p.add_argument("--pin-l2", action="store_true",
                   help="NVIDIA GPUs: keep each stage's weights in the persisting L2 set-aside")
    p.add_argument("--seed", type=int, default=0, help="weights and input seed (default 0)")
    p.add_argument("--dtype", choices=RUNNABLE_DTYPES, default=None,
                   help="run in this dtype instead of the plan's")
    p.add_argument("--torch-device", "--device", dest="torch_device",
                   choices=["auto", "cpu", "cuda"], default="auto",
                   help="auto: CUDA with NCCL where available, else CPU with gloo")
    p.add_argument("--timeout", type=float, default=300.0, metavar="SEC",
                   help="process-group timeout: a transfer or collective waiting longer fails "
                        "(default 300)")
    p.add_argument("--input-shape", default=None, metavar="B,S",
                   help="a torch module plan: the batch input shape it was planned with")
    p.add_argument("--input-dtype", default=None,
                   choices=["float32", "bfloat16", "float16", "long", "int32"],
                   help="a torch module plan: the input dtype it was planned with")
    return p


def check_output_path(path: str, flag: str) -> None:
    """Refuse an output file that cannot be written (a folder, a missing or read-only folder)
    before any work is done: InvalidInputError naming the option and the path. Creates nothing."""
    if not path:
        raise InvalidInputError(f"{flag}: expected a file path, got ''")
    p = Path(path)
    reason = None
    if p.is_dir():
        reason = "is a directory"
    elif not p.parent.is_dir():
        reason = f"no directory {str(p.parent)!r}"
    elif p.exists() and not os.access(p, os.W_OK):
        reason = "permission denied"
    elif not p.exists() and not os.access(p.parent, os.W_OK | os.X_OK):
        reason = f"permission denied in {str(p.parent)!r}"
    if reason is not None:
        raise InvalidInputError(f"{flag} {path}: cannot write ({reason})")


def check_run_options(*, steps: int | None = None, warmup: int | None = None,
                      microbatches: int | None = None, timeout: float | None = None) -> None:
    """The option checks that need no plan: InvalidInputError naming the option and value."""
    for flag, value, least in (("--steps", steps, 1), ("--warmup", warmup, 0),
                               ("--microbatches", microbatches, 1)):
        if value is not None and value < least:
            raise InvalidInputError(f"{flag}: must be >= {least}, got {value}")
    if timeout is not None and not timeout > 0:  # not > 0: NaN too
        raise InvalidInputError(f"--timeout: must be > 0 seconds, got {timeout:g}")


def _error(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _single_process_env() -> None:
    """Run without torchrun as a world of one (a one-stage plan)."""
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(_free_port()))
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("LOCAL_RANK", "0")


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if "WORLD_SIZE" not in os.environ:
        _single_process_env()
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    # every rank runs the same checks and refuses alike; one line per node is enough
    speaks = local_rank == 0
    try:
        check_run_options(steps=args.steps, warmup=args.warmup, microbatches=args.microbatches,
                          timeout=args.timeout)
        if args.report is not None and rank == 0:  # the writer; the path need not exist elsewhere
            check_output_path(args.report, "--report")
        plan = load_plan(args.plan)
        setup = prepare_run(plan, world, microbatches=args.microbatches, dtype=args.dtype,
                            input_shape=parse_shape(args.input_shape), input_dtype=args.input_dtype)
    except CachepartError as exc:
        if speaks:
            _error(str(exc))
        return EXIT_REFUSED
    return _run(args, setup, rank, world, local_rank)


def _run(args: argparse.Namespace, setup: Any, rank: int, world: int, local_rank: int) -> int:
    # torch only now: the checks above work (and fail fast) without importing it
    import torch
    import torch.distributed as dist

    from . import pipeline as pl

    plan = setup.plan
    stage_plan = plan.stages[rank]
    try:
        if args.torch_device == "cuda" and not torch.cuda.is_available():
            raise InvalidInputError("--torch-device cuda: no CUDA device is visible")
        device = pl.select_device(args.torch_device, local_rank)
    except InvalidInputError as exc:
        if local_rank == 0:  # every rank refuses alike
            _error(str(exc))
        return EXIT_REFUSED
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, rank=rank, world_size=world,
                            timeout=timedelta(seconds=args.timeout))
    try:
        # the memory check is per rank (its own device): agree on the verdict, refuse together
        refused = 0
        try:
            capacity, label = pl.device_memory(device)
            check_stage_memory(stage_plan, capacity, f"rank {rank}'s device, {label}")
        except InvalidInputError as exc:
            _error(str(exc))
            refused = 1
        flag = torch.tensor([refused], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if int(flag.item()):
            dist.destroy_process_group()  # every rank agreed: a clean, collective exit
            return EXIT_REFUSED
        if args.pin_l2 and rank == 0 and device.type != "cuda":
            print(f"--pin-l2: no NVIDIA GPU here ({device}): it does nothing", flush=True)

        t_build = time.perf_counter()
        module = pl.build_stage_module(setup, stage_plan.layers, device, args.seed)
        build_s = time.perf_counter() - t_build
        inputs = pl.make_input(setup, device, args.seed) if stage_plan.index == 0 else None
        pin_info: dict[str, Any] | None = None
        run_kwargs = dict(rank=rank, world_size=world, device=device, steps=args.steps,
                          warmup=args.warmup, inputs=inputs, keep_output=args.verify)
        if args.pin_l2 and device.type == "cuda":
            measure, pin_info = _run_pinned(setup, stage_plan, module, run_kwargs)
        else:
            measure = pl.run_stage(setup, stage_plan, module, **run_kwargs)
        gathered: list[Any] | None = [None] * world if rank == 0 else None
        dist.gather_object((measure, build_s, pin_info), gathered, dst=0)
    except Exception as exc:
        _error(f"rank {rank} (stage {stage_plan.index}) failed: {type(exc).__name__}: "
               f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}")
        # no destroy_process_group: a peer may be gone, and torchrun ends the rest
        return EXIT_FAILED
    code = EXIT_OK
    if rank == 0 and gathered is not None:
        try:
            code = _report(args, setup, gathered, backend, device)
        except Exception as exc:
            _error(f"rank 0 failed reporting: {type(exc).__name__}: {exc}")
            code = EXIT_FAILED
    dist.destroy_process_group()
    return code


def _run_pinned(setup: Any, stage_plan: Any, module: Any,
                run_kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    from . import pipeline as pl

    try:
        import cuda.bindings.runtime  # noqa: F401  (only to learn whether it is there)

        from .l2 import L2Pin, pack_parameters
    except ImportError as exc:
        info = {"applied": False, "reason": f"cuda-python is not installed ({exc}): "
                                            "pip install cuda-python"}
        print(f"--pin-l2: {info['reason']}; running without", file=sys.stderr, flush=True)
        return pl.run_stage(setup, stage_plan, module, **run_kwargs), info
    flat = pack_parameters(module)
    if flat is None:
        return pl.run_stage(setup, stage_plan, module, **run_kwargs), {
            "applied": False, "reason": "the stage has no parameters"}
    with L2Pin(flat) as pin:
        measure = pl.run_stage(setup, stage_plan, module, **run_kwargs)
    return measure, dict(pin.info or {}, reset=True)


def _report(args: argparse.Namespace, setup: Any, gathered: list[Any], backend: str,
            device: Any) -> int:
    from . import pipeline as pl

    plan = setup.plan
    measures = sorted((g[0] for g in gathered), key=lambda m: m.index)
    stages = []
    for m in measures:
        sp = plan.stages[m.index]
        stages.append(StageResult(
            index=m.index, rank=m.rank, layers=tuple(m.layers),
            forward_s=median(m.forward_times_s), predicted_s=sp.latency_s,
            predicted_compute_s=sp.compute_s, peak_memory_bytes=m.peak_memory_bytes,
            peak_memory_kind=m.peak_memory_kind, plan_memory_bytes=sp.memory_bytes,
            device=m.device, samples=len(m.forward_times_s)))
    # a step ends when its slowest rank (the last stage) ends; the barrier aligned the starts
    per_step = [max(m.step_times_s[i] for m in measures) for i in range(args.steps)]
    end_to_end = sum(per_step) / len(per_step)
    batch = setup.input_shape[0]
    micro = batch // setup.microbatches
    tokens = batch * setup.input_shape[1] if setup.loaded.kind != "torch" or \
        setup.input_dtype in ("long", "int32") else None
    notes = []
    if plan.hardware.device and not str(device).startswith("cuda"):
        notes.append(f"the plan's stage times are for {plan.hardware.device} (or from the "
                     f"profile it was solved with); this run is on {device}")
    if micro != setup.workload.sequences:
        notes.append(f"micro-batches of {micro} sequences; the plan's stage times are for "
                     f"{setup.workload.sequences}")
    pin = [g[2] for g in gathered if g[2] is not None]
    verify = None
    last = measures[-1]
    if args.verify:
        ref_module = pl.build_reference(setup, device, args.seed)
        import torch

        with torch.no_grad():
            reference = ref_module(pl.make_input(setup, device, args.seed))
        verify = pl.compare_outputs(last.output, reference, setup.dtype)
    report = RunReport(
        model=plan.model.name, plan=str(args.plan), world_size=len(measures), backend=backend,
        dtype=setup.dtype, microbatches=setup.microbatches, micro_batch_size=micro,
        steps=args.steps, tokens_per_step=tokens,
        tokens_per_s=tokens / end_to_end if tokens and end_to_end > 0 else None,
        end_to_end_s=end_to_end, stages=tuple(stages),
        predicted=predict(plan, setup.microbatches), verify=verify,
        pin_l2={"stages": pin} if pin else None, notes=tuple(notes))
    print(format_report(report), flush=True)
    if args.report:
        report.save(args.report)
        print(f"report written to {args.report}", flush=True)
    if verify is not None and not verify.passed:
        _error(f"verify: the pipeline's output differs from the single-process model by "
               f"{verify.max_abs_error:.3g}, over the tolerance {verify.tolerance:.3g}")
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
