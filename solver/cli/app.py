"""The ``cachepart`` parser and the one place errors become exit codes.

Exit codes (exit_codes.py): 0 done; 2 bad input; 3 infeasible (a one-line diagnosis); 4 solver
failure; 130 interrupted. A library error names the parameter it is about (``field``); it is
printed under the option that sets that parameter in the command that ran, found in the
command's own parser, so ``time_limit_s`` reads ``--time-limit``.

Ctrl-C, wherever it lands once this module runs (parsing, loading, a solver, a torchrun launch),
is one line, exit 130; for a solve the line says how long it ran and the best plan and bound it
had, which it did not write. The solvers and ``cachepart run`` stop their searches and processes
before the interrupt reaches here.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections.abc import Sequence

from ..core.errors import CachepartError
from . import COMMANDS
from .args import Parser, Progress
from .exit_codes import ExitCode, exit_for

__all__ = ["FIELD_OPTIONS", "build_parser", "describe", "interrupted", "main"]

FIELD_OPTIONS: dict[str, str] = {
    # library parameter -> the option's dest, where their names differ
    "time_limit_s": "time_limit",
    "max_stages": "devices",
    "capacity_bytes": "capacity",
    "backend": "solver",
    "tp_degrees": "tp",
    "seq_len": "seq",
    "activation_dtype": "dtype",
}


def build_parser() -> Parser:
    parser = Parser(prog="cachepart", description=(
        "Partition a model's layers into contiguous stages, one per device, so each stage fits "
        "the device's memory and the slowest stage is as fast as possible."))
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name in COMMANDS:
        command = importlib.import_module(f"solver.cli.{name}").register(sub)
        command.set_defaults(command_parser=command)
    return parser


def _option(parser: argparse.ArgumentParser, field: str) -> str | None:
    """The option that sets ``field`` in ``parser``: its own name, the table's, or the plural
    (a command that takes several methods names ``method`` errors by ``--methods``)."""
    dest = FIELD_OPTIONS.get(field, field)
    for name in (dest, f"{dest}s"):
        for action in parser._actions:
            if action.dest == name and action.option_strings:
                return max(action.option_strings, key=len)
    return None


def describe(error: CachepartError, parser: argparse.ArgumentParser | None) -> str:
    """'error: --time-limit: must be ...': the error's word, then its message with the field
    named as the command's option when it has one."""
    _, word = exit_for(error)
    option = _option(parser, error.field) if parser is not None and error.field else None
    text = f"{option}: {error.reason}" if option else str(error)
    return f"{word}: {text}"


def interrupted(exc: KeyboardInterrupt, elapsed_s: float,
                args: argparse.Namespace | None) -> str:
    """The one line for Ctrl-C: 'cachepart: interrupted', and for a solve 'cachepart:
    interrupted after 12.3 s; best 0.0123 s, bound 0.0119 s (not written)': what it had found,
    and that the plan it would have written (-o) was not."""
    if not isinstance(exc, Progress.Interrupted):
        return "cachepart: interrupted"
    line = f"cachepart: interrupted after {elapsed_s:.1f} s; {exc.progress.summary()}"
    latest = exc.progress.latest
    if latest is not None and latest.objective is not None and getattr(args, "output", None):
        line += " (not written)"
    return line


def main(argv: Sequence[str] | None = None) -> int:
    start = time.perf_counter()
    args: argparse.Namespace | None = None
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help, or a usage error already printed in one line
            return int(exc.code or 0)
        try:
            return int(args.handler(args))
        except CachepartError as exc:
            print(f"cachepart: {describe(exc, getattr(args, 'command_parser', None))}",
                  file=sys.stderr)
            return exit_for(exc)[0]
        except BrokenPipeError:  # output piped into `head`: not an error
            sys.stderr.close()
            return ExitCode.OK
    except KeyboardInterrupt as exc:
        print(interrupted(exc, time.perf_counter() - start, args), file=sys.stderr, flush=True)
        return ExitCode.INTERRUPTED
