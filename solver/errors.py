"""The error tree. Every message carries the offending values so a user can act on it."""

from __future__ import annotations

__all__ = [
    "CachepartError",
    "InfeasibleError",
    "InvalidInputError",
    "SolverError",
]


class CachepartError(Exception):
    """Base of every error raised on purpose by cachepart."""


class InvalidInputError(CachepartError, ValueError):
    """Input that cannot be used: a missing, negative or non-numeric field, a bad file."""


class InfeasibleError(CachepartError):
    """No partition satisfies the constraints; the message is the diagnosis."""


class SolverError(CachepartError, RuntimeError):
    """A solver backend failed or is not installed."""
