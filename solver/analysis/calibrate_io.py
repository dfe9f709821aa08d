"""A calibration written as a device file (the catalogue's format, for CACHEPART_DEVICES)."""

from __future__ import annotations

import datetime as _dt
from typing import Any

from ..hardware.catalogue import CATALOGUE_SCHEMA, Device
from .calibrate import Calibration

__all__ = ["calibration_yaml"]


def _source(calibration: Calibration, data: str) -> str:
    stats = calibration.stats
    return (f"[F] fitted by cachepart calibrate to {len(calibration.rows)} measurements of "
            f"{data} on {_dt.date.today().isoformat()}: median ratio {stats['median_ratio']:.3f}, "
            f"worst {stats['worst_ratio']:.3f}")


def calibration_yaml(calibration: Calibration, device: Device, name: str,
                     data: str) -> dict[str, Any]:
    """A device file defining ``name`` as ``device`` with the fitted factors, each sourced to
    the fit, and the fit's residuals under ``calibration``."""
    f = calibration.factors
    source = _source(calibration, data)
    efficiency: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for cls, table in (("matmul", f.matmul), ("attention", f.attention)):
        moved = {fit.split(".")[1] for fit in calibration.fitted if fit.startswith(cls + ".")}
        if "fp16" in moved and cls == "matmul":
            moved |= {"bf16"}
        # written whole (a base whose efficiency is one number is replaced, not merged); the
        # base's default stays the default unless it was fitted
        entry = {"default": float(table.get("default", 1.0))}
        sources[f"efficiency.{cls}.default"] = device.sources.get(
            f"efficiency.{cls}.default", device.sources.get("efficiency", "[P] base device"))
        for dtype, value in table.items():
            entry[dtype] = round(float(value), 4)
            sources[f"efficiency.{cls}.{dtype}"] = source if dtype in moved else \
                device.sources.get(f"efficiency.{cls}.{dtype}",
                                   device.sources.get("efficiency", "[P] base device"))
        efficiency[cls] = entry
    efficiency["memory"] = round(f.memory, 4)
    sources["efficiency.memory"] = source if "memory" in calibration.fitted else \
        device.sources.get("efficiency.memory", "[P] base device")
    entry_doc: dict[str, Any] = {"base": device.name,
                                 "description": f"{device.description or device.name}, "
                                                f"calibrated"}
    entry_doc["efficiency"] = efficiency
    if "kernel_s" in calibration.fitted:
        entry_doc["overhead"] = {"kernel_s": float(f"{f.kernel_s:.4g}")}
        sources["overhead.kernel_s"] = source
    entry_doc["sources"] = sources
    stats = calibration.stats
    entry_doc["calibration"] = {
        "data": data, "points": len(calibration.rows), "fitted": list(calibration.fitted),
        "rms_log_residual": round(stats["rms_log_residual"], 4),
        "median_ratio": round(stats["median_ratio"], 4),
        "worst_ratio": round(stats["worst_ratio"], 4),
        "before": {k: round(v, 4) for k, v in calibration.start_stats.items()},
        "warnings": calibration.warnings,
        "residuals": [{"id": r["id"], "kind": r["kind"],
                       "measured_s": float(f"{r['measured_s']:.6g}"),
                       "predicted_s": float(f"{r['predicted_s']:.6g}"),
                       "ratio": round(r["ratio"], 4)} for r in calibration.residuals()]}
    return {"schema": CATALOGUE_SCHEMA, "devices": {name: entry_doc}}
