"""The ``cachepart`` parser and the one place errors become exit codes.

Exit codes (exit_codes.py): 0 done; 2 bad input; 3 infeasible (a one-line diagnosis); 4 solver
failure; 130 interrupted. A library error names the parameter it is about (``field``); it is
printed under the option that sets that parameter in the command that ran, found in the
command's own parser, so ``time_limit_s`` reads ``--time-limit``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ..core.errors import CachepartError
from . import COMMANDS
from .args import Parser
from .exit_codes import ExitCode, exit_for

__all__ = ["FIELD_OPTIONS", "build_parser", "describe", "main"]

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


def main(argv: Sequence[str] | None = None) -> int:
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
    except KeyboardInterrupt:
        print("cachepart: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except BrokenPipeError:  # output piped into `head`: not an error
        sys.stderr.close()
        return ExitCode.OK
