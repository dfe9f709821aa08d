"""One rank of a planned pipeline under torchrun: the process group, the memory check every
rank agrees on, the stage run, and rank 0's report. It prints nothing: the outcome carries the
lines to print and the report (solver/cli/worker.py prints them and picks the exit code).

Failures are bounded in time: torchrun ends the other workers when one exits, and every
collective and transfer times out after ``RunOptions.timeout`` seconds.

Test hooks (environment): CACHEPART_FAIL_RANK=N makes rank N raise at the start of its stage;
CACHEPART_DEVICE_MEMORY_BYTES=B checks every stage against B bytes of device memory.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from datetime import timedelta
from enum import Enum
from typing import Any

from ..core.errors import InvalidInputError
from .files import write_whole
from .options import RunOptions
from .report import GenerateResult, RunReport, StageResult, median, predict
from .validate import RunSetup, check_stage_memory, device_slot

__all__ = ["Outcome", "WorkerResult", "run_worker", "single_process_env"]


class Outcome(Enum):
    DONE = "done"
    FAILED = "failed"
    """This rank failed, or --verify found a difference."""
    REFUSED = "refused"
    """Every rank refused the plan together (memory)."""


@dataclass
class WorkerResult:
    outcome: Outcome
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    report: RunReport | None = None
    """Rank 0's report."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def single_process_env() -> None:
    """Run without torchrun as a world of one (a one-stage plan)."""
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(_free_port()))
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("LOCAL_RANK", "0")


def run_worker(options: RunOptions, setup: RunSetup, rank: int, world: int,
               local_rank: int) -> WorkerResult:
    """Run this rank's stage of ``setup.plan`` (checked by prepare_run) to the end."""
    # torch only now: the checks before this work (and fail fast) without importing it
    import time

    import torch
    import torch.distributed as dist

    from . import pipeline as pl

    plan = setup.plan
    stage_plan = plan.stages[rank]
    result = WorkerResult(Outcome.DONE)
    try:
        multi_node = int(os.environ.get("LOCAL_WORLD_SIZE", world)) != world
        slot = device_slot(plan, rank, multi_node=multi_node) if plan.hardware.cluster \
            else local_rank
        device = pl.select_device(options.torch_device, slot)
    except InvalidInputError as exc:
        if local_rank == 0:  # every rank refuses alike
            result.errors.append(str(exc))
        result.outcome = Outcome.REFUSED
        return result
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, rank=rank, world_size=world,
                            timeout=timedelta(seconds=options.timeout))
    try:
        # the memory check is per rank (its own device): agree on the verdict, refuse together
        refused = 0
        try:
            capacity, label = pl.device_memory(device)
            check_stage_memory(stage_plan, capacity, f"rank {rank}'s device, {label}")
        except InvalidInputError as exc:
            result.errors.append(str(exc))
            refused = 1
        flag = torch.tensor([refused], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if int(flag.item()):
            dist.destroy_process_group()  # every rank agreed: a clean, collective exit
            result.outcome = Outcome.REFUSED
            return result
        if options.pin_l2 and rank == 0 and device.type != "cuda":
            result.notes.append(f"pin_l2: no NVIDIA GPU here ({device}): it does nothing")

        t_build = time.perf_counter()
        module = pl.build_stage_module(setup, stage_plan.layers, device, options.seed)
        build_s = time.perf_counter() - t_build
        inputs = pl.make_input(setup, device, options.seed) if stage_plan.index == 0 else None
        is_last = stage_plan.index == len(plan.stages) - 1
        keep = options.verify or (options.save_output is not None and is_last)
        pin_info: dict[str, Any] | None = None
        measure: Any = None
        if setup.workload.phase == "prefill":
            run_kwargs: dict[str, Any] = dict(rank=rank, world_size=world, device=device,
                                              steps=options.steps, warmup=options.warmup,
                                              inputs=inputs, keep_output=keep)
            if options.pin_l2 and device.type == "cuda":
                measure, pin_info = _run_pinned(setup, stage_plan, module, run_kwargs, result)
            else:
                measure = pl.run_stage(setup, stage_plan, module, **run_kwargs)
        gen = None
        if setup.generate:
            gen = pl.run_generation(setup, stage_plan, module, rank=rank, world_size=world,
                                    device=device, ids=inputs, new_tokens=setup.generate,
                                    keep_output=keep)
            if measure is None:  # a decode plan: its stages are measured decoding
                peak, kind = pl.peak_memory(device)
                measure = pl.StageMeasure(rank, stage_plan.index, stage_plan.layers, str(device),
                                          gen.forward_times_s, gen.step_times_s, peak, kind,
                                          gen.prefill_output)
            gen.prefill_output = None  # the output travels once, in the measure
        if options.save_output is not None and is_last:
            output = measure.output
            write_whole(options.save_output, lambda tmp: torch.save(output, tmp))
            result.notes.append(f"output {_shape(measure.output)} written to "
                                f"{options.save_output} (rank {rank})")
        if not options.verify:
            measure.output = None
        gathered: list[Any] | None = [None] * world if rank == 0 else None
        dist.gather_object((measure, build_s, pin_info, gen), gathered, dst=0)
    except Exception as exc:
        text = str(exc).strip()
        result.errors.append(f"rank {rank} (stage {stage_plan.index}) failed: "
                             f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}")
        # no destroy_process_group: a peer may be gone, and torchrun ends the rest
        result.outcome = Outcome.FAILED
        return result
    if rank == 0 and gathered is not None:
        try:
            result.report = _report(options, setup, gathered, backend, device)
        except Exception as exc:
            result.errors.append(f"rank 0 failed reporting: {type(exc).__name__}: {exc}")
            result.outcome = Outcome.FAILED
        else:
            made = result.report.generate
            if made is not None and made.matches_reference is False:
                result.errors.append(f"verify: the generated tokens differ from the reference's "
                                     f"({made.reference})")
                result.outcome = Outcome.FAILED
            verify = result.report.verify
            if verify is not None and not verify.passed:
                result.errors.append(
                    f"verify: the pipeline's output differs from the single-process model by "
                    f"{verify.max_abs_error:.3g}, over the tolerance {verify.tolerance:.3g}")
                result.outcome = Outcome.FAILED
    dist.destroy_process_group()
    return result


def _shape(value: Any) -> str:
    if isinstance(value, tuple | list):
        return "(" + ", ".join(_shape(v) for v in value) + ")"
    return "x".join(str(d) for d in getattr(value, "shape", ())) or "?"


def _run_pinned(setup: Any, stage_plan: Any, module: Any, run_kwargs: dict[str, Any],
                result: WorkerResult) -> tuple[Any, dict[str, Any]]:
    from . import pipeline as pl

    try:
        import cuda.bindings.runtime  # noqa: F401  (only to learn whether it is there)

        from .l2 import L2Pin, pack_parameters
    except ImportError as exc:
        info = {"applied": False, "reason": f"cuda-python is not installed ({exc}): "
                                            "pip install cuda-python"}
        result.notes.append(f"pin_l2: {info['reason']}; running without")
        return pl.run_stage(setup, stage_plan, module, **run_kwargs), info
    flat = pack_parameters(module)
    if flat is None:
        return pl.run_stage(setup, stage_plan, module, **run_kwargs), {
            "applied": False, "reason": "the stage has no parameters"}
    with L2Pin(flat) as pin:
        measure = pl.run_stage(setup, stage_plan, module, **run_kwargs)
    return measure, dict(pin.info or {}, reset=True)


def _report(options: RunOptions, setup: RunSetup, gathered: list[Any], backend: str,
            device: Any) -> RunReport:
    from . import pipeline as pl

    plan = setup.plan
    decode_plan = setup.workload.phase == "decode"
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
    count = min(len(m.step_times_s) for m in measures)
    per_step = [max(m.step_times_s[i] for m in measures) for i in range(count)]
    end_to_end = sum(per_step) / len(per_step) if per_step else float("nan")
    batch = setup.input_shape[0]
    micro = batch // setup.microbatches
    tokens = batch * (1 if decode_plan else setup.input_shape[1]) \
        if setup.loaded.kind != "torch" or setup.input_dtype in ("long", "int32") else None
    notes = []
    if plan.hardware.device and not str(device).startswith("cuda"):
        notes.append(f"the plan's stage times are for {plan.hardware.device} (or from the "
                     f"profile it was solved with); this run is on {device}")
    if micro != setup.workload.sequences:
        notes.append(f"micro-batches of {micro} sequences; the plan's stage times are for "
                     f"{setup.workload.sequences}")
    if decode_plan:
        notes.append("a decode plan: the stage times and steps are the generation's decode "
                     "steps (one token per sequence)")
    elif setup.loaded.kind != "torch" and setup.input_shape[1] != setup.workload.seq_len:
        notes.append(f"the input has {setup.input_shape[1]} tokens per sequence; the plan's "
                     f"stage times are for {setup.workload.seq_len}")
    pin = [g[2] for g in gathered if g[2] is not None]
    verify = None
    reference = None
    ids = None
    if options.verify:
        ref = pl.build_reference(setup, device, options.seed)
        ids = pl.make_input(setup, device, options.seed)
        reference = ref
        verify = pl.compare_outputs(measures[-1].output, pl.reference_output(ref, ids),
                                    setup.dtype, label=ref.label, transformers=ref.transformers)
    generate = None
    gens = [g[3] for g in gathered if g[3] is not None]
    if gens:
        generate = _generate_result(setup, gens, reference, ids)
    weights = setup.checkpoint if setup.checkpoint else f"seeded (--seed {options.seed})"
    return RunReport(
        model=plan.model.name, plan=str(options.plan), world_size=len(measures), backend=backend,
        dtype=setup.dtype, microbatches=setup.microbatches, micro_batch_size=micro,
        steps=count, tokens_per_step=tokens,
        tokens_per_s=tokens / end_to_end if tokens and end_to_end > 0 else None,
        end_to_end_s=end_to_end, stages=tuple(stages),
        predicted=predict(plan, setup.microbatches),
        verify=verify, pin_l2={"stages": pin} if pin else None, notes=tuple(notes),
        weights=weights, generate=generate)


def _generate_result(setup: RunSetup, gens: list[Any], reference: Any,
                     ids: Any) -> GenerateResult:
    from . import pipeline as pl
    from .predict import predict_generation

    head = gens[0]
    n = setup.generate
    batch, prompt = setup.input_shape[0], setup.input_shape[1]
    # every rank timed the same steps after the same barrier; the slowest saw them end
    ttft = max(g.ttft_s for g in gens)
    steps = [max(g.step_times_s[i] for g in gens) for i in range(n - 1)]
    total = ttft + sum(steps)
    predicted = predict_generation(setup.plan, setup.workload, batch=batch, prompt=prompt,
                                   new_tokens=n, microbatches=setup.microbatches)
    matches = label = None
    if reference is not None:
        want = pl.reference_tokens(reference, setup, ids, n, setup.microbatches)
        matches = want.tolist() == head.tokens
        label = reference.label
    return GenerateResult(new_tokens=n, tokens=head.tokens, ttft_s=ttft,
                          tpot_s=sum(steps) / len(steps) if steps else None,
                          tokens_per_s=batch * n / total if total > 0 else 0.0,
                          predicted=predicted, matches_reference=matches, reference=label)
