"""``cachepart inspect MODEL``: parameters and per-layer footprints of a model."""

from __future__ import annotations

import argparse
import json

from ..core.units import format_bytes
from .args import add_model_args, load_from_args
from .exit_codes import ExitCode
from .tables import format_table

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("inspect", help="parameters and per-layer footprints of a model")
    add_model_args(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(handler=run)
    return p


def run(args: argparse.Namespace) -> int:
    loaded = load_from_args(args)
    layers = loaded.graph.layers()
    params = loaded.params
    weight = int(sum(layer["weight_bytes"] for layer in layers))
    rows = [{"name": layer["name"], "params": layer.get("params"),
             "weight_bytes": layer["weight_bytes"], "activation_bytes": layer["activation_bytes"],
             "buffer_bytes": layer.get("buffer_bytes", 0),
             "kv_cache_bytes": layer.get("kv_cache_bytes", 0),
             "flops": layer.get("flops"), "latency_s": layer["latency_s"]} for layer in layers]
    quant = getattr(loaded.spec.arch, "quantization", None) if loaded.spec else None
    if args.json:
        doc = {"model": loaded.graph.name, "source_kind": loaded.kind, "params": params,
               "quantization": quant.label() if quant else None,
               "declared_params": loaded.spec.declared_params if loaded.spec else None,
               "weight_bytes": weight, "workload": loaded.graph.metadata.get("workload"),
               "device": loaded.graph.metadata.get("device"), "warnings": loaded.warnings,
               "layers": rows}
        print(json.dumps(doc, indent=2))
        return ExitCode.OK
    for row in rows:
        for col in ("weight_bytes", "activation_bytes", "buffer_bytes", "kv_cache_bytes"):
            row[col] = format_bytes(row[col])
    print(f"{loaded.graph.name}: {len(rows)} layers, "
          f"{'?' if params is None else f'{params:,}'} parameters, weights {format_bytes(weight)}"
          + (f" (quantized: {quant.label()})" if quant else ""))
    print(format_table(rows, float_format=lambda v: f"{v:.4g}"))
    return ExitCode.OK
