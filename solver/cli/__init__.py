"""The ``cachepart`` command line: one module per sub-command, each with
``register(subparsers) -> parser`` (its handler set with ``set_defaults(handler=fn)``, ``fn(args)
-> int``), shared argument helpers in args.py, and one exit-code table (exit_codes.py) that
app.py applies to every error a handler raises."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["COMMANDS", "main"]

COMMANDS: tuple[str, ...] = ("solve", "compare", "show", "inspect", "zoo", "simulate", "export",
                             "plot", "batch", "run", "profile", "calibrate", "devices", "paper")
"""Sub-command modules, in the order ``--help`` lists them."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``cachepart`` with ``argv``; returns the exit code."""
    from .app import main as run

    return run(argv)
