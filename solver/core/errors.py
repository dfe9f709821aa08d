"""The error tree. Every message carries the offending values so a user can act on it.

An error about one input names it with ``field``, the library's parameter name
(``time_limit_s``, ``max_stages``, ``tp_degrees``...); ``str(error)`` is ``"field: reason"``.
Front ends that call the parameter something else (the CLI's ``--time-limit``) print
``reason`` under their own name for ``field``, so no message has to be rewritten.
"""

from __future__ import annotations

__all__ = [
    "CachepartError",
    "InfeasibleError",
    "InvalidInputError",
    "SolverError",
]


class CachepartError(Exception):
    """Base of every error raised on purpose by cachepart."""

    def __init__(self, reason: str, *, field: str | None = None) -> None:
        self.reason = reason
        self.field = field
        super().__init__(f"{field}: {reason}" if field else reason)


class InvalidInputError(CachepartError, ValueError):
    """Input that cannot be used: a missing, negative or non-numeric field, a bad file, an
    option a method does not support."""


class InfeasibleError(CachepartError):
    """No partition satisfies the constraints, where a plan was required (building a plan from
    an infeasible answer); the message is the diagnosis. Solving itself returns an INFEASIBLE
    Partition instead, since infeasible is an answer."""


class SolverError(CachepartError, RuntimeError):
    """A solver backend failed, is not installed, or found no solution within its time limit."""
