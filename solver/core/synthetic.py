"""Seeded random chains for tests, benchmarks and notebooks."""

from __future__ import annotations

import numpy as np

from .link import Link
from .problem import MemoryModel, Problem

__all__ = ["random_problem"]


def random_problem(
    seed: int,
    n: int,
    *,
    max_stages: int | None = None,
    memory_model: MemoryModel | str = MemoryModel.ADDITIVE,
    link: bool = True,
    tightness: float = 0.35,
) -> Problem:
    """A random chain whose capacity holds about ``tightness`` of the model (and at least two
    of its largest layers). With ``link``, activations vary twentyfold, so a later cut can cost
    more than an earlier one. K defaults to a random value in [2, n/2 + 1]."""
    rng = np.random.default_rng(seed)
    weight = rng.integers(1_000, 50_000, n)
    activation = rng.integers(100, 40_000, n)
    buffer = rng.integers(0, 5_000, n)
    latency = rng.uniform(0.5, 5.0, n).round(3)
    per_layer = weight + activation + buffer
    capacity = int(max(per_layer.max() * 2, per_layer.sum() * tightness))
    k = max_stages if max_stages is not None else int(rng.integers(2, max(3, n // 2 + 2)))
    return Problem(
        names=tuple(f"l{i}" for i in range(n)),
        weight_bytes=weight,
        activation_bytes=activation,
        buffer_bytes=buffer,
        latency_s=latency,
        capacity_bytes=capacity,
        max_stages=k,
        memory_model=MemoryModel(memory_model),
        input_bytes=int(rng.integers(0, 20_000)),
        link=Link(bandwidth_bytes_per_s=20_000.0, latency_s=0.05) if link else None,
    )
