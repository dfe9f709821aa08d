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
from .files import write_whole

__all__ = ["REPORT_SCHEMA", "GenerateResult", "RunReport", "StageResult", "Verify",
           "format_report", "predict"]

REPORT_SCHEMA = "cachepart-run/2"
"""2: weights, generate, and the reference a verification used."""


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
    reference: str = ""
    """What the pipeline was compared against."""


@dataclass(frozen=True)
class GenerateResult:
    """A greedy generation through the pipeline, beside the simulator's prediction."""

    new_tokens: int
    tokens: list[list[int]]
    """The new ids, per sequence."""
    ttft_s: float
    """Time to first token: the prefill through every stage and the first pick."""
    tpot_s: float | None
    """Time per output token: the mean decode step (every sequence gets one token per step);
    None with a single new token."""
    tokens_per_s: float
    """Every new token of the batch over the whole generation (prefill included)."""
    predicted: dict[str, Any]
    matches_reference: bool | None = None
    """With --verify: the tokens equal the reference's greedy tokens."""
    reference: str | None = None


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
    weights: str = "seeded"
    """seeded (drawn from --seed), or the checkpoint directory the stages loaded."""
    generate: GenerateResult | None = None

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["schema"] = REPORT_SCHEMA
        for stage in doc["stages"]:
            stage["layers"] = list(stage["layers"])
        doc["notes"] = list(self.notes)
        return doc

    def save(self, path: str | Path) -> None:
        """Write the report JSON, whole or not at all (files.py)."""
        text = json.dumps(self.to_dict(), indent=2) + "\n"
        write_whole(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


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


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g} s"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


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
    if report.generate is not None:
        g = report.generate
        pred = g.predicted
        lines.append(f"generate {g.new_tokens} tokens: TTFT {g.ttft_s:.4g} s (predicted "
                     f"{_s(pred.get('ttft_s'))}), TPOT {_s(g.tpot_s)} (predicted "
                     f"{_s(pred.get('tpot_s'))}), {g.tokens_per_s:,.1f} tokens/s (predicted "
                     f"{_rate(pred.get('tokens_per_s'))}; predictions for {pred.get('device')})")
        first = g.tokens[0] if g.tokens else []
        lines.append(f"generated ids, sequence 0: {first}")
        if g.matches_reference is not None:
            lines.append(f"generate: the tokens {'equal' if g.matches_reference else 'DIFFER from'}"
                         f" the reference's ({g.reference})")
    if report.verify is not None:
        v = report.verify
        relation = "<=" if v.passed else ">"
        lines.append(f"verify: max_abs_error {v.max_abs_error:.3g} {relation} tolerance "
                     f"{v.tolerance:.3g}: {'passed' if v.passed else 'FAILED'}"
                     + (f" (against {v.reference})" if v.reference else ""))
    lines.append(f"weights: {report.weights}")
    lines.extend(f"note: {n}" for n in report.notes)
    return "\n".join(lines)
