"""Calibration: fit a device's efficiencies and kernel overhead to measured times.

A measurement is a setting (model, batch, lengths, dtypes, tensor-parallel degree) and the time
it took. Five kinds:

- ``prefill``: one forward over ``batch`` prompts of ``input_len`` tokens (time to first token);
- ``decode``: one decode step of ``batch`` sequences at a context of ``input_len`` tokens;
- ``generate``: a prefill, then ``output_len - 1`` decode steps (priced at the mean context,
  ``input_len + output_len // 2``: a step's time is linear in its context);
- ``throughput``: a ``generate`` given as output tokens per second (``batch x output_len`` over
  its time);
- ``layer``: one layer of a profile (``cachepart profile``) at the profile's workload.

A setting on t devices takes sum_l [(T_l - F_l) / t + F_l] + its all-reduces, where T_l is the
layer's time on one device and F_l its kernel overhead (core/extensions.py): the formula the
planner uses for a tensor-parallel stage. The fit chooses the efficiencies (matmul per compute
dtype, attention, memory) and the kernel overhead that minimise the sum of squared log ratios
predicted / measured, plus a small pull (``PRIOR``) towards the starting device's figures, which
keeps a factor the data cannot see where it was. The search is a Nelder-Mead in log space from
the starting figures: deterministic for the same input. A fit with fewer points than factors, or
a factor that ends at a bound (an efficiency at 1, a kernel overhead at 1 ms), is reported
(``Calibration.warnings``): the data did not determine it.
"""

from __future__ import annotations

import csv
import math
import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from models.layers import LayerDesc

from ..core.errors import InvalidInputError
from ..core.files import display_path, shorten
from ..hardware.catalogue import Device
from ..hardware.cost import LayerTerms, layer_terms, terms_latency
from ..hardware.factors import CostFactors
from ..hardware.footprint import DTYPE_BYTES, Workload

__all__ = [
    "FIT_CLASSES",
    "KINDS",
    "PRIOR",
    "Calibration",
    "Measurement",
    "PreparedMeasurement",
    "fit_factors",
    "measurements_from_profile",
    "predict",
    "prepare",
    "read_measurements",
]

KINDS = ("prefill", "decode", "generate", "throughput", "layer")
FIT_CLASSES = ("matmul", "attention", "memory", "overhead")
PRIOR = 1e-3
"""Weight of the pull towards the starting figures, per squared log ratio of a factor."""
_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6}
_THROUGHPUT_UNITS = ("tok/s", "tok/s/gpu")
_BOUNDS = {"efficiency": (0.01, 1.0), "kernel_s": (1e-9, 1e-3)}


@dataclass(frozen=True)
class Measurement:
    """One measured setting (see the module notes); ``seconds`` is the time it took."""

    id: str
    model: str
    kind: str
    seconds: float
    batch: int = 1
    input_len: int = 1
    output_len: int = 1
    tp: int = 1
    weight_dtype: str = "bf16"
    activation_dtype: str = "bf16"
    layer: str | None = None
    source: str = ""

    def __post_init__(self) -> None:
        where = f"measurement {shorten(self.id)}"
        if self.kind not in KINDS:
            raise InvalidInputError(f"{where}: kind: expected one of {', '.join(KINDS)}, got "
                                    f"{shorten(self.kind)}")
        for name in ("batch", "input_len", "output_len", "tp"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"{where}: {name}: expected a whole number >= 1, got "
                                        f"{shorten(value)}")
        if not (isinstance(self.seconds, float | int) and math.isfinite(self.seconds)
                and self.seconds > 0):
            raise InvalidInputError(f"{where}: measured: expected a time > 0, got "
                                    f"{shorten(self.seconds)}")
        for name in ("weight_dtype", "activation_dtype"):
            if getattr(self, name) not in DTYPE_BYTES:
                raise InvalidInputError(f"{where}: {name}: unknown dtype "
                                        f"{shorten(getattr(self, name))} (known: "
                                        f"{', '.join(DTYPE_BYTES)})")
        if self.kind == "layer" and not self.layer:
            raise InvalidInputError(f"{where}: a layer measurement names its layer")


# --------------------------------------------------------------------------- reading

_COLUMNS = ("id", "model", "kind", "batch", "input_len", "output_len", "tp", "weight_dtype",
            "activation_dtype", "measured", "unit")
_OPTIONAL = ("gpus", "layer", "source")


def _whole(row: dict[str, str], name: str, where: str, default: int | None = None) -> int:
    text = (row.get(name) or "").strip()
    if not text and default is not None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise InvalidInputError(f"{where}: {name}: expected a whole number, got "
                                f"{shorten(text)}") from None
    if value < 1:
        raise InvalidInputError(f"{where}: {name}: expected a whole number >= 1, got {value}")
    return value


def _seconds(row: dict[str, str], kind: str, batch: int, output_len: int, gpus: int,
             where: str) -> float:
    """The measured figure as the setting's time in seconds."""
    text, unit = (row.get("measured") or "").strip(), (row.get("unit") or "").strip()
    try:
        value = float(text)
    except ValueError:
        raise InvalidInputError(f"{where}: measured: expected a number, got "
                                f"{shorten(text)}") from None
    if not math.isfinite(value) or value <= 0:
        raise InvalidInputError(f"{where}: measured: expected a number > 0, got {shorten(text)}")
    if kind == "throughput":
        if unit not in _THROUGHPUT_UNITS:
            raise InvalidInputError(f"{where}: unit: a throughput is in "
                                    f"{' or '.join(_THROUGHPUT_UNITS)}, got {shorten(unit)}")
        total = value * (gpus if unit == "tok/s/gpu" else 1)
        return batch * output_len / total
    if unit not in _UNITS:
        raise InvalidInputError(f"{where}: unit: a time is in {', '.join(_UNITS)}, got "
                                f"{shorten(unit)}")
    return value * _UNITS[unit]


def read_measurements(path: str | os.PathLike[str]) -> list[Measurement]:
    """Measurements from a CSV with the columns id, model, kind, batch, input_len, output_len,
    tp, weight_dtype, activation_dtype, measured, unit (and optionally gpus, layer, source).
    ``unit``: s, ms or us for times; tok/s or tok/s/gpu for a throughput (per GPU: times
    ``gpus``, default tp)."""
    p = Path(path)
    where = display_path(p)
    try:
        text = p.read_text(encoding="utf-8-sig")  # a spreadsheet's export may start with a BOM
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"{where}: cannot read ({exc})") from None
    reader = csv.DictReader(line for line in text.splitlines() if not line.startswith("#"))
    header = reader.fieldnames or []
    missing = [c for c in _COLUMNS if c not in header]
    if missing:
        raise InvalidInputError(f"{where}: missing column {missing[0]!r} (columns: "
                                f"{', '.join(_COLUMNS)}; optional: {', '.join(_OPTIONAL)})")
    out: list[Measurement] = []
    for number, row in enumerate(reader, start=2):
        at = f"{where}:{number}"
        kind = (row.get("kind") or "").strip()
        batch = _whole(row, "batch", at)
        output_len = _whole(row, "output_len", at, 1)
        tp = _whole(row, "tp", at, 1)
        gpus = _whole(row, "gpus", at, tp)
        if kind not in KINDS:
            raise InvalidInputError(f"{at}: kind: expected one of {', '.join(KINDS)}, got "
                                    f"{shorten(kind)}")
        if None in row:  # more cells than columns: a comma inside a cell
            raise InvalidInputError(f"{at}: {len(header) + len(row[None])} cells for "
                                    f"{len(header)} columns (quote a cell that holds a comma)")
        try:
            out.append(Measurement(
                id=(row.get("id") or f"row{number}").strip(),
                model=(row.get("model") or "").strip(), kind=kind,
                seconds=_seconds(row, kind, batch, output_len, gpus, at), batch=batch,
                input_len=_whole(row, "input_len", at), output_len=output_len, tp=tp,
                weight_dtype=(row.get("weight_dtype") or "bf16").strip(),
                activation_dtype=(row.get("activation_dtype") or "bf16").strip(),
                layer=(row.get("layer") or "").strip() or None,
                source=(row.get("source") or "").strip()))
        except InvalidInputError as exc:
            if str(exc).startswith(at):
                raise
            raise InvalidInputError(f"{at}: {exc.reason}") from None
    if not out:
        raise InvalidInputError(f"{where}: no measurements (one row per measured setting)")
    return out


def measurements_from_profile(path: str | os.PathLike[str],
                              model: str | None = None) -> list[Measurement]:
    """One ``layer`` measurement per layer of a ``cachepart profile`` output (a prefill). The
    profile names its model; ``model`` gives the spec YAML or config.json it timed where that
    name is not a zoo model."""
    from ..frontend.profiles import load_profile

    profile = load_profile(path)
    where = display_path(Path(path))
    if "source" in profile.extra:  # a torch module factory's: no architecture to price
        raise InvalidInputError(f"{where}: a torch module's profile; calibrate takes a profile "
                                "of a zoo decoder, a spec YAML or an HF config.json, whose "
                                "layers the cost model can price", field="data")
    wl = profile.workload
    phase = wl.get("phase", "prefill")
    if phase != "prefill":
        raise InvalidInputError(f"{where}: workload.phase: a profile times a prefill, got "
                                f"{shorten(phase)}", field="data")
    dtype = str(wl.get("dtype", "bf16"))
    if dtype not in DTYPE_BYTES:
        raise InvalidInputError(f"{where}: workload.dtype: unknown dtype {shorten(dtype)}",
                                field="dtype")
    batch, seq = wl.get("batch", 1), wl.get("seq_len", 2048)
    for name, value in (("batch", batch), ("seq_len", seq)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidInputError(f"{where}: workload.{name}: expected a whole number >= 1, "
                                    f"got {shorten(value)}", field=name)
    source = model or profile.model
    return [Measurement(f"{profile.model}:{layer.name}", source, "layer",
                        layer.latency_s, batch=batch, input_len=seq, weight_dtype=dtype,
                        activation_dtype=dtype, layer=layer.name, source=where)
            for layer in profile.layers if layer.latency_s > 0]


# --------------------------------------------------------------------------- predicting

@dataclass(frozen=True)
class _Part:
    """One forward (a prefill or a decode step) of a setting: its distinct layers' terms with
    how many layers share them, its all-reduce seconds, and how often it runs."""

    groups: tuple[tuple[LayerTerms, int], ...]
    allreduce_s: float
    repeats: float


@dataclass(frozen=True)
class PreparedMeasurement:
    """A measurement with its terms worked out, ready to be priced under any factors."""

    measurement: Measurement
    tp: int
    parts: tuple[_Part, ...]

    def seconds(self, factors: CostFactors) -> float:
        total = 0.0
        for part in self.parts:
            time = part.allreduce_s
            for terms, count in part.groups:
                fixed = terms.kernels * factors.kernel_s
                time += count * ((terms_latency(terms, factors) - fixed) / self.tp + fixed)
            total += part.repeats * time
        return total


def _forward(m: Measurement, device: Device, model: tuple[str, list[LayerDesc]], phase: str,
             seq: int, layer: str | None = None) -> tuple[tuple[tuple[LayerTerms, int], ...], float]:
    """One forward of ``model`` (its name and layers) at ``phase`` and ``seq``: its distinct
    layers' terms with their counts, and its all-reduce seconds on ``m.tp`` devices."""
    from ..frontend.lower import tensor_parallel_for
    from ..frontend.sources import graph_from_layers

    workload = Workload(batch=m.batch, seq_len=seq, phase=phase,  # type: ignore[arg-type]
                        weight_dtype=m.weight_dtype, activation_dtype=m.activation_dtype)
    name, layers = model
    graph, fps = graph_from_layers(name, layers, workload, device)
    if layer is not None:
        chosen = [fp for fp in fps if fp.name == layer]
        if not chosen:
            raise InvalidInputError(f"measurement {shorten(m.id)}: model {name} has no layer "
                                    f"{shorten(layer)}", field="layer")
        fps = chosen
    counts = Counter(layer_terms(fp, device, workload) for fp in fps)
    allreduce = 0.0
    if m.tp > 1 and layer is None:
        tp = tensor_parallel_for(graph, [m.tp], devices_per_node=max(8, m.tp), link=device.link)
        allreduce = tp.allreduce_s(0, len(fps), m.tp)
    return tuple(counts.items()), allreduce


def prepare(m: Measurement, device: Device) -> PreparedMeasurement:
    """Work out a measurement's terms on ``device`` (its peaks, bandwidths and link); an error
    names the measurement."""
    try:
        return _prepare(m, device)
    except InvalidInputError as exc:
        if str(exc).startswith("measurement "):
            raise
        raise InvalidInputError(f"measurement {shorten(m.id)}: {exc}") from None


def _prepare(m: Measurement, device: Device) -> PreparedMeasurement:
    from ..frontend.sources import model_layers

    name, layers, _spec, _kind = model_layers(m.model, "block", None, None)
    model = (name, layers)
    if m.kind in ("layer", "prefill", "decode"):
        phase = "decode" if m.kind == "decode" else "prefill"
        groups, ar = _forward(m, device, model, phase, m.input_len,
                              m.layer if m.kind == "layer" else None)
        return PreparedMeasurement(m, m.tp, (_Part(groups, ar, 1.0),))
    parts = [_Part(*_forward(m, device, model, "prefill", m.input_len), 1.0)]
    if m.output_len > 1:
        context = m.input_len + m.output_len // 2
        parts.append(_Part(*_forward(m, device, model, "decode", context),
                           float(m.output_len - 1)))
    return PreparedMeasurement(m, m.tp, tuple(parts))


def predict(m: Measurement, device: Device) -> float:
    """The predicted seconds of a measurement's setting with the device's own factors."""
    return prepare(m, device).seconds(device.factors)


# --------------------------------------------------------------------------- fitting

@dataclass(frozen=True)
class Calibration:
    """A fit's outcome: the factors, and each measurement's prediction under them."""

    factors: CostFactors
    fitted: tuple[str, ...]
    """The factors the fit moved (``matmul.fp8``, ``attention.default``, ``memory``, ...)."""
    rows: tuple[tuple[Measurement, float], ...]
    """(measurement, predicted seconds) under the fitted factors."""
    start_rows: tuple[tuple[Measurement, float], ...] = field(default=())
    """The same under the starting factors."""
    at_bound: tuple[str, ...] = ()
    """Fitted factors that ended at a bound of their range (the data did not determine them)."""

    @property
    def fitted_values(self) -> dict[str, float]:
        """The fitted figures by device-file path (``efficiency.matmul.bf16``, ...)."""
        return {path: _at_path(self.factors, path) for name in self.fitted
                for path in _paths(name)}

    @property
    def warnings(self) -> list[str]:
        """What the fit could not determine, in words."""
        out = []
        if len(self.rows) < len(self.fitted):
            out.append(f"{len(self.rows)} measurements for {len(self.fitted)} factors "
                       f"({', '.join(self.fitted)}): the fit is underdetermined; give more "
                       "settings or fit fewer factors (--fit)")
        if self.at_bound:
            out.append(f"{', '.join(self.at_bound)} ended at a bound of the range "
                       f"({_bounds_text(self.at_bound)}): the measurements push past what the "
                       "model allows, and another factor may be compensating")
        return out

    @staticmethod
    def _stats(rows: Sequence[tuple[Measurement, float]]) -> dict[str, float]:
        logs = np.array([math.log(p / m.seconds) for m, p in rows])
        ratios = np.exp(np.abs(logs))
        return {"rms_log_residual": float(np.sqrt(np.mean(logs**2))),
                "median_ratio": float(np.median(ratios)), "worst_ratio": float(ratios.max())}

    @property
    def stats(self) -> dict[str, float]:
        """rms of log(predicted / measured); the median and worst max(p/m, m/p)."""
        return self._stats(self.rows)

    @property
    def start_stats(self) -> dict[str, float]:
        return self._stats(self.start_rows) if self.start_rows else {}

    def residuals(self) -> list[dict[str, Any]]:
        return [{"id": m.id, "kind": m.kind, "measured_s": m.seconds, "predicted_s": p,
                 "ratio": p / m.seconds} for m, p in self.rows]


def _paths(name: str) -> tuple[str, ...]:
    """The device-file paths a fitted factor sets: ``matmul.fp16`` stands for both 16-bit
    dtypes (same tensor-core rate), ``kernel_s`` is the overhead."""
    if name == "memory":
        return ("efficiency.memory",)
    if name == "kernel_s":
        return ("overhead.kernel_s",)
    cls, dtype = name.split(".")
    return tuple(f"efficiency.{cls}.{d}" for d in (("bf16", "fp16") if dtype == "fp16"
                                                    else (dtype,)))


def _at_path(factors: CostFactors, path: str) -> float:
    """The figure at a device-file path (``efficiency.matmul.fp8``, ``overhead.kernel_s``)."""
    if path == "efficiency.memory":
        return factors.memory
    if path == "overhead.kernel_s":
        return factors.kernel_s
    _, cls, dtype = path.split(".")
    return factors.matmul_for(dtype) if cls == "matmul" else factors.attention_for(dtype)


def _parameters(dtypes: Iterable[str], classes: Sequence[str]) -> list[str]:
    """Names of the factors to fit: matmul per compute dtype in the data (16-bit dtypes share
    one), attention, memory, overhead."""
    names: list[str] = []
    if "matmul" in classes:
        keys = sorted({"fp16" if d in ("bf16", "fp16") else d for d in dtypes})
        names += [f"matmul.{k}" for k in keys]
    if "attention" in classes:
        names.append("attention.default")
    if "memory" in classes:
        names.append("memory")
    if "overhead" in classes:
        names.append("kernel_s")
    return names


def _value(factors: CostFactors, name: str) -> float:
    if name == "kernel_s":
        return max(factors.kernel_s, 1e-6)  # a zero start cannot move in log space
    return _at_path(factors, _paths(name)[-1])


def _with(factors: CostFactors, values: dict[str, float]) -> CostFactors:
    tables = {"matmul": dict(factors.matmul), "attention": dict(factors.attention)}
    memory, kernel_s = factors.memory, factors.kernel_s
    for name, value in values.items():
        for path in _paths(name):
            if path == "efficiency.memory":
                memory = value
            elif path == "overhead.kernel_s":
                kernel_s = value
            else:
                _, cls, dtype = path.split(".")
                tables[cls][dtype] = value
    return replace(factors, matmul=tables["matmul"], attention=tables["attention"],
                   memory=memory, kernel_s=kernel_s)


def _bounds(name: str) -> tuple[float, float]:
    return _BOUNDS["kernel_s" if name == "kernel_s" else "efficiency"]


def _bounds_text(names: Sequence[str]) -> str:
    return "; ".join(f"{name} in [{_bounds(name)[0]:g}, {_bounds(name)[1]:g}]" for name in names)


def _at_bound(name: str, value: float) -> bool:
    low, high = _bounds(name)
    return value <= low * (1 + 1e-3) or value >= high * (1 - 1e-3)


def _clip(name: str, value: float) -> float:
    low, high = _bounds(name)
    return min(max(value, low), high)


def _nelder_mead(f: Callable[[np.ndarray], float], x0: np.ndarray, *, steps: int = 4000,
                 scale: float = 0.5, tol: float = 1e-12) -> np.ndarray:
    """Minimise f from x0 (deterministic; standard reflection, expansion, contraction, shrink)."""
    n = len(x0)
    simplex = [x0.copy()] + [x0 + scale * np.eye(n)[i] for i in range(n)]
    values = [f(x) for x in simplex]
    for _ in range(steps):
        order = np.argsort(values, kind="stable")
        simplex = [simplex[i] for i in order]
        values = [values[i] for i in order]
        if values[-1] - values[0] <= tol * (abs(values[0]) + tol):
            break
        centroid = np.mean(simplex[:-1], axis=0)
        worst = simplex[-1]
        reflected = centroid + (centroid - worst)
        fr = f(reflected)
        if fr < values[0]:
            expanded = centroid + 2.0 * (centroid - worst)
            fe = f(expanded)
            simplex[-1], values[-1] = (expanded, fe) if fe < fr else (reflected, fr)
        elif fr < values[-2]:
            simplex[-1], values[-1] = reflected, fr
        else:
            contracted = centroid + 0.5 * (worst - centroid)
            fc = f(contracted)
            if fc < values[-1]:
                simplex[-1], values[-1] = contracted, fc
            else:
                best = simplex[0]
                simplex = [best] + [best + 0.5 * (x - best) for x in simplex[1:]]
                values = [values[0]] + [f(x) for x in simplex[1:]]
    return simplex[int(np.argmin(values))]


def fit_factors(measurements: Sequence[Measurement], device: Device, *,
                classes: Sequence[str] = FIT_CLASSES, prior: float = PRIOR) -> Calibration:
    """Fit ``device``'s factors (the classes named) to the measurements (module notes)."""
    if not measurements:
        raise InvalidInputError("no measurements to fit", field="measurements")
    unknown = [c for c in classes if c not in FIT_CLASSES]
    if unknown or not classes:
        raise InvalidInputError(f"expected some of {', '.join(FIT_CLASSES)}, got "
                                f"{shorten(','.join(classes))}", field="fit")
    prepared = [prepare(m, device) for m in measurements]
    start = device.factors
    names = _parameters((m.activation_dtype for m in measurements), classes)
    x0 = np.log([_clip(n, _value(start, n)) for n in names])
    logs_measured = np.log([m.seconds for m in measurements])

    def factors_at(x: np.ndarray) -> CostFactors:
        return _with(start, {n: _clip(n, math.exp(v)) for n, v in zip(names, x, strict=True)})

    def loss(x: np.ndarray) -> float:
        f = factors_at(x)
        predicted = np.log([p.seconds(f) for p in prepared])
        clipped = np.log([_clip(n, math.exp(v)) for n, v in zip(names, x, strict=True)])
        return float(np.sum((predicted - logs_measured) ** 2)
                     + prior * np.sum((clipped - x0) ** 2) + np.sum((x - clipped) ** 2))

    x = x0
    for scale in (0.7, 0.2, 0.05):  # restarts: a collapsed simplex cannot leave a kink
        x = _nelder_mead(loss, x, scale=scale)
    fitted = factors_at(x)
    rows = tuple((p.measurement, p.seconds(fitted)) for p in prepared)
    start_rows = tuple((p.measurement, p.seconds(start)) for p in prepared)
    ends = tuple(n for n, v in zip(names, x, strict=True) if _at_bound(n, _clip(n, math.exp(v))))
    return Calibration(fitted, tuple(names), rows, start_rows, ends)
