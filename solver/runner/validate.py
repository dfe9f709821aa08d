"""Checks a plan must pass before any rank runs it (no torch needed, no printing).

Every check raises InvalidInputError with a one-line message naming both values; every rank
runs the same checks on the same files, so every rank refuses together (exit code 2) without
having to talk to the others first.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.errors import SpecError

from ..core.errors import InvalidInputError
from ..frontend.sources import LoadedModel, load_model
from ..hardware.footprint import Workload
from ..plan.build import fingerprint
from ..plan.types import Plan, StagePlan
from ..plan.verify import verify_plan

if TYPE_CHECKING:
    from models.numerics import Numerics

__all__ = [
    "HOST_MEMORY_ENV",
    "RUNNABLE_DTYPES",
    "TP_DEGREE",
    "RunSetup",
    "available_ram_bytes",
    "check_checkpoint",
    "check_fingerprint",
    "check_input_ids",
    "check_shared_memory",
    "check_stage_memory",
    "check_torch_device",
    "check_world_size",
    "device_slot",
    "plan_workload",
    "prepare_run",
    "runtime_dtype",
    "shared_memory_need",
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
    numerics: Numerics | None = None
    """How a Hugging Face model computes (None: the zoo's defaults, or a torch module)."""
    checkpoint: str | None = None
    """The checkpoint directory the stages load their weights from (None: seeded weights)."""
    input_ids: str | None = None
    """A file of token ids to feed (checked here: int64, (batch, seq), inside the vocabulary)."""
    generate: int = 0
    """New tokens to generate after the prefill."""


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


def check_checkpoint(plan: Plan, workload: Workload, directory: str,
                     given: bool = True) -> LoadedModel:
    """``directory`` holds the plan's model: its config gives the plan's fingerprint (whatever
    the model is called) and its safetensors files hold every tensor the plan's layers need,
    in the shapes they need (headers only: nothing is loaded). Errors name --checkpoint when
    the user gave it (``given``), else the plan's source."""
    from models.checkpoint import Checkpoint, is_checkpoint_dir

    field = "checkpoint" if given else None
    if not is_checkpoint_dir(directory):
        raise InvalidInputError(f"{directory!r}: not a checkpoint directory (config.json and "
                                "safetensors files)", field=field)
    granularity: Any = plan.model.granularity or "block"
    try:
        loaded = load_model(directory, workload, granularity=granularity,
                            device=plan.hardware.device or "h100-sxm")
    except InvalidInputError as exc:
        raise InvalidInputError(exc.reason, field=field) from None
    found = fingerprint(loaded.graph, name=plan.model.name)
    if found != plan.model.fingerprint:
        raise InvalidInputError(
            f"{directory}: its config gives model fingerprint {found}, the plan has "
            f"{plan.model.fingerprint}: a checkpoint of another model (or the plan was made for "
            "other dimensions)", field=field)
    try:
        Checkpoint.open(directory).check_tensors(n for st in plan.stages for n in st.layers)
    except SpecError as exc:
        raise InvalidInputError(str(exc), field=field) from None
    return loaded


def _has_weights(directory: str) -> bool:
    """Whether a checkpoint directory holds weights of any kind (read or not: a shard index
    without its shards, or .bin files, must say so rather than fall back to seeded weights)."""
    path = Path(directory)
    return path.is_dir() and any(p.suffix in (".safetensors", ".bin", ".pt", ".pth")
                                 or p.name.endswith(".index.json") for p in path.iterdir())


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


HOST_MEMORY_ENV = "CACHEPART_HOST_MEMORY_BYTES"
"""Test hook: the memory ``cachepart run`` checks the ranks' stages against together."""


def shared_memory_need(setup: RunSetup) -> list[int]:
    """Each stage's plan memory in the run's dtype (a bf16 plan run in fp32 needs twice it)."""
    from ..hardware.footprint import DTYPE_BYTES

    ratio = DTYPE_BYTES[setup.dtype] / DTYPE_BYTES[setup.workload.weight_dtype]
    return [int(-(-st.memory_bytes * ratio // 1)) for st in setup.plan.stages]


def check_shared_memory(setup: RunSetup, nproc: int, torch_device: str) -> None:
    """Before launch: the ranks ``cachepart run`` starts share this machine, so their stages
    together must fit it: the available RAM on a CPU, each GPU's memory for the ranks that
    share it. InfeasibleError (exit 3) with the numbers, before any process starts."""
    import torch

    from ..core.errors import InfeasibleError
    from ..core.units import format_bytes

    need = shared_memory_need(setup)[:nproc]
    gpus = torch.cuda.device_count() if torch_device != "cpu" else 0
    if gpus:
        per_gpu: dict[int, list[int]] = {}
        for rank in range(len(need)):
            slot = device_slot(setup.plan, rank, multi_node=False) if setup.plan.hardware.cluster \
                else rank
            per_gpu.setdefault(slot % gpus, []).append(rank)
        for gpu, ranks in per_gpu.items():
            total = sum(need[r] for r in ranks)
            capacity = int(os.environ.get(HOST_MEMORY_ENV) or
                           torch.cuda.get_device_properties(gpu).total_memory)
            if total > capacity:
                raise InfeasibleError(
                    f"GPU {gpu} runs stages {', '.join(map(str, ranks))}: together they need "
                    f"{format_bytes(total)} in {setup.dtype}, more than its "
                    f"{format_bytes(capacity)}")
        return
    total = sum(need)
    capacity = int(os.environ.get(HOST_MEMORY_ENV) or available_ram_bytes())
    if total > capacity:
        raise InfeasibleError(
            f"the {len(need)} ranks share this machine's memory: their stages need "
            f"{format_bytes(total)} together in {setup.dtype} ({' + '.join(map(format_bytes, need))})"
            f", more than the {format_bytes(capacity)} available")


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


def _numerics(loaded: LoadedModel, source: str) -> Numerics | None:
    """A Hugging Face model's numerics, from the config its plan was made from."""
    if loaded.kind not in ("hf-config", "hf-checkpoint") or loaded.spec is None:
        return None
    from models.checkpoint import read_config
    from models.numerics import numerics_from_hf_config

    path = Path(source)
    try:
        if loaded.kind == "hf-checkpoint":
            config = read_config(path)
            path = path / "config.json"
        else:
            config = json.loads(path.read_text(encoding="utf-8"))
        return numerics_from_hf_config(config, loaded.spec.arch, str(path))  # type: ignore[arg-type]
    except (SpecError, OSError, json.JSONDecodeError) as exc:
        raise InvalidInputError(str(exc)) from None


def check_input_ids(path: str, batch: int, vocab: int) -> tuple[int, ...]:
    """The shape of the token ids in ``path``: a torch.save'd int64 tensor (batch, seq) with
    every id inside the vocabulary. torch.load with weights_only: a file runs no code."""
    import torch

    try:
        ids = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InvalidInputError(f"{path!r}: no such file", field="input_ids") from None
    except Exception as exc:  # torch raises many kinds for a file that is not a tensor
        raise InvalidInputError(f"{path!r}: not a torch.save'd tensor ({type(exc).__name__})",
                                field="input_ids") from None
    if not isinstance(ids, torch.Tensor) or ids.dtype != torch.int64 or ids.dim() != 2 \
            or not ids.numel() or ids.layout != torch.strided:
        what = f"{ids.dtype} {str(ids.layout).removeprefix('torch.')} tensor of shape " \
            f"{tuple(ids.shape)}" if isinstance(ids, torch.Tensor) else type(ids).__name__
        raise InvalidInputError(f"{path!r}: expected an int64 tensor (batch, seq), got {what}",
                                field="input_ids")
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or (vocab and high >= vocab):
        raise InvalidInputError(f"{path!r}: token ids must be in 0..{vocab - 1}, got "
                                f"{low}..{high}", field="input_ids")
    if ids.shape[0] != batch:
        raise InvalidInputError(f"{path!r}: a batch of {ids.shape[0]} sequences, the plan's is "
                                f"{batch}", field="input_ids")
    return tuple(ids.shape)


def _check_positions(spec: Any, seq: int, generate: int, field: str | None) -> None:
    positions = getattr(spec, "positions", 0)
    if positions and seq + generate > positions:
        raise InvalidInputError(f"{seq} prompt tokens + {generate} new ones exceed the "
                                f"{positions} learned positions of the model", field=field)


def _check_layers(plan: Plan, spec: Any, numerics: Numerics | None) -> None:
    """Every stage's layers build (on the meta device: nothing is allocated), so a layer the
    runner cannot split that way fails here, not inside a rank."""
    from models.numerics import Numerics
    from models.torch_ref import _meta_layer

    for st in plan.stages:
        for name in st.layers:
            try:
                _meta_layer(spec, name, numerics or Numerics())
            except SpecError as exc:
                raise InvalidInputError(f"plan stages/{st.index}: {exc}") from None


def prepare_run(plan: Plan, world_size: int, *, microbatches: int | None = None,
                dtype: str | None = None, input_shape: tuple[int, ...] | None = None,
                input_dtype: str | None = None, checkpoint: str | None = None,
                input_ids: str | None = None, generate: int = 0) -> RunSetup:
    """Every static check, in order: world size, workload, dtype, fingerprint (the checkpoint's
    when one is given, else the plan's source's), the model kind, the layers, micro-batches,
    input ids, generation."""
    check_world_size(plan, world_size)
    if plan.workload.get("phase") == "train":
        raise InvalidInputError("plan workload.phase: 'train': this runner runs forward passes "
                                "(serving); hand a training plan to its engine: cachepart "
                                "export --to megatron|torchtitan|deepspeed|pipelining|torchgpipe")
    workload = plan_workload(plan)
    if workload.phase != "prefill" and generate < 2:
        raise InvalidInputError(f"plan workload.phase: {workload.phase!r}: a decode plan runs "
                                f"its decode steps with --generate N, N >= 2 (got {generate}: "
                                "the first token comes from the prefill)", field="generate")
    run_dtype = runtime_dtype(workload, dtype)
    source = plan.model.source or ""
    given = checkpoint is not None
    if given:
        # the checkpoint stands for the model: the plan's own source may be elsewhere or gone
        loaded = check_checkpoint(plan, workload, str(checkpoint), given=True)
    else:
        loaded = check_fingerprint(plan, workload, input_shape=input_shape,
                                   input_dtype=input_dtype)
        if loaded.kind == "hf-checkpoint" and _has_weights(source):
            checkpoint = source
            check_checkpoint(plan, workload, source, given=False)
    if checkpoint is not None:
        checkpoint = str(Path(checkpoint).resolve())
        numerics = _numerics(loaded, checkpoint)
    else:
        numerics = _numerics(loaded, source)
    arch: Any = loaded.spec.arch if loaded.spec is not None else None
    if loaded.kind != "torch" and getattr(arch, "kind", None) not in ("decoder", "encoder"):
        raise InvalidInputError(f"plan model {plan.model.name!r}: the runner builds decoders, "
                                f"encoders and torch modules, not "
                                f"{getattr(arch, 'kind', loaded.kind)!r}")
    quant = getattr(arch, "quantization", None)
    if quant is not None:
        raise InvalidInputError(f"plan model {plan.model.name!r} is quantized ({quant.label()}): "
                                "a quantized model is planned, not run (the runner computes in "
                                "fp32, bf16 or fp16)")
    if loaded.kind != "torch":
        _check_layers(plan, arch, numerics)
    # each stage against the model it names: memory and times (before any process starts)
    verify_plan(plan, "plan")
    if generate and (loaded.kind == "torch" or getattr(arch, "kind", None) != "decoder"
                     or not getattr(arch, "vocab", 0) or not getattr(arch, "lm_head", False)):
        raise InvalidInputError(f"plan model {plan.model.name!r}: generation needs a decoder "
                                "with an LM head", field="generate")
    if microbatches is None:
        microbatches = -(-workload.batch // workload.sequences)
        if loaded.kind == "torch" and input_shape is not None:
            microbatches = max(1, input_shape[0] // workload.sequences)
    shape, in_dtype = _input(loaded.kind, workload, input_shape, input_dtype, microbatches)
    if input_ids is not None:
        if loaded.kind == "torch":
            raise InvalidInputError("token ids feed a transformer plan; a torch module plan takes "
                                    "its --input-shape", field="input_ids")
        shape = check_input_ids(input_ids, workload.batch, int(getattr(arch, "vocab", 0)))
    elif workload.phase == "decode":
        # a decode plan is costed at context seq_len: prompt + new tokens reach it
        shape = (workload.batch, max(1, workload.seq_len - generate))
    if loaded.kind != "torch":
        field = "generate" if generate else "input_ids" if input_ids is not None else None
        _check_positions(arch, shape[1] + getattr(numerics, "position_offset", 0), generate,
                         field)
    return RunSetup(plan, loaded, workload, run_dtype, microbatches, shape, in_dtype,
                    numerics=numerics, checkpoint=checkpoint, input_ids=input_ids,
                    generate=generate)
