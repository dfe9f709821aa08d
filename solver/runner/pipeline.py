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
from models.torch_ref import build_chain, greedy_generate, layer_names, output_arity

from ..core.errors import InvalidInputError
from ..plan.types import StagePlan
from .report import Verify
from .validate import RunSetup, available_ram_bytes

__all__ = [
    "DEVICE_MEMORY_ENV",
    "FAIL_RANK_ENV",
    "TORCH_DTYPES",
    "GenerateMeasure",
    "Reference",
    "StageMeasure",
    "TimedModule",
    "build_reference",
    "build_stage_module",
    "compare_outputs",
    "device_memory",
    "make_input",
    "peak_memory",
    "reference_output",
    "reference_tokens",
    "run_generation",
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
# Against transformers the kernels differ too (its attention and norms, not ours): in fp32,
# max |error| <= 1e-4 x max(1, max |logits|).
_RTOL_TRANSFORMERS = {"fp32": 1e-4, "bf16": 3e-2, "fp16": 5e-3}


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
    """The model's TransformerSpec (prepare_run admitted only transformers and torch modules)."""
    if setup.loaded.spec is None:
        raise InvalidInputError(f"plan model {setup.plan.model.name!r}: no architecture to build")
    return setup.loaded.spec.arch


def _weights(setup: RunSetup) -> Any:
    """The checkpoint the layers load from (headers read now, tensors per layer), or None."""
    if setup.checkpoint is None:
        return None
    from models.checkpoint import Checkpoint

    return Checkpoint.open(setup.checkpoint)


def build_stage_module(setup: RunSetup, layers: tuple[str, ...], device: torch.device,
                       seed: int) -> nn.Module:
    dtype = TORCH_DTYPES[setup.dtype]
    source = setup.plan.model.source or ""
    if setup.loaded.kind == "torch":
        return build_module_chain(source, layers, device=device, dtype=dtype, seed=seed)
    return build_chain(_spec(setup), layers, device=device, dtype=dtype, seed=seed,
                       numerics=setup.numerics, weights=_weights(setup))


@dataclass(frozen=True)
class Reference:
    """The single-process model a run is checked against, and what it is."""

    model: Any
    label: str
    transformers: bool = False


def build_reference(setup: RunSetup, device: torch.device, seed: int) -> Reference:
    """The whole model in one process: transformers' own module for a checkpoint where
    transformers is installed, else the chain of every layer with the weights the stages use."""
    dtype = TORCH_DTYPES[setup.dtype]
    source = setup.plan.model.source or ""
    if setup.loaded.kind == "torch":
        module = build_module_reference(source, device=device, dtype=dtype, seed=seed)
        return Reference(module, "the module's own forward, one process, the same seeded weights")
    note = ""
    if setup.checkpoint is not None:
        try:
            import transformers
        except ImportError:
            note = " (transformers is not installed)"
        else:
            found = _transformers_model(transformers, setup, dtype)
            if isinstance(found, str):
                note = f" (transformers cannot load it: {found})"
            else:
                model = found.to(device).eval()
                return Reference(model, f"transformers {transformers.__version__} "
                                        f"{type(model).__name__}, one process", transformers=True)
    spec = _spec(setup)
    names = layer_names(spec, setup.plan.model.granularity or "block")
    chain = build_chain(spec, names, device=device, dtype=dtype, seed=seed,
                        numerics=setup.numerics, weights=_weights(setup))
    what = "the checkpoint's weights" if setup.checkpoint else "the same seeded weights"
    return Reference(chain, f"every layer in one process, {what}{note}")


def _transformers_model(transformers: Any, setup: RunSetup, dtype: torch.dtype) -> Any:
    """transformers' own model of the checkpoint, built in ``dtype`` (buffers such as rotary
    frequencies and Gemma's embedding scale are made in it, not cast afterwards), or why not."""
    transformers.utils.logging.disable_progress_bar()  # a worker's output is the report
    cls = transformers.AutoModel if _spec(setup).kind == "encoder" else \
        transformers.AutoModelForCausalLM
    major = int(str(transformers.__version__).split(".")[0])
    key = "dtype" if major >= 5 else "torch_dtype"  # renamed in transformers 5
    try:
        return cls.from_pretrained(setup.checkpoint, **{key: dtype})
    except (ValueError, OSError, KeyError) as exc:  # a type it does not know (RefinedWeb...)
        text = str(exc).strip().splitlines()
        return text[0][:160] if text else type(exc).__name__


def reference_output(ref: Reference, ids: torch.Tensor) -> Any:
    """The reference's output on ``ids``: logits, or (last hidden state, pooled) for an
    encoder, as the pipeline's last stage gives them."""
    with torch.no_grad():
        if not ref.transformers:
            return ref.model(ids)
        out = ref.model(input_ids=ids)
        if hasattr(out, "logits"):
            return out.logits
        return out.last_hidden_state, out.pooler_output


def reference_tokens(ref: Reference, setup: RunSetup, ids: torch.Tensor, new_tokens: int,
                     microbatches: int) -> torch.Tensor:
    """The reference's greedy continuation of ``ids``: transformers' generate(do_sample=False)
    without an end-of-sequence stop, or the chain's own cached decoding in one process."""
    if ref.transformers:
        with torch.no_grad():
            out = ref.model.generate(ids, attention_mask=torch.ones_like(ids),
                                     max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                     do_sample=False, eos_token_id=None, pad_token_id=0)
        return out[:, ids.shape[1]:].cpu()
    return greedy_generate([ref.model], ids, new_tokens, microbatches=microbatches).tokens.cpu()


def _vocab_of(setup: RunSetup) -> int:
    if setup.loaded.kind == "torch":
        from models.torch_import import load_module_from_path

        embeddings = [m for m in load_module_from_path(setup.plan.model.source or "").modules()
                      if isinstance(m, nn.Embedding)]
        return embeddings[0].num_embeddings if embeddings else 2
    return int(getattr(_spec(setup), "vocab", 0))


def make_input(setup: RunSetup, device: torch.device, seed: int) -> torch.Tensor:
    """The whole batch's input, the same in every process that draws it: the given token ids,
    or ids (or samples) drawn from ``seed``."""
    if setup.input_ids is not None:
        return torch.load(setup.input_ids, map_location="cpu", weights_only=True).to(device)
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


def compare_outputs(pipeline: Any, reference: Any, dtype: str, *, label: str = "",
                    transformers: bool = False) -> Verify:
    """max |pipeline - reference| against rtol x max |reference| (rtol by dtype); against
    transformers, rtol x max(1, max |reference|) with its own rtols."""
    got, want = _tensors(pipeline), _tensors(_to_cpu(reference))
    if len(got) != len(want) or any(g.shape != w.shape for g, w in zip(got, want, strict=False)):
        shapes = [tuple(t.shape) for t in got], [tuple(t.shape) for t in want]
        raise RuntimeError(f"verify: pipeline output shapes {shapes[0]} differ from the "
                           f"single-process reference's {shapes[1]}")
    error = max((float((g.float() - w.float()).abs().max()) for g, w in zip(got, want, strict=True)
                 if g.numel()), default=0.0)
    scale = max((float(w.float().abs().max()) for w in want if w.numel()), default=0.0)
    tolerance = _RTOL_TRANSFORMERS[dtype] * max(1.0, scale) if transformers \
        else _RTOL[dtype] * scale
    return Verify(max_abs_error=error, tolerance=tolerance, passed=error <= tolerance,
                  reference_max_abs=scale, reference=label)


# ----- generation ---------------------------------------------------------------------------
@dataclass
class GenerateMeasure:
    """One rank's view of a greedy generation through the pipeline."""

    rank: int
    tokens: list[list[int]]
    """The new ids per sequence (every rank receives them)."""
    ttft_s: float
    """From the aligned start to the first new token on every rank: the prefill."""
    step_times_s: list[float]
    """Each decode step: every micro-batch through every stage, one token per sequence."""
    forward_times_s: list[float]
    """This stage's decode forwards (one micro-batch each)."""
    prefill_output: Any = None
    """The last stage's prefill output (on the CPU), when asked for."""


def _signature(setup: RunSetup, layers: tuple[str, ...], micro: int, seq: int,
               device: torch.device) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    """Example input and output tensors of a stage for one micro-batch of ``seq`` tokens, from
    the layer names alone, so the pipeline's stages need no shape-inference forward (which
    would run the layers and disturb their caches)."""
    spec, nx = _spec(setup), setup.numerics
    dtype = TORCH_DTYPES[setup.dtype]

    def hidden(count: int) -> tuple[torch.Tensor, ...]:
        return tuple(torch.empty(micro, seq, spec.hidden, dtype=dtype, device=device)
                     for _ in range(count))

    names = layer_names(spec, setup.plan.model.granularity or "block")
    first = names.index(layers[0])
    if first == 0:
        inputs: tuple[torch.Tensor, ...] = (torch.zeros(micro, seq, dtype=torch.long,
                                                         device=device),)
    else:
        inputs = hidden(output_arity(spec, names[first - 1], nx))
    if layers[-1] == "head":
        outputs: tuple[torch.Tensor, ...] = (torch.empty(micro, seq, spec.vocab, dtype=dtype,
                                                          device=device),)
    else:
        outputs = hidden(output_arity(spec, layers[-1], nx))
    return inputs, outputs


def run_generation(setup: RunSetup, stage_plan: StagePlan, module: nn.Module, *, rank: int,
                   world_size: int, device: torch.device, ids: torch.Tensor | None,
                   new_tokens: int, keep_output: bool = False) -> GenerateMeasure:
    """Prefill then ``new_tokens - 1`` greedy decode steps, micro-batched through the stages
    with GPipe: each stage keeps its layers' keys and values per micro-batch, the last stage
    picks each sequence's next token and every rank receives it (rank 0 feeds it back)."""
    chain: Any = module
    m = setup.microbatches
    batch, seq = setup.input_shape[0], setup.input_shape[1]
    micro = batch // m
    timed = TimedModule(chain, device)
    schedules = []
    for tokens in (seq, 1):
        inputs, outputs = _signature(setup, stage_plan.layers, micro, tokens, device)
        stage = PipelineStage(timed, stage_plan.index, world_size, device, input_args=inputs,
                              output_args=outputs)
        schedules.append((stage, ScheduleGPipe(stage, m)))
    last = world_size - 1
    chain.state.start(m)
    try:
        with torch.no_grad():
            (prefill, run_prefill), (decode, run_decode) = schedules
            dist.barrier()
            t0 = time.perf_counter()
            out = run_prefill.step(ids) if prefill.is_first else run_prefill.step()
            kept = _to_cpu(out) if keep_output and rank == last else None
            nxt = _next_token(out, batch, device, rank == last)
            dist.broadcast(nxt, src=last)
            ttft = time.perf_counter() - t0
            new = [nxt]
            timed.reset()
            steps = []
            for _ in range(new_tokens - 1):
                t = time.perf_counter()
                out = run_decode.step(new[-1]) if decode.is_first else run_decode.step()
                nxt = _next_token(out, batch, device, rank == last)
                dist.broadcast(nxt, src=last)
                steps.append(time.perf_counter() - t)
                new.append(nxt)
    finally:
        chain.state.stop()
    tokens_cpu = torch.cat(new, dim=1).cpu()
    return GenerateMeasure(rank, tokens_cpu.tolist(), ttft, steps, timed.times(), kept)


def _next_token(out: Any, batch: int, device: torch.device, last: bool) -> torch.Tensor:
    if last:
        return out[:, -1].argmax(-1, keepdim=True).to(torch.long).contiguous()
    return torch.empty(batch, 1, dtype=torch.long, device=device)
