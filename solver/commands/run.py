"""``cachepart run plan.json``: execute a plan on this machine, one process per stage.

It checks the plan here first (schema, world size, the model's fingerprint, dtype), then
launches ``python -m torch.distributed.run --standalone --nproc-per-node N -m solver.runner
plan.json ...`` (N: the plan's stage count) and returns its exit code.

Several nodes: start torchrun yourself on every node. For 2 nodes x 8 H100 (a 16-stage plan),
on each node:

    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:PORT \\
        -m solver.runner plan.json

with HOST:PORT a reachable address of the first node (any free port, the same on both).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from ..errors import CachepartError, InvalidInputError
from ..plan import load_plan
from ..units import parse_shape

__all__ = ["check_options", "check_torch_device", "launch_command", "register"]

EXIT_BAD_INPUT = 2


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "run", help="run a plan with torch.distributed on this machine (one process per stage)",
        description="Launch the pipeline runner under torchrun on this machine: one process per "
                    "stage, micro-batches forward-only, measured against the plan's predictions.")
    p.add_argument("plan", metavar="PLAN", help="plan JSON file")
    p.add_argument("--nproc", type=int, default=None, metavar="N",
                   help="processes (default: the plan's stage count)")
    p.add_argument("--microbatches", type=int, default=None, metavar="M",
                   help="micro-batches per step (default: batch / the plan's micro_batch)")
    p.add_argument("--steps", type=int, default=None, metavar="S", help="timed steps")
    p.add_argument("--verify", action="store_true",
                   help="compare with the whole model run in one process")
    p.add_argument("--report", metavar="OUT", help="write the report JSON here")
    p.add_argument("--pin-l2", action="store_true",
                   help="NVIDIA GPUs: pin each stage's weights in the persisting L2")
    p.add_argument("--seed", type=int, default=None, help="weights and input seed")
    p.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default=None,
                   help="run in this dtype instead of the plan's")
    p.add_argument("--torch-device", choices=["auto", "cpu", "cuda"], default=None,
                   help="auto (default): CUDA with NCCL where available, else CPU with gloo")
    p.add_argument("--input-shape", default=None, metavar="B,S",
                   help="a torch module plan: the input shape it was planned with")
    p.add_argument("--input-dtype", default=None,
                   choices=["float32", "bfloat16", "float16", "long", "int32"],
                   help="a torch module plan: the input dtype it was planned with")
    p.set_defaults(handler=run)


def _runner_args(args: argparse.Namespace) -> list[str]:
    out = [str(args.plan)]
    for flag, value in (("--microbatches", args.microbatches), ("--steps", args.steps),
                        ("--report", args.report), ("--seed", args.seed),
                        ("--dtype", args.dtype), ("--torch-device", args.torch_device),
                        ("--input-shape", args.input_shape),
                        ("--input-dtype", args.input_dtype)):
        if value is not None:
            out += [flag, str(value)]
    out += [flag for flag, on in (("--verify", args.verify), ("--pin-l2", args.pin_l2)) if on]
    return out


def launch_command(nproc: int, runner_args: list[str]) -> list[str]:
    """The torchrun command line for one machine."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            "--nproc-per-node", str(nproc), "-m", "solver.runner", *runner_args]


def check_options(args: argparse.Namespace) -> None:
    """The option checks that need no plan and no torch (the runner makes them too, but only
    after torchrun started every process): InvalidInputError naming the option and value."""
    from ..runner.__main__ import check_output_path, check_run_options

    if args.nproc is not None and args.nproc < 1:
        raise InvalidInputError(f"--nproc: must be >= 1, got {args.nproc}")
    check_run_options(steps=args.steps, microbatches=args.microbatches)
    if args.report is not None:
        check_output_path(args.report, "--report")


def check_torch_device(choice: str | None) -> None:
    """--torch-device cuda needs a visible CUDA device (imports torch only then)."""
    if choice == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise InvalidInputError("--torch-device cuda: no CUDA device is visible")


def run(args: argparse.Namespace) -> int:
    from ..runner.validate import prepare_run

    try:
        if importlib.util.find_spec("torch") is None:
            raise InvalidInputError("run needs PyTorch: pip install 'cachepart[torch]'")
        check_options(args)
        plan = load_plan(args.plan)
        nproc = args.nproc if args.nproc is not None else len(plan.stages)
        # the checks every rank will make, made once here: a refusal is one line, exit 2
        prepare_run(plan, nproc, microbatches=args.microbatches, dtype=args.dtype,
                    input_shape=parse_shape(args.input_shape), input_dtype=args.input_dtype)
        check_torch_device(args.torch_device)
    except CachepartError as exc:
        print(f"cachepart: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    env = dict(os.environ)
    # the workers import solver and models from wherever this cachepart lives
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    code = subprocess.call(launch_command(nproc, _runner_args(args)), env=env)
    return code if code >= 0 else 128 - code  # killed by a signal: the shell's convention
