"""``cachepart export PLAN --to TARGET``: a plan in an engine's own format (environment,
flags, config)."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from .exit_codes import ExitCode

if TYPE_CHECKING:
    from ..plan.export import Export

__all__ = ["TARGET_NAMES", "register", "report", "run"]

# the targets' names, without importing the plan package at start-up (solver.plan.TARGETS)
TARGET_NAMES = ("vllm", "sglang", "trtllm", "megatron", "torchtitan", "deepspeed", "pipelining",
                "accelerate", "torchgpipe")


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "export", help="write a plan in an engine's format: env vars, flags, config",
        description="Write a plan's pipeline split in the format an engine reads it from: vLLM "
                    "and SGLang (an environment variable and flags), TensorRT-LLM (LLM API "
                    "arguments), Megatron-Core (--pipeline-model-parallel-layout), torchtitan "
                    "(module_fqns_per_model_part), DeepSpeed (PipelineModule parts), torch "
                    "pipelining (split_spec), accelerate (device_map), torchgpipe (balance). "
                    "A split the engine cannot take (a stage of the embedding or head alone "
                    "for vLLM, SGLang and TensorRT-LLM, parts of blocks, different TP sizes) "
                    "is refused with the `solve --engine` that gives one it can.")
    p.add_argument("plan", metavar="PLAN", help="plan JSON file (cachepart solve -o)")
    p.add_argument("--to", required=True, choices=TARGET_NAMES, metavar="TARGET",
                   help=f"the engine: {', '.join(TARGET_NAMES)}")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object {target, env, args, config, notes}")
    p.set_defaults(handler=run)
    return p


def report(export: Export) -> str:
    """The text form: env lines ``VAR=value``, the flags as one command-line fragment, the
    config as JSON, then the notes."""
    lines = [f"{key}={value}" for key, value in export.env.items()]
    if export.args:
        lines.append(export.command_line())
    if export.config:
        lines.append(json.dumps(export.config, indent=2))
    lines += [f"note: {note}" for note in export.notes]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ..plan import export_plan, load_plan, verify_plan

    plan = load_plan(args.plan)
    verify_plan(plan, args.plan)
    export = export_plan(plan, args.to)
    print(json.dumps(export.to_dict(), indent=2) if args.json else report(export))
    return ExitCode.OK
