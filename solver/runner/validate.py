"""Checks a plan must pass before any rank runs it (no torch needed, no printing).

Every check raises InvalidInputError with a one-line message naming both values; every rank
runs the same checks on the same files, so every rank refuses together (exit code 2) without
having to talk to the others first.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ..core.errors import InvalidInputError
from ..frontend.sources import LoadedModel, load_model
from ..hardware.footprint import Workload
from ..plan.build import fingerprint
from ..plan.types import Plan, StagePlan

__all__ = [
    "RUNNABLE_DTYPES",
    "TP_DEGREE",
    "RunSetup",
    "available_ram_bytes",
    "check_fingerprint",
    "check_stage_memory",
    "check_torch_device",
    "check_world_size",
    "device_slot",
    "plan_workload",
    "prepare_run",
    "runtime_dtype",
]

TP_DEGREE = 1
"""Tensor-parallel ranks per stage. Plans have no TP yet; world size = stages x TP_DEGREE."""

RUNNABLE_DTYPES = ("fp32", "bf16", "fp16")
"""Dtypes the torch reference runs (plans may also size int8 / int4 / fp8 weights)."""


@dataclass(frozen=True)
class RunSetup:
    """What the runner needs from a validated plan."""

    plan: Plan
    loaded: LoadedModel
    """The model rebuilt from plan.model.source (its fingerprint matched)."""
    workload: Workload
    dtype: str
    """fp32, bf16 or fp16."""
    microbatches: int
    input_shape: tuple[int, ...]
    """The whole batch's input: (batch, seq) token ids, or the torch module's sample input."""
    input_dtype: str | None


def plan_workload(plan: Plan) -> Workload:
    """The plan's workload as a Workload (the fields the fingerprint depends on)."""
    w = plan.workload
    if not w:
        raise InvalidInputError("plan workload: empty (a chain JSON's plan has no model to run)")
    fields = ("batch", "seq_len", "phase", "micro_batch", "weight_dtype", "activation_dtype",
              "attention")
    return Workload(**{k: w[k] for k in fields if k in w})


def runtime_dtype(workload: Workload, override: str | None = None) -> str:
    """The dtype the stages run in: ``override``, else the plan's (weights and activations
    agree)."""
    if override is not None:
        if override not in RUNNABLE_DTYPES:
            raise InvalidInputError(f"expected one of {', '.join(RUNNABLE_DTYPES)}, got "
                                    f"{override!r}", field="dtype")
        return override
    for name in ("weight_dtype", "activation_dtype"):
        value = getattr(workload, name)
        if value not in RUNNABLE_DTYPES:
            raise InvalidInputError(f"plan workload.{name}: {value!r} is not runnable by the "
                                    f"torch reference (runs {', '.join(RUNNABLE_DTYPES)}); "
                                    "give a run dtype to run it in one of those", field="dtype")
    if workload.weight_dtype != workload.activation_dtype:
        raise InvalidInputError(f"plan workload: weight_dtype {workload.weight_dtype!r} and "
                                f"activation_dtype {workload.activation_dtype!r} differ; give "
                                "a run dtype to run both in one", field="dtype")
    return workload.activation_dtype


def device_slot(plan: Plan, stage: int, *, multi_node: bool) -> int:
    """The stage's device on the machine that runs it. A cluster plan names the rank: run on
    one machine, that is the slot; across nodes (numbered one after another) it is the rank
    less the node's first rank."""
    st = plan.stages[stage]
    ranks = plan.hardware.rank_kinds()
    if not ranks:
        return stage
    if not multi_node:
        return st.device_rank
    node = ranks[st.device_rank][1]
    return st.device_rank - next(r for r, (_, g) in enumerate(ranks) if g == node)


def check_world_size(plan: Plan, world_size: int) -> None:
    wide = [st.index for st in plan.stages if st.tp_degree != TP_DEGREE]
    if wide:
        st = plan.stages[wide[0]]
        raise InvalidInputError(
            f"stages/{st.index}/tp_degree: {st.tp_degree}, but the runner executes "
            f"tensor-parallel degree {TP_DEGREE} only (plan it without tensor parallelism to run it)")
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    if plan.hardware.cluster and local != world_size:
        # torchrun numbers ranks node by node: process j runs on node j // local, so each stage
        # must be on that node of the plan's cluster, or it would run on a device it was not
        # planned for.
        for st in plan.stages:
            if st.node is not None and st.node != st.index // max(1, local):
                raise InvalidInputError(
                    f"stages/{st.index}/node: {st.node}, but this launch runs stage {st.index} "
                    f"on node {st.index // max(1, local)} ({local} processes a node); launch "
                    "one process a stage with each node's stages on it", field="world_size")
    expected = len(plan.stages) * TP_DEGREE
    if world_size != expected:
        raise InvalidInputError(
            f"world size: {world_size} processes, but the plan has {len(plan.stages)} stages x "
            f"TP degree {TP_DEGREE} = {expected} (start {expected} processes, one per stage)")


def check_fingerprint(plan: Plan, workload: Workload, *, input_shape: tuple[int, ...] | None = None,
                      input_dtype: str | None = None) -> LoadedModel:
    """Rebuild the plan's model from its source and compare fingerprints."""
    source = plan.model.source
    if not source:
        raise InvalidInputError("plan model.source: missing (the plan predates sources; re-solve "
                                "it to run it)")
    granularity: Any = plan.model.granularity or "block"
    loaded = load_model(source, workload, granularity=granularity,
                        device=plan.hardware.device or "h100-sxm", input_shape=input_shape,
                        input_dtype=input_dtype)
    if loaded.kind == "chain":
        # a chain JSON holds sizes and times, no architecture: nothing to build
        raise InvalidInputError(f"plan model.source {source!r}: a chain JSON has no "
                                "architecture to run")
    found = fingerprint(loaded.graph)
    if found != plan.model.fingerprint:
        raise InvalidInputError(
            f"model fingerprint: the plan has {plan.model.fingerprint}, but {source!r} rebuilt "
            f"with the plan's workload and device {plan.hardware.device} gives {found} (the model "
            "changed since the plan was made: re-solve it)")
    return loaded


def check_torch_device(choice: str) -> None:
    """'cuda' needs a visible CUDA device (imports torch only then)."""
    if choice == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise InvalidInputError("cuda: no CUDA device is visible", field="torch_device")


def available_ram_bytes() -> int:
    """MemAvailable from /proc/meminfo (Linux); the free pages elsewhere."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def check_stage_memory(stage: StagePlan, device_bytes: int, device_label: str) -> None:
    if stage.memory_bytes > device_bytes:
        raise InvalidInputError(
            f"stage {stage.index} memory: the plan gives {stage.memory_bytes} bytes, more than "
            f"the {device_bytes} bytes of {device_label}")


def _input(setup_kind: str, workload: Workload, input_shape: tuple[int, ...] | None,
           input_dtype: str | None, microbatches: int) -> tuple[tuple[int, ...], str | None]:
    if setup_kind == "torch":
        if input_shape is None:
            raise InvalidInputError("the plan's model is a torch module factory; give the input "
                                    "shape it was planned with (for example 8,128)",
                                    field="input_shape")
        batch = input_shape[0]
    else:
        input_shape = (workload.batch, workload.seq_len)
        batch = workload.batch
    if microbatches < 1 or batch % microbatches:
        raise InvalidInputError(f"{microbatches} does not divide the batch of {batch} sequences",
                                field="microbatches")
    return input_shape, input_dtype


def prepare_run(plan: Plan, world_size: int, *, microbatches: int | None = None,
                dtype: str | None = None, input_shape: tuple[int, ...] | None = None,
                input_dtype: str | None = None) -> RunSetup:
    """Every static check, in order: world size, workload, dtype, fingerprint, micro-batches."""
    check_world_size(plan, world_size)
    workload = plan_workload(plan)
    if workload.phase != "prefill":
        raise InvalidInputError(f"plan workload.phase: {workload.phase!r}; the runner runs "
                                "prefill (forward) passes only")
    run_dtype = runtime_dtype(workload, dtype)
    loaded = check_fingerprint(plan, workload, input_shape=input_shape, input_dtype=input_dtype)
    if loaded.kind != "torch":
        arch: Any = loaded.spec.arch if loaded.spec is not None else None
        if getattr(arch, "kind", None) != "decoder":
            raise InvalidInputError(f"plan model {plan.model.name!r}: the runner builds decoders "
                                    f"and torch modules, not {getattr(arch, 'kind', loaded.kind)!r}")
    if microbatches is None:
        microbatches = -(-workload.batch // workload.sequences)
        if loaded.kind == "torch" and input_shape is not None:
            microbatches = max(1, input_shape[0] // workload.sequences)
    shape, in_dtype = _input(loaded.kind, workload, input_shape, input_dtype, microbatches)
    return RunSetup(plan, loaded, workload, run_dtype, microbatches, shape, in_dtype)
