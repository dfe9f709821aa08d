"""The run report: measurements beside the plan's predictions (no torch, no printing)."""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..core.units import format_bytes
from ..plan.simulate import simulate_plan
from ..plan.types import Plan

__all__ = ["REPORT_SCHEMA", "RunReport", "StageResult", "Verify", "format_report", "predict"]

REPORT_SCHEMA = "cachepart-run/1"


@dataclass(frozen=True)
class StageResult:
    index: int
    rank: int
    layers: tuple[str, ...]
    forward_s: float
    """Median forward time of one micro-batch on this stage (compute only, no transfers)."""
    predicted_s: float
    """The plan's stage latency_s (one micro-batch, inbound transfer included)."""
    predicted_compute_s: float
    peak_memory_bytes: int
    """torch.cuda.max_memory_allocated on a GPU; the process's peak RSS on a CPU."""
    peak_memory_kind: str
    plan_memory_bytes: int
    device: str
    samples: int
    """Micro-batch forwards timed."""


@dataclass(frozen=True)
class Verify:
    max_abs_error: float
    tolerance: float
    passed: bool
    reference_max_abs: float


@dataclass(frozen=True)
class RunReport:
    model: str
    plan: str
    world_size: int
    backend: str
    dtype: str
    microbatches: int
    micro_batch_size: int
    steps: int
    tokens_per_step: int | None
    tokens_per_s: float | None
    end_to_end_s: float
    """Mean wall time of one step: every micro-batch through every stage."""
    stages: tuple[StageResult, ...]
    predicted: dict[str, Any]
    verify: Verify | None = None
    pin_l2: dict[str, Any] | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["schema"] = REPORT_SCHEMA
        for stage in doc["stages"]:
            stage["layers"] = list(stage["layers"])
        doc["notes"] = list(self.notes)
        return doc

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")


def predict(plan: Plan, microbatches: int) -> dict[str, Any]:
    """What the plan predicts for ``microbatches`` micro-batches, by the GPipe simulator."""
    result = simulate_plan(plan, microbatches)
    return {
        "stage_latency_s": [st.latency_s for st in plan.stages],
        "steady_tokens_per_s": plan.predicted.get("tokens_per_s"),
        "source": "simulator",
        "tokens_per_s": result.tokens_per_s,
        "makespan_s": result.makespan_s,
    }


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def format_report(report: RunReport) -> str:
    """A per-stage table of measured against predicted, and the totals."""
    head = f"{'stage':>5}  {'rank':>4}  {'layers':<22}  {'forward_s':>10}  {'predicted_s':>11}  " \
           f"{'ratio':>8}  {'peak memory':>12}"
    lines = [f"{report.model}: {len(report.stages)} stages, {report.microbatches} micro-batches "
             f"of {report.micro_batch_size}, {report.steps} timed step(s), {report.dtype}, "
             f"{report.backend}", head]
    for st in report.stages:
        span = st.layers[0] if len(st.layers) == 1 else f"{st.layers[0]} .. {st.layers[-1]}"
        ratio = st.forward_s / st.predicted_s if st.predicted_s > 0 else float("nan")
        lines.append(f"{st.index:>5}  {st.rank:>4}  {span:<22}  {st.forward_s:>10.4g}  "
                     f"{st.predicted_s:>11.4g}  {ratio:>8.3g}  {format_bytes(st.peak_memory_bytes):>12}")
    pred = report.predicted
    tps = "-" if report.tokens_per_s is None else f"{report.tokens_per_s:,.0f}"
    ptps = pred.get("tokens_per_s")
    lines.append(f"tokens/s: measured {tps}, predicted "
                 f"{'-' if ptps is None else f'{ptps:,.0f}'} ({pred.get('source')})")
    pm = pred.get("makespan_s")
    lines.append(f"end-to-end per step: measured {report.end_to_end_s:.4g} s, predicted "
                 f"{'-' if pm is None else f'{pm:.4g} s'}")
    if report.verify is not None:
        v = report.verify
        lines.append(f"verify: max_abs_error {v.max_abs_error:.3g} <= tolerance {v.tolerance:.3g}: "
                     f"{'passed' if v.passed else 'FAILED'}")
    lines.extend(f"note: {n}" for n in report.notes)
    return "\n".join(lines)
