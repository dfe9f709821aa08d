"""Figures (matplotlib, imported lazily, Agg backend): per-stage memory against capacity, per-stage
latency, a pipeline Gantt chart, solve time against size, devices needed per capacity tier."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..plan.schedule import TrainSim
from ..plan.simulate import SimResult, simulate_plan
from ..plan.types import Plan

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "plot_devices_needed",
    "plot_gantt",
    "plot_plan",
    "plot_solve_times",
    "plot_stage_latency",
    "plot_stage_memory",
    "plot_train_gantt",
]

GIB = 2**30


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and in tests
    import matplotlib.pyplot as plt

    return plt


def _unit(nbytes: float) -> tuple[float, str]:
    for scale, name in ((GIB, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if nbytes >= scale:
            return scale, name
    return 1, "B"


def plot_stage_memory(plan: Plan, ax: Axes) -> None:
    stages = [s.index for s in plan.stages]
    scale, unit = _unit(plan.hardware.capacity_bytes)
    ax.bar(stages, [s.memory_bytes / scale for s in plan.stages], color="tab:blue")
    cap = plan.hardware.capacity_bytes / scale
    label = f"capacity {plan.hardware.tier or ''} {cap:.3g} {unit}".replace("  ", " ")
    ax.axhline(cap, color="tab:red", linestyle="--", label=label)
    top = max([cap, *(s.memory_bytes / scale for s in plan.stages)])
    ax.set_ylim(0, top * 1.25)  # room above the tallest bar for the legend: nothing is hidden
    ax.set_xlabel("stage")
    ax.set_ylabel(f"memory ({unit})")
    ax.set_title("memory per stage")
    ax.legend(loc="upper center", ncol=2)


def plot_stage_latency(plan: Plan, ax: Axes) -> None:
    stages = [s.index for s in plan.stages]
    compute = [s.compute_s * 1e3 for s in plan.stages]
    transfer = [(s.transfer_in_s + (s.transfer_out_s or 0.0)) * 1e3 for s in plan.stages]
    ax.bar(stages, compute, label="compute", color="tab:green")
    ax.bar(stages, transfer, bottom=compute, label="transfers", color="tab:orange")
    totals = [c + t for c, t in zip(compute, transfer, strict=True)]
    slow = totals.index(max(totals))
    ax.bar([stages[slow]], [totals[slow]], fill=False, edgecolor="black", linewidth=1.5,
           label=f"bottleneck {totals[slow]:.4g} ms")
    ax.set_ylim(0, max(totals) * 1.3 if max(totals) > 0 else 1)  # the legend sits above bars
    ax.set_xlabel("stage")
    ax.set_ylabel("latency per micro-batch (ms)")
    ax.set_title("latency per stage")
    ax.legend(loc="upper center", ncol=3)


def plot_gantt(sim: SimResult, ax: Axes) -> None:
    cmap = _pyplot().get_cmap("tab20")
    for slot in sim.slots:
        ax.barh(slot.stage, (slot.end_s - slot.start_s) * 1e3, left=slot.start_s * 1e3,
                color=cmap(slot.microbatch % 20), edgecolor="black", linewidth=0.3)
    ax.invert_yaxis()
    ax.set_xlabel("time (ms)")
    ax.set_ylabel("stage")
    ax.set_title(f"GPipe forward, {sim.microbatches} micro-batches, "
                 f"bubble {sim.bubble_fraction:.0%}")


def plot_train_gantt(sim: TrainSim, ax: Axes) -> None:
    """A training step: forwards light, backwards dark, one colour per micro-batch."""
    cmap = _pyplot().get_cmap("tab20")
    for slot in sim.slots:
        shade = cmap((2 * slot.microbatch + (slot.kind == "B")) % 20)
        ax.barh(slot.stage, (slot.end_s - slot.start_s) * 1e3, left=slot.start_s * 1e3,
                color=shade, edgecolor="black", linewidth=0.3)
    ax.invert_yaxis()
    ax.set_xlabel("time (ms)")
    ax.set_ylabel("stage")
    ax.set_title(f"{sim.schedule} training step, {sim.microbatches} micro-batches, "
                 f"bubble {sim.bubble_fraction:.0%}")


def plot_plan(plan: Plan, path: str | Path, microbatches: int | None = None) -> Path:
    """Memory, latency and Gantt chart of one plan in a single PNG."""
    plt = _pyplot()
    fig, axes = plt.subplots(3, 1, figsize=(9, 10), constrained_layout=True)
    plot_stage_memory(plan, axes[0])
    plot_stage_latency(plan, axes[1])
    if plan.workload.get("phase") == "train":
        from ..plan.build import train_simulation

        if microbatches is not None:
            plan = dataclasses.replace(plan, workload={**plan.workload,
                                                       "microbatches": microbatches})
        plot_train_gantt(train_simulation(plan), axes[2])
    else:
        plot_gantt(simulate_plan(plan, microbatches), axes[2])
    fig.suptitle(f"{plan.model.name}: {plan.method} plan, {len(plan.stages)} stages")
    return _save(fig, path)


def plot_solve_times(table: pd.DataFrame, path: str | Path, x: str = "n") -> Path:
    """Solve time against problem size per method, log-log (columns: method, x, seconds)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 5), constrained_layout=True)
    for method, rows in table.groupby("method"):
        rows = rows.sort_values(x)
        ax.plot(rows[x], rows["seconds"], marker="o", label=str(method))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel("solve time (s)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_devices_needed(table: pd.DataFrame, path: str | Path) -> Path:
    """Devices needed per model and capacity tier (columns: model, tier, devices_needed)."""
    plt = _pyplot()
    pivot = table.pivot_table(index="model", columns="tier", values="devices_needed",
                              aggfunc="min")
    fig, ax = plt.subplots(figsize=(9, 5), constrained_layout=True)
    pivot.plot.bar(ax=ax, logy=True)
    ax.set_ylabel("devices needed (log)")
    ax.set_title("fewest devices whose chosen tier holds every stage")
    return _save(fig, path)


def _save(fig: Figure, path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    _pyplot().close(fig)
    return out
