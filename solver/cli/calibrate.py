"""``cachepart calibrate DATA --device NAME -o my-device.yaml``: fit a device's efficiencies and
kernel overhead to measured times, and write them as a device file.

DATA is a CSV of measured settings (solver/analysis/calibrate.py lists the columns) or a
``cachepart profile`` JSON. The output defines a device (default ``NAME-calibrated``) on top of
NAME with the fitted figures, each sourced to the fit, and the fit's residuals; name the file in
CACHEPART_DEVICES and plan with ``solve --device NAME-calibrated``.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from ..core.errors import InvalidInputError
from ..core.files import check_output_path, write_text_whole
from ..hardware.catalogue import ENV_VAR
from .args import warn
from .exit_codes import ExitCode

__all__ = ["register", "run"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "calibrate", help="fit a device's efficiencies and kernel overhead to measured times",
        description="Fit the cost model's efficiencies (matmul per compute dtype, attention, "
                    "memory) and per-kernel overhead of a catalogue device to measured times, "
                    "and write a device YAML with the fitted figures and the fit's residuals. "
                    f"Name it in {ENV_VAR} to plan with it.")
    p.add_argument("data", metavar="DATA",
                   help="a CSV of measurements (columns id, model, kind, batch, input_len, "
                        "output_len, tp, weight_dtype, activation_dtype, measured, unit; "
                        "kind: prefill, decode, generate, throughput or layer; unit: s, ms, us, "
                        "tok/s or tok/s/gpu) or a `cachepart profile` JSON")
    p.add_argument("--device", required=True, metavar="NAME",
                   help="the catalogue device the measurements ran on (see `cachepart devices`)")
    p.add_argument("--model", default=None, metavar="MODEL",
                   help="a profile DATA: the spec YAML or config.json it timed, where the "
                        "profile's model name is not a zoo model")
    p.add_argument("--name", default=None,
                   help="the fitted device's name (default: NAME-calibrated)")
    p.add_argument("--fit", default="matmul,attention,memory,overhead",
                   help="what to fit, comma-separated among matmul, attention, memory, overhead "
                        "(default: all)")
    p.add_argument("--output", "-o", required=True, metavar="YAML", help="device file to write")
    p.set_defaults(handler=run)
    return p


def run(args: argparse.Namespace) -> int:
    import yaml

    from ..analysis.calibrate import (
        FIT_CLASSES,
        fit_factors,
        measurements_from_profile,
        read_measurements,
    )
    from ..analysis.calibrate_io import calibration_yaml
    from ..hardware.catalogue import get_device

    device = get_device(args.device)
    name = args.name or f"{device.name}-calibrated"
    if not _NAME.match(name):
        raise InvalidInputError(f"expected letters, digits, '.', '_' or '-', got {name!r}",
                                field="name")
    classes = [c.strip() for c in args.fit.split(",") if c.strip()]
    bad = [c for c in classes if c not in FIT_CLASSES]
    if bad or not classes:
        raise InvalidInputError(f"expected some of {', '.join(FIT_CLASSES)}, got {args.fit!r}",
                                field="fit")
    check_output_path(args.output, "output")
    data = Path(args.data)
    if not data.is_file():
        raise InvalidInputError(f"{args.data}: no such file", field="data")
    if data.suffix.lower() == ".json":
        measurements = measurements_from_profile(data, args.model)
    elif args.model is not None:
        raise InvalidInputError("applies to a profile JSON; a CSV names each row's model",
                                field="model")
    else:
        measurements = read_measurements(data)
    calibration = fit_factors(measurements, device, classes=classes)
    doc = calibration_yaml(calibration, device, name, data.name)
    write_text_whole(args.output, "# written by cachepart calibrate\n"
                     + yaml.safe_dump(doc, sort_keys=False, width=100))
    stats, before = calibration.stats, calibration.start_stats
    print(f"{name}: {len(measurements)} measurements from {data.name} on {device.name}")
    print("fitted: " + ", ".join(_fitted_text(path, value)
                                 for path, value in calibration.fitted_values.items()))
    print(f"off by (the larger of predicted / measured and its inverse): median "
          f"{stats['median_ratio']:.3f}x, worst {stats['worst_ratio']:.3f}x (before: median "
          f"{before['median_ratio']:.3f}x, worst {before['worst_ratio']:.3f}x)")
    for row in calibration.residuals():
        print(f"  {row['id']}: measured {row['measured_s']:.4g} s, predicted "
              f"{row['predicted_s']:.4g} s, ratio {row['ratio']:.3f}")
    print(f"device file written to {args.output}; plan with it: {ENV_VAR}={args.output} "
          f"cachepart solve MODEL --device {name}")
    for message in calibration.warnings:
        warn(message)
    return ExitCode.OK


def _fitted_text(path: str, value: float) -> str:
    """``matmul fp8 0.414``, ``attention 0.700``, ``memory 1.000``, ``kernel 6.71 us``."""
    if path == "overhead.kernel_s":
        return f"kernel {value * 1e6:.2f} us"
    label = path.removeprefix("efficiency.").removesuffix(".default").replace(".", " ")
    return f"{label} {value:.3f}"
