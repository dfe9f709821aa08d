"""An engine's rules as a Problem: where stages may begin, the model's share of a device, one
TP degree for every stage. The optimum of the shaped problem is the best split the engine can
be given."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

import numpy as np

from ..core.errors import InvalidInputError
from ..core.problem import Problem
from .rules import Engine

__all__ = ["block_positions", "engine_cuts", "engine_problem"]

_BLOCK = re.compile(r"(^block\d+$)|((^|\.)\d+$)")


def block_positions(names: Sequence[str]) -> list[int]:
    """The chain positions of the repeated blocks: ``block3`` (zoo and Hugging Face configs)
    or a numbered entry of a module's stack (``model.layers.3``)."""
    return [i for i, name in enumerate(names) if _BLOCK.search(name)]


def engine_cuts(names: Sequence[str], engine: Engine) -> np.ndarray:
    """Per boundary 0..n, whether the engine can start a stage there: between blocks only
    (whole blocks), and not between the embedding and the first block or the last block and
    the head where the engine keeps them together."""
    parts = [n for n in names if n.startswith("block") and "." in n]
    if parts:
        raise InvalidInputError(f"{engine.title} places whole blocks, not their parts (layer "
                                f"{parts[0]!r}): plan at --granularity block", field="engine")
    blocks = block_positions(names)
    if not blocks:
        raise InvalidInputError(f"{engine.title} places whole transformer blocks; this model's "
                                f"layers ({', '.join(names[:4])}...) have none", field="engine")
    n = len(names)
    mask = np.zeros(n + 1, dtype=bool)
    mask[0] = mask[n] = True
    first, last = blocks[0], blocks[-1]
    for b in blocks:
        mask[b] = True  # a stage may begin at any block
    mask[last + 1] = True  # ... and the layers after the last block may start one
    if engine.glue_embed:
        mask[first] = first == 0  # the embedding (before the first block) stays with it
    elif first > 0:
        mask[first] = True
    if engine.glue_head and last + 1 < n:
        mask[last + 1] = False  # the final norm and head stay with the last block
    mask[0] = mask[n] = True
    return mask


def engine_problem(problem: Problem, names: Sequence[str], engine: Engine, *,
                   memory_fraction: float | None = None) -> Problem:
    """``problem`` with ``engine``'s rules: its cuts, its memory share (of the largest TP
    degree asked, where it depends on it), one TP degree for every stage."""
    if memory_fraction is not None and not 0 < memory_fraction <= 1:
        raise InvalidInputError(f"must be in (0, 1], got {memory_fraction}",
                                field="memory_fraction")
    if problem.fleet is not None:
        raise InvalidInputError(f"{engine.title}: engine-shaped plans take one kind of device; "
                                "plan the cluster without --engine", field="engine")
    tp = problem.tensor_parallel
    widest = max(tp.degrees) if tp is not None else 1
    shaped = problem.replace(
        allowed_cuts=engine_cuts(names, engine),
        capacity_bytes=engine.capacity(problem.capacity_bytes, memory_fraction, widest))
    if tp is not None:
        shaped = shaped.replace(tensor_parallel=dataclasses.replace(tp, uniform=True))
    return shaped
