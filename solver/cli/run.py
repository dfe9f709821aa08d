"""``cachepart run plan.json``: execute a plan on this machine, one process per stage.

It checks the plan here first (schema, world size, the model's fingerprint, dtype), then
launches ``python -m torch.distributed.run --standalone --nproc-per-node N -m solver.runner
plan.json ...`` (N: the plan's stage count; ``launch_command``) and returns its exit code. The
runner's options are defined once, here (``add_run_options``), for both this command and the
runner itself.

torchrun runs through solver/runner/launch.py (the same arguments, without torchrun's banner,
log lines and traceback: each failed rank says why in one line) under
solver/runner/supervise.py: Ctrl-C stops every rank, leaves no process behind and is one line.

Several nodes: start torchrun yourself on every node. For 2 nodes x 8 H100 (a 16-stage plan),
on each node:

    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:PORT \\
        -m solver.runner plan.json

with HOST:PORT a reachable address of the first node (any free port, the same on both).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import sys
from pathlib import Path

from ..core.errors import InvalidInputError
from ..core.files import check_output_path
from ..core.units import parse_shape
from ..runner.launch import launcher_command
from ..runner.options import RunOptions
from ..runner.supervise import run_supervised

__all__ = ["add_run_options", "launch_command", "register", "run_options", "runner_argv"]

_RUNNABLE = ("fp32", "bf16", "fp16")
_DEFAULTS = RunOptions(plan="")


def add_run_options(p: argparse.ArgumentParser) -> None:
    """The runner's options, for ``cachepart run`` and ``python -m solver.runner`` alike."""
    d = _DEFAULTS
    p.add_argument("plan", metavar="PLAN", help="plan JSON file")
    p.add_argument("--microbatches", type=int, default=d.microbatches, metavar="M",
                   help="micro-batches per step (default: batch / the plan's micro_batch)")
    p.add_argument("--steps", type=int, default=d.steps, metavar="S",
                   help=f"timed steps (default {d.steps})")
    p.add_argument("--warmup", type=int, default=d.warmup, metavar="W",
                   help=f"untimed steps first (default {d.warmup})")
    p.add_argument("--verify", action="store_true",
                   help="rank 0 also runs the whole model in one process and compares outputs")
    p.add_argument("--report", metavar="OUT", help="write the report JSON here (rank 0)")
    p.add_argument("--pin-l2", action="store_true",
                   help="NVIDIA GPUs: keep each stage's weights in the persisting L2 set-aside")
    p.add_argument("--seed", type=int, default=d.seed,
                   help=f"weights and input seed (default {d.seed})")
    p.add_argument("--dtype", choices=_RUNNABLE, default=d.dtype,
                   help="run in this dtype instead of the plan's")
    p.add_argument("--torch-device", choices=["auto", "cpu", "cuda"], default=d.torch_device,
                   help="auto (default): CUDA with NCCL where available, else CPU with gloo")
    p.add_argument("--timeout", type=float, default=d.timeout, metavar="SEC",
                   help="process-group timeout: a transfer or collective waiting longer fails "
                        f"(default {d.timeout:g})")
    p.add_argument("--input-shape", default=None, metavar="B,S",
                   help="a torch module plan: the batch input shape it was planned with")
    p.add_argument("--input-dtype", default=None,
                   choices=["float32", "bfloat16", "float16", "long", "int32"],
                   help="a torch module plan: the input dtype it was planned with")
    p.add_argument("--checkpoint", default=d.checkpoint, metavar="DIR",
                   help="a Hugging Face checkpoint directory (config.json + safetensors) of the "
                        "plan's model: each rank loads only its stage's tensors (default: the "
                        "plan's source when it is such a directory, else seeded weights)")
    p.add_argument("--input-ids", default=d.input_ids, metavar="FILE",
                   help="token ids to feed: a torch.save'd int64 tensor (batch, seq)")
    p.add_argument("--save-output", default=d.save_output, metavar="FILE",
                   help="write the pipeline's final output (logits, batch x seq x vocab) with "
                        "torch.save (the last stage writes it)")
    p.add_argument("--generate", type=int, default=d.generate, metavar="N",
                   help="after the prefill, generate N tokens greedily through the stages, each "
                        "keeping its layers' KV cache; the report gives TTFT and TPOT")


def run_options(args: argparse.Namespace) -> RunOptions:
    """The RunOptions the parsed options give (checked by RunOptions itself)."""
    return RunOptions(plan=args.plan, microbatches=args.microbatches, steps=args.steps,
                      warmup=args.warmup, verify=args.verify, report=args.report,
                      pin_l2=args.pin_l2, seed=args.seed, dtype=args.dtype,
                      torch_device=args.torch_device, timeout=args.timeout,
                      input_shape=parse_shape(args.input_shape), input_dtype=args.input_dtype,
                      checkpoint=args.checkpoint, input_ids=args.input_ids,
                      save_output=args.save_output, generate=args.generate)


def runner_argv(options: RunOptions) -> list[str]:
    """The runner's command line for ``options``: the values that differ from the defaults."""
    out = [options.plan]
    for f in dataclasses.fields(RunOptions):
        value = getattr(options, f.name)
        if f.name == "plan" or value == getattr(_DEFAULTS, f.name):
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            out.append(flag)
        elif f.name == "input_shape":
            out += [flag, ",".join(map(str, value))]
        else:
            out += [flag, str(value)]
    return out


def launch_command(nproc: int, runner_args: list[str]) -> list[str]:
    """The torchrun command line for one machine."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            "--nproc-per-node", str(nproc), "-m", "solver.runner", *runner_args]


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "run", help="run a plan with torch.distributed on this machine (one process per stage)",
        description="Launch the pipeline runner under torchrun on this machine: one process per "
                    "stage, micro-batches forward-only, measured against the plan's predictions.")
    add_run_options(p)
    p.add_argument("--nproc", type=int, default=None, metavar="N",
                   help="processes (default: the plan's stage count)")
    p.set_defaults(handler=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..plan import load_plan
    from ..runner.validate import check_shared_memory, check_torch_device, prepare_run

    if importlib.util.find_spec("torch") is None:
        raise InvalidInputError("run needs PyTorch: pip install 'cachepart[torch]'")
    # the checks every rank will make, made once here: a refusal is one line, exit 2
    if args.nproc is not None and args.nproc < 1:
        raise InvalidInputError(f"must be >= 1, got {args.nproc}", field="nproc")
    options = run_options(args)
    for path, field in ((options.report, "report"), (options.save_output, "save_output")):
        if path is not None:
            check_output_path(path, field)
    plan = load_plan(options.plan)
    nproc = args.nproc if args.nproc is not None else len(plan.stages)
    setup = prepare_run(plan, nproc, microbatches=options.microbatches, dtype=options.dtype,
                        input_shape=options.input_shape, input_dtype=options.input_dtype,
                        checkpoint=options.checkpoint, input_ids=options.input_ids,
                        generate=options.generate)
    check_torch_device(options.torch_device)
    check_shared_memory(setup, nproc, options.torch_device)
    env = dict(os.environ)
    # the workers import solver and models from wherever this cachepart lives
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    if nproc > 1:  # torchrun's own default, set here so that it prints no banner about it
        env.setdefault("OMP_NUM_THREADS", "1")
    command = launcher_command(launch_command(nproc, runner_argv(options)))
    return run_supervised(command, env, sys.stderr)  # killed by signal N: the shell's 128 + N
