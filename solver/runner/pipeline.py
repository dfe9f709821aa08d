"""One rank's part of a planned pipeline, run with torch.distributed.pipelining.

Each rank builds only its own stage (the plan's layer names for stage == rank), wraps it in a
``PipelineStage`` and drives micro-batches through ``ScheduleGPipe`` forward-only (no loss
function: the schedule skips backward). Timing wraps the stage's module, so a stage's
forward time is its compute alone; transfers and waiting show in the end-to-end time.
No printing here: __main__ reports.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.pipelining import PipelineStage, ScheduleGPipe

from models.torch_modules import build_module_chain, build_module_reference
from models.torch_ref import build_chain, layer_names

from ..core.errors import InvalidInputError
from ..plan.types import StagePlan
from .report import Verify
from .validate import RunSetup, available_ram_bytes

__all__ = [
    "DEVICE_MEMORY_ENV",
    "FAIL_RANK_ENV",
    "TORCH_DTYPES",
    "StageMeasure",
    "TimedModule",
    "build_reference",
    "build_stage_module",
    "compare_outputs",
    "device_memory",
    "make_input",
    "peak_memory",
    "run_stage",
    "select_device",
]

FAIL_RANK_ENV = "CACHEPART_FAIL_RANK"
"""Test hook: the rank named here raises at the start of its stage."""

DEVICE_MEMORY_ENV = "CACHEPART_DEVICE_MEMORY_BYTES"
"""Test hook: the device memory every rank checks its stage against."""

TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# Relative tolerances for the single-process comparison: the pipeline runs the same kernels on
# smaller batches, so only the reduction order inside a matmul may differ.
_RTOL = {"fp32": 1e-5, "bf16": 3e-2, "fp16": 5e-3}


def select_device(choice: str, local_rank: int) -> torch.device:
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise InvalidInputError("cuda: no CUDA device is visible", field="torch_device")
        index = local_rank % torch.cuda.device_count()
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device("cpu")


def device_memory(device: torch.device) -> tuple[int, str]:
    """(bytes, label) a stage may use: the GPU's total memory, or the RAM available now
    (``CACHEPART_DEVICE_MEMORY_BYTES`` overrides both: a test hook)."""
    if os.environ.get(DEVICE_MEMORY_ENV):
        return int(os.environ[DEVICE_MEMORY_ENV]), f"{device} ({DEVICE_MEMORY_ENV})"
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return int(props.total_memory), f"{props.name} ({device})"
    return available_ram_bytes(), "the available RAM (cpu)"


def peak_memory(device: torch.device) -> tuple[int, str]:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "cuda_max_memory_allocated"
    # ru_maxrss is in KiB on Linux: the whole process, torch's own libraries included
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, "cpu_peak_rss"


class TimedModule(nn.Module):
    """Records the wall time of every forward: CUDA events on a GPU (no synchronisation in the
    middle of the pipeline), perf_counter on a CPU."""

    def __init__(self, inner: nn.Module, device: torch.device) -> None:
        super().__init__()
        self.inner = inner
        self.on_cuda = device.type == "cuda"
        self._records: list[Any] = []

    def forward(self, *args: Any) -> Any:
        if self.on_cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = self.inner(*args)
            end.record()
            self._records.append((start, end))
            return out
        t0 = time.perf_counter()
        out = self.inner(*args)
        self._records.append(time.perf_counter() - t0)
        return out

    def reset(self) -> None:
        self._records.clear()

    def times(self) -> list[float]:
        if not self.on_cuda:
            return list(self._records)
        out = []
        for start, end in self._records:
            end.synchronize()
            out.append(start.elapsed_time(end) / 1000.0)
        return out


def _spec(setup: RunSetup) -> Any:
    """The decoder's TransformerSpec (prepare_run admitted only decoders and torch modules)."""
    if setup.loaded.spec is None:
        raise InvalidInputError(f"plan model {setup.plan.model.name!r}: no architecture to build")
    return setup.loaded.spec.arch


def build_stage_module(setup: RunSetup, layers: tuple[str, ...], device: torch.device,
                       seed: int) -> nn.Module:
    dtype = TORCH_DTYPES[setup.dtype]
    source = setup.plan.model.source or ""
    if setup.loaded.kind == "torch":
        return build_module_chain(source, layers, device=device, dtype=dtype, seed=seed)
    return build_chain(_spec(setup), layers, device=device, dtype=dtype, seed=seed)


def build_reference(setup: RunSetup, device: torch.device, seed: int) -> nn.Module:
    """The whole model in one process, with the weights every stage drew."""
    dtype = TORCH_DTYPES[setup.dtype]
    source = setup.plan.model.source or ""
    if setup.loaded.kind == "torch":
        return build_module_reference(source, device=device, dtype=dtype, seed=seed)
    spec = _spec(setup)
    names = layer_names(spec, setup.plan.model.granularity or "block")
    return build_chain(spec, names, device=device, dtype=dtype, seed=seed)


def _vocab_of(setup: RunSetup) -> int:
    if setup.loaded.kind == "torch":
        from models.torch_import import load_module_from_path

        embeddings = [m for m in load_module_from_path(setup.plan.model.source or "").modules()
                      if isinstance(m, nn.Embedding)]
        return embeddings[0].num_embeddings if embeddings else 2
    return int(getattr(_spec(setup), "vocab", 0))


def make_input(setup: RunSetup, device: torch.device, seed: int) -> torch.Tensor:
    """The whole batch's input, the same in every process that draws it."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    shape = setup.input_shape
    integer = setup.input_dtype in ("long", "int64", "int32")
    if setup.loaded.kind != "torch":
        vocab = _vocab_of(setup)
        if vocab:
            return torch.randint(0, vocab, shape, generator=gen).to(device)
        hidden = int(_spec(setup).hidden)
        x = torch.randn((*shape, hidden), generator=gen)
        return x.to(device=device, dtype=TORCH_DTYPES[setup.dtype])
    if integer:
        dtype = torch.int32 if setup.input_dtype == "int32" else torch.int64
        return torch.randint(0, _vocab_of(setup), shape, generator=gen).to(device=device,
                                                                           dtype=dtype)
    return torch.randn(shape, generator=gen).to(device=device, dtype=TORCH_DTYPES[setup.dtype])


@dataclass
class StageMeasure:
    """What one rank measured, gathered to rank 0."""

    rank: int
    index: int
    layers: tuple[str, ...]
    device: str
    forward_times_s: list[float] = field(default_factory=list)
    step_times_s: list[float] = field(default_factory=list)
    peak_memory_bytes: int = 0
    peak_memory_kind: str = ""
    output: Any = None
    """The last stage's merged output of the last step (on the CPU), for --verify."""


def run_stage(setup: RunSetup, stage_plan: StagePlan, module: nn.Module, *, rank: int,
              world_size: int, device: torch.device, steps: int, warmup: int,
              inputs: torch.Tensor | None, keep_output: bool) -> StageMeasure:
    """Drive ``steps`` timed (after ``warmup`` untimed) GPipe forward steps through this rank's
    stage; the collective barrier before each step lines the ranks' clocks up."""
    if os.environ.get(FAIL_RANK_ENV) == str(rank):
        raise RuntimeError(f"rank {rank} failing at the start of stage {stage_plan.index} "
                           f"({FAIL_RANK_ENV}={rank})")
    timed = TimedModule(module, device)
    stage = PipelineStage(timed, stage_plan.index, world_size, device)
    schedule = ScheduleGPipe(stage, setup.microbatches)
    measure = StageMeasure(rank, stage_plan.index, stage_plan.layers, str(device))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    output = None
    with torch.no_grad():
        for step in range(warmup + steps):
            if step == warmup:
                timed.reset()
            dist.barrier()
            t0 = time.perf_counter()
            output = schedule.step(inputs) if stage.is_first else schedule.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if step >= warmup:
                measure.step_times_s.append(time.perf_counter() - t0)
    measure.forward_times_s = timed.times()
    measure.peak_memory_bytes, measure.peak_memory_kind = peak_memory(device)
    if keep_output and stage.is_last and output is not None:
        measure.output = _to_cpu(output)
    return measure


def _to_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, tuple | list):
        return type(value)(_to_cpu(v) for v in value)
    return value


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, tuple | list):
        return [t for v in value for t in _tensors(v)]
    return []


def compare_outputs(pipeline: Any, reference: Any, dtype: str) -> Verify:
    """max |pipeline - reference| against rtol x max |reference| (rtol by dtype)."""
    got, want = _tensors(pipeline), _tensors(_to_cpu(reference))
    if len(got) != len(want) or any(g.shape != w.shape for g, w in zip(got, want, strict=False)):
        shapes = [tuple(t.shape) for t in got], [tuple(t.shape) for t in want]
        raise RuntimeError(f"verify: pipeline output shapes {shapes[0]} differ from the "
                           f"single-process reference's {shapes[1]}")
    error = max((float((g.float() - w.float()).abs().max()) for g, w in zip(got, want, strict=True)
                 if g.numel()), default=0.0)
    scale = max((float(w.float().abs().max()) for w in want if w.numel()), default=0.0)
    tolerance = _RTOL[dtype] * scale
    return Verify(max_abs_error=error, tolerance=tolerance, passed=error <= tolerance,
                  reference_max_abs=scale)
