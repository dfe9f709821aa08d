"""``cachepart zoo``: the built-in models with their parameter counts."""

from __future__ import annotations

import argparse

from .exit_codes import ExitCode
from .tables import format_table

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("zoo", help="list the built-in models with their parameter counts")
    p.set_defaults(handler=run)
    return p


def run(args: argparse.Namespace) -> int:
    from models.zoo import load_zoo_model, zoo_names

    rows = []
    for name in zoo_names():
        spec = load_zoo_model(name)
        rows.append({"model": name, "params": f"{spec.params():,}",
                     "published": f"{spec.published_params:,}" if spec.published_params else "-",
                     "active": f"{spec.arch.active_params():,}",
                     "note": f"declared {spec.declared_params:,}" if spec.declared_params
                     else ""})
    print(format_table(rows, left=("model", "note")))
    return ExitCode.OK
