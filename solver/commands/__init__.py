"""Sub-commands that live in their own modules. Each module has
``register(subparsers) -> None``, adding its parser with ``set_defaults(handler=fn)`` where
``fn(args) -> int`` returns the exit code. solver/cli.py wires every module listed here."""

from __future__ import annotations

__all__ = ["COMMAND_MODULES"]

COMMAND_MODULES: tuple[str, ...] = ("batch", "devices", "paper", "plot", "profile", "run", "simulate")
