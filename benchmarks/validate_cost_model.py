"""Check the cost model against published LLM inference measurements (README: "Validation").

    python benchmarks/validate_cost_model.py            # the default catalogue, every row
    python benchmarks/validate_cost_model.py --fit      # refit each device on its fit half
    python benchmarks/validate_cost_model.py --small    # a few rows (the test suite runs this)

Rows come from benchmarks/data/validation.csv (settings and figures; the quotes and links are in
published_measurements.csv). The split is fixed by a rule, not by hand: within each device, in
id order, rows alternate fit / held-out, starting with fit. The catalogue's efficiencies and
kernel overhead for h100-sxm and a100-80gb are what ``--fit`` gives on the fit half (as
``cachepart calibrate`` would); the held-out half is what judges them. Targets (issue 14): every
held-out prediction within 1.5x of its measurement, their median within 1.2x.

Writes results/validation.csv and results/validation.md (the README's table); prints the
summary. ``--fit`` also writes results/validation_fit.yaml, a device file with the fitted
figures (CACHEPART_DEVICES format). ``--fit`` fits the matmul efficiency per dtype, the memory
efficiency and the kernel overhead (``FIT``); attention keeps its planning default.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from solver.analysis import (  # noqa: E402
    Measurement,
    calibration_yaml,
    fit_factors,
    predict,
    read_measurements,
)
from solver.hardware import CostFactors, get_device  # noqa: E402

DATA = ROOT / "benchmarks" / "data" / "validation.csv"
RESULTS = ROOT / "results"
SMALL = ("T05", "T08", "L03", "N02")
TARGET_WORST, TARGET_MEDIAN = 1.5, 1.2
FIT = ("matmul", "memory", "overhead")
"""What --fit fits. Not attention: the published rows are mostly prompts of 2,048 tokens or
fewer, where attention is a small share, and fitted it runs to its bound (1.0 on the H100) with
the same residual (rms log 0.113 against 0.114 without it); it keeps its planning default."""
DEFAULTS = CostFactors()
"""Planning defaults: 0.7 of peak for every class and dtype, the full bandwidth, no overhead."""


def rows_of(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as fh:
        return list(csv.DictReader(line for line in fh if not line.startswith("#")))


def split(rows: Sequence[dict[str, str]]) -> dict[str, str]:
    """id -> fit | held-out: alternate within each device, in id order, fit first."""
    out: dict[str, str] = {}
    for device in sorted({r["device"] for r in rows}):
        ids = sorted(r["id"] for r in rows if r["device"] == device)
        out.update({i: "fit" if k % 2 == 0 else "held-out" for k, i in enumerate(ids)})
    return out


def ratio_text(r: float) -> str:
    return f"{r:.2f}"


def summary(label: str, ratios: Sequence[float]) -> str:
    if not ratios:
        return f"{label}: no rows"
    worst = max(max(r, 1 / r) for r in ratios)
    median = statistics.median(max(r, 1 / r) for r in ratios)
    ok = worst <= TARGET_WORST and median <= TARGET_MEDIAN
    return (f"{label}: {len(ratios)} rows, median {median:.2f}x, worst {worst:.2f}x "
            f"(target: median <= {TARGET_MEDIAN}x, worst <= {TARGET_WORST}x: "
            f"{'met' if ok else 'NOT met'})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fit", action="store_true",
                    help="refit h100-sxm and a100-80gb on their fit halves first")
    ap.add_argument("--small", action="store_true", help=f"only rows {', '.join(SMALL)}")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)

    rows = rows_of(args.data)
    halves = split(rows)
    measurements = {m.id: m for m in read_measurements(args.data)}
    devices = {r["id"]: r["device"] for r in rows}
    if args.small:
        rows = [r for r in rows if r["id"] in SMALL]
    args.out.mkdir(parents=True, exist_ok=True)

    chosen = {name: get_device(name) for name in sorted({r["device"] for r in rows})}
    if args.fit:
        docs = []
        for name, device in chosen.items():
            fit_rows = [measurements[r["id"]] for r in rows
                        if r["device"] == name and halves[r["id"]] == "fit"]
            # from the planning defaults (what the catalogue held before it was fitted), so
            # that the fit reproduces the catalogue's figures
            calibration = fit_factors(fit_rows, dataclasses.replace(device, factors=DEFAULTS),
                                      classes=FIT)
            docs.append(calibration_yaml(calibration, device, name, f"{args.data.name} (fit half)"))
            f = calibration.factors
            print(f"{name}: fitted on {', '.join(m.id for m in fit_rows)}: matmul "
                  f"{ {k: round(v, 3) for k, v in f.matmul.items()} }, attention "
                  f"{ {k: round(v, 3) for k, v in f.attention.items()} }, memory "
                  f"{f.memory:.3f}, kernel {f.kernel_s * 1e6:.2f} us; fit half "
                  f"{calibration.stats['median_ratio']:.2f}x median, "
                  f"{calibration.stats['worst_ratio']:.2f}x worst")
            for message in calibration.warnings:
                print(f"  warning: {message}")
            chosen[name] = dataclasses.replace(device, factors=f)
        import yaml

        (args.out / "validation_fit.yaml").write_text(
            yaml.safe_dump({"schema": "cachepart-devices/1",
                            "devices": {k: v for d in docs for k, v in d["devices"].items()}},
                           sort_keys=False), encoding="utf-8")

    table: list[dict[str, str]] = []
    for r in rows:
        m: Measurement = measurements[r["id"]]
        device = chosen[devices[m.id]]
        predicted = predict(m, device)
        ratio = predicted / m.seconds
        plain = predict(m, dataclasses.replace(device, factors=DEFAULTS)) / m.seconds
        table.append({"id": m.id, "half": halves[m.id], "device": devices[m.id],
                      "model": Path(m.model).stem, "kind": m.kind, "batch": str(m.batch),
                      "input_len": str(m.input_len), "output_len": str(m.output_len),
                      "tp": str(m.tp), "dtype": f"{m.weight_dtype}/{m.activation_dtype}",
                      "measured_s": f"{m.seconds:.6g}", "predicted_s": f"{predicted:.6g}",
                      "ratio": f"{ratio:.3f}", "defaults_ratio": f"{plain:.3f}",
                      "source": r["source"]})
    suffix = "_small" if args.small else ""
    with (args.out / f"validation{suffix}.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)

    lines = ["| id | half | device | model | kind | batch | in | out | TP | dtype (w/a) | "
             "measured | predicted | ratio | ratio, defaults | source |", "|" + "---|" * 15]
    for t in table:
        lines.append(f"| {t['id']} | {t['half']} | {t['device']} | {t['model']} | {t['kind']} | "
                     f"{t['batch']} | {t['input_len']} | {t['output_len']} | {t['tp']} | "
                     f"{t['dtype']} | {_time(float(t['measured_s']))} | "
                     f"{_time(float(t['predicted_s']))} | {t['ratio']} | {t['defaults_ratio']} | "
                     f"{t['source']} |")
    held = [float(t["ratio"]) for t in table if t["half"] == "held-out"]
    fit = [float(t["ratio"]) for t in table if t["half"] == "fit"]
    plain = [float(t["defaults_ratio"]) for t in table if t["half"] == "held-out"]
    report = [summary("held-out", held), summary("fit", fit),
              summary("held-out with the planning defaults (0.7 of peak, no overhead)", plain)]
    (args.out / f"validation{suffix}.md").write_text(
        "\n".join(lines) + "\n\n" + "\n".join(f"- {x}" for x in report) + "\n", encoding="utf-8")
    for t in table:
        print(f"{t['id']:4} {t['half']:8} {t['device']:9} {t['model']:12} {t['kind']:10} "
              f"measured {_time(float(t['measured_s'])):>9} predicted "
              f"{_time(float(t['predicted_s'])):>9} ratio {t['ratio']}")
    print("\n".join(report))
    return 0


def _time(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.3g} s"
    return f"{seconds * 1e3:.3g} ms" if math.isfinite(seconds) else "-"


if __name__ == "__main__":
    raise SystemExit(main())
