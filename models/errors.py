"""Errors raised by models/ (solver/ maps them to its own InvalidInputError)."""

from __future__ import annotations

__all__ = ["SpecError"]


class SpecError(ValueError):
    """A model spec, config or module that cannot be read; the message names the field."""
