"""Batch solves: every combination of models, device counts, capacities and methods.

Each finished solve is appended to ``DIR/results.jsonl`` at once (one JSON line, flushed), so a
sweep killed at any moment and started again with the same arguments skips what is done and
ends with every row exactly once; a line cut short by the kill is ignored and its solve rerun.
At the end the journal is written as ``results.csv`` and ``results.parquet`` in sweep order.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd

from ..algorithms import AUTO, METHODS, SolveOptions, get_method, solve
from ..core.errors import CachepartError, InvalidInputError
from ..core.files import read_yaml
from ..core.problem import MemoryModel
from ..core.status import Status
from ..frontend.lower import problem_from_graph
from ..frontend.sources import load_model
from ..hardware.catalogue import capacity_for, get_device
from ..hardware.footprint import Workload
from ..plan.build import build_plan

__all__ = ["RESULT_COLUMNS", "Sweep", "SweepTask", "load_sweep", "run_sweep"]

RESULT_COLUMNS = ["model", "device", "batch", "seq_len", "phase", "dtype", "weight_dtype",
                  "micro_batch", "granularity", "memory_model", "devices", "capacity",
                  "capacity_bytes", "method", "status", "objective", "bound", "gap", "stages",
                  "solve_s", "predicted_tokens_per_s", "params", "diagnosis"]
"""One row per solve: what was solved (the model, the workload the sweep shares, the devices
and capacity), then what came out."""
_INTEGER_COLUMNS = ["batch", "seq_len", "micro_batch", "devices", "capacity_bytes", "stages",
                    "params"]
JOURNAL = "results.jsonl"


@dataclass(frozen=True)
class Sweep:
    """The cross product to solve, and the settings every solve shares."""

    models: tuple[str, ...]
    devices: tuple[int, ...]
    capacities: tuple[str, ...]
    methods: tuple[str, ...]
    device: str = "h100-sxm"
    workload: Workload = field(default_factory=Workload)
    granularity: str = "block"
    memory_model: str = "additive"
    time_limit_s: float = 60.0

    def __post_init__(self) -> None:
        for name in ("models", "devices", "capacities", "methods"):
            if not getattr(self, name):
                raise InvalidInputError("give at least one value", field=name)
        if not isinstance(self.device, str):
            raise InvalidInputError(f"expected a device name, got {self.device!r}", field="device")
        if not isinstance(self.workload, Workload):
            raise InvalidInputError(f"expected a mapping, got {self.workload!r}", field="workload")
        SolveOptions(time_limit_s=self.time_limit_s)  # the same checks as a single solve
        bad = [m for m in self.methods if m != AUTO and m not in METHODS]
        if bad:
            try:
                get_method(bad[0])
            except InvalidInputError as exc:
                raise InvalidInputError(exc.reason, field="methods") from None
        if any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in self.devices):
            raise InvalidInputError(f"every count must be a whole number >= 1, got "
                                    f"{list(self.devices)}", field="devices")
        device = get_device(self.device)
        for cap in self.capacities:
            try:
                capacity_for(cap, device)
            except InvalidInputError as exc:  # this sweep's parameter is ``capacities``
                raise InvalidInputError(exc.reason, field="capacities") from None
        MemoryModel.of(self.memory_model)
        if self.granularity not in ("block", "op"):
            raise InvalidInputError(f"expected block or op, got {self.granularity!r}",
                                    field="granularity")

    def tasks(self) -> list[SweepTask]:
        return [SweepTask(m, k, c, meth) for m, k, c, meth in
                itertools.product(self.models, self.devices, self.capacities, self.methods)]

    def settings(self) -> dict[str, Any]:
        """What must match for a journal to be resumed."""
        return {"device": self.device, "workload": asdict(self.workload),
                "granularity": self.granularity, "memory_model": self.memory_model,
                "time_limit_s": self.time_limit_s}


@dataclass(frozen=True)
class SweepTask:
    model: str
    devices: int
    capacity: str
    method: str

    @property
    def key(self) -> str:
        return f"{self.model}|{self.devices}|{self.capacity}|{self.method}"


def load_sweep(path: str | Path) -> Sweep:
    """A sweep YAML: models, devices, capacities, methods lists; device, workload {batch, seq,
    phase, dtype, micro_batch, weight_dtype, attention}, granularity, memory_model, time_limit."""
    path = Path(path)
    doc = read_yaml(path, "sweep")  # not UTF-8, too large, aliases: one line
    if not isinstance(doc, dict):
        raise InvalidInputError(f"{path}: expected a mapping")
    known = {"models", "devices", "capacities", "methods", "device", "workload", "granularity",
             "memory_model", "time_limit"}
    unknown = sorted(set(doc) - known)
    if unknown:
        raise InvalidInputError(f"{path}: unknown field {unknown[0]!r} (known: {', '.join(sorted(known))})")
    raw_wl = doc.get("workload") or {}
    if not isinstance(raw_wl, dict):
        raise InvalidInputError(f"{path}: workload: expected a mapping, got {raw_wl!r}")
    wl = dict(raw_wl)
    dtype = wl.pop("dtype", "bf16")
    try:
        workload = Workload(batch=wl.pop("batch", 1), seq_len=wl.pop("seq", 2048),
                            phase=wl.pop("phase", "prefill"), micro_batch=wl.pop("micro_batch", None),
                            weight_dtype=wl.pop("weight_dtype", dtype), activation_dtype=dtype,
                            attention=wl.pop("attention", "fused"))
    except InvalidInputError as exc:
        raise InvalidInputError(f"{path}: workload: {exc}") from None
    if wl:
        raise InvalidInputError(f"{path}: workload: unknown field {sorted(wl)[0]!r}")

    def listed(name: str, kind: type) -> tuple[Any, ...]:
        values = doc.get(name)
        if not isinstance(values, list) or not all(isinstance(v, kind) for v in values):
            raise InvalidInputError(f"{path}: {name}: expected a list of {kind.__name__}, got {values!r}")
        return tuple(values)

    try:
        return Sweep(models=listed("models", str), devices=listed("devices", int),
                     capacities=tuple(str(c) for c in listed("capacities", (str, int))),  # type: ignore[arg-type]
                     methods=listed("methods", str), device=doc.get("device", "h100-sxm"),
                     workload=workload, granularity=doc.get("granularity", "block"),
                     memory_model=doc.get("memory_model", "additive"),
                     time_limit_s=doc.get("time_limit", 60.0))
    except InvalidInputError as exc:
        # Name the file and its field, not the CLI flag the same check would name.
        raise InvalidInputError(f"{path}: {str(exc).lstrip('-')}") from None


@lru_cache(maxsize=64)
def _graph(model: str, workload: Workload, granularity: str, device: str) -> Any:
    return load_model(model, workload, granularity=granularity, device=device)  # type: ignore[arg-type]


def _solve_one(task: SweepTask, sweep: Sweep) -> dict[str, Any]:
    """One row; runs in a worker process. Errors become rows, never crashes."""
    row: dict[str, Any] = {"key": task.key, "model": task.model, "device": sweep.device,
                           "devices": task.devices, "capacity": task.capacity,
                           "method": task.method}
    try:
        loaded = _graph(task.model, sweep.workload, sweep.granularity, sweep.device)
        capacity, tier = capacity_for(task.capacity, get_device(sweep.device))
        problem = problem_from_graph(loaded.graph, capacity, task.devices, sweep.memory_model)
        # One worker process per core: the ILP gets one thread so solves don't contend.
        part = solve(problem, task.method, SolveOptions(time_limit_s=sweep.time_limit_s, workers=1))
        row.update(capacity_bytes=capacity, status=part.status.value, objective=part.objective,
                   bound=part.bound, gap=part.gap, stages=part.num_stages or None,
                   solve_s=part.wall_s, params=loaded.params, diagnosis=part.diagnosis or "")
        tps = None
        if part.status is not Status.INFEASIBLE:
            plan = build_plan(loaded.graph, problem, part, device=sweep.device, tier=tier)
            tps = plan.predicted.get("tokens_per_s")
        row["predicted_tokens_per_s"] = tps
    except CachepartError as exc:
        row.update(status="error", diagnosis=str(exc))
    return row


def _read_journal(path: Path, settings: dict[str, Any]) -> dict[str, dict[str, Any]]:
    done: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return done
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines):
        try:
            entry = json.loads(line)
        except (json.JSONDecodeError, RecursionError, ValueError):
            continue  # a line cut short by a kill (or not ours): its solve runs again
        if not isinstance(entry, dict):
            continue
        if number == 0 and "settings" in entry:
            if entry["settings"] != settings:
                raise InvalidInputError(f"{path} was written by a sweep with other settings "
                                        f"({entry['settings']}); use another folder or delete it",
                                        field="out")
            continue
        done.setdefault(entry.get("key", ""), entry)
    return done


def _iterate(tasks: list[SweepTask], sweep: Sweep, workers: int) -> Iterator[dict[str, Any]]:
    if workers <= 1:
        for task in tasks:
            yield _solve_one(task, sweep)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        pending: set[Future[dict[str, Any]]] = set()
        queue = iter(tasks)
        for task in itertools.islice(queue, workers * 4):
            pending.add(pool.submit(_solve_one, task, sweep))
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                yield future.result()
                nxt = next(queue, None)
                if nxt is not None:
                    pending.add(pool.submit(_solve_one, nxt, sweep))


def run_sweep(sweep: Sweep, out_dir: str | Path, *, workers: int = 2,
              progress: Callable[[int, int, float], None] | None = None) -> pd.DataFrame:
    """Solve every combination not yet in the journal; write results.csv and .parquet."""
    for model in dict.fromkeys(sweep.models):  # fail fast on a bad model name
        _graph(model, sweep.workload, sweep.granularity, sweep.device)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"{out} exists and is not a folder", field="out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidInputError(f"cannot create {out} ({exc.strerror or exc})", field="out") from None
    journal = out / JOURNAL
    settings = sweep.settings()
    done = _read_journal(journal, settings)
    tasks = sweep.tasks()
    todo = [t for t in tasks if t.key not in done]
    start = time.perf_counter()
    fresh = not journal.exists() or journal.stat().st_size == 0
    with journal.open("a", encoding="utf-8") as handle:
        if fresh:
            handle.write(json.dumps({"settings": settings}) + "\n")
        elif not journal.read_bytes().endswith(b"\n"):
            handle.write("\n")  # close a line cut short, so the next row starts clean
        handle.flush()
        count = len(tasks) - len(todo)
        if progress is not None:
            progress(count, len(tasks), 0.0)
        for row in _iterate(todo, sweep, workers):
            handle.write(json.dumps(row) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
            done.setdefault(row["key"], row)
            count += 1
            if progress is not None:
                progress(count, len(tasks), time.perf_counter() - start)
    rows = [done[t.key] for t in tasks]
    wl = sweep.workload
    shared = {"batch": wl.batch, "seq_len": wl.seq_len, "phase": wl.phase,
              "dtype": wl.activation_dtype, "weight_dtype": wl.weight_dtype,
              "micro_batch": wl.sequences, "granularity": sweep.granularity,
              "memory_model": MemoryModel.of(sweep.memory_model).value}
    table = pd.DataFrame([{**row, **shared} for row in rows]).reindex(columns=RESULT_COLUMNS)
    # whole numbers stay whole (pandas would make a column with a missing value float)
    table[_INTEGER_COLUMNS] = table[_INTEGER_COLUMNS].astype("Int64")
    table.to_csv(out / "results.csv", index=False)
    table.to_parquet(out / "results.parquet", index=False)
    return table
