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
    fitted = calibration.fitted_values
    fit_source = _source(calibration, data)

    def source(path: str) -> str:
        """The fit's source for a fitted figure, else the base device's."""
        return fit_source if path in fitted else \
            device.sources.get(path, device.sources.get("efficiency", "[P] base device"))

    # written whole (a base whose efficiency is one number is replaced, not merged); the base's
    # default stays the default unless it was fitted
    efficiency: dict[str, Any] = {
        cls: {"default": float(table.get("default", 1.0)),
              **{dtype: round(float(value), 4) for dtype, value in table.items()}}
        for cls, table in (("matmul", f.matmul), ("attention", f.attention))}
    efficiency["memory"] = round(f.memory, 4)
    sources = {f"efficiency.{cls}.{dtype}": source(f"efficiency.{cls}.{dtype}")
               for cls in ("matmul", "attention") for dtype in efficiency[cls]}
    sources["efficiency.memory"] = source("efficiency.memory")
    entry_doc: dict[str, Any] = {"base": device.name,
                                 "description": f"{device.description or device.name}, "
                                                f"calibrated"}
    entry_doc["efficiency"] = efficiency
    if "overhead.kernel_s" in fitted:
        entry_doc["overhead"] = {"kernel_s": float(f"{f.kernel_s:.4g}")}
        sources["overhead.kernel_s"] = fit_source
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
