"""Turn a MODEL argument into a LayerGraph. Today: a chain JSON file."""

from __future__ import annotations

from pathlib import Path

from .chain import load_chain
from .errors import InvalidInputError
from .graph import LayerGraph

__all__ = ["load_model"]


def load_model(source: str) -> LayerGraph:
    """Load a model from a chain JSON path."""
    path = Path(source)
    if path.suffix.lower() == ".json":
        return load_chain(path)
    if not path.exists():
        raise InvalidInputError(f"MODEL: {source!r} is not a file (expected a chain JSON path)")
    raise InvalidInputError(f"MODEL: {source!r}: unsupported file type {path.suffix!r} "
                            "(expected a chain JSON file, *.json)")
