"""Exit codes, and the one table that maps errors to them, for every command line of the
package (``cachepart`` and the runner under torchrun)."""

from __future__ import annotations

from enum import IntEnum

from ..core.errors import CachepartError, InfeasibleError, InvalidInputError, SolverError

__all__ = ["ERROR_EXITS", "ExitCode", "exit_for"]


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1
    """The runner: a rank failed, or --verify found a difference."""
    BAD_INPUT = 2
    INFEASIBLE = 3
    SOLVER = 4
    INTERRUPTED = 130
    """Ctrl-C (128 + SIGINT), the shell's convention."""


ERROR_EXITS: tuple[tuple[type[CachepartError], ExitCode, str], ...] = (
    # (error type, exit code, the word that starts its one-line message), first match wins
    (InvalidInputError, ExitCode.BAD_INPUT, "error"),
    (InfeasibleError, ExitCode.INFEASIBLE, "infeasible"),
    (SolverError, ExitCode.SOLVER, "solver error"),
    (CachepartError, ExitCode.SOLVER, "error"),
)


def exit_for(error: CachepartError) -> tuple[ExitCode, str]:
    """The exit code of ``error`` and the word its message starts with."""
    for kind, code, word in ERROR_EXITS:
        if isinstance(error, kind):
            return code, word
    raise TypeError(f"not a cachepart error: {error!r}")  # unreachable: the last row is the base
