"""How close a device's kernels come to its peaks: efficiencies per operation class and dtype,
and the fixed time every kernel costs.

Three operation classes, because they are limited by different things:
- matmul: the projections and MLP GEMMs (and MoE experts); compute-bound at large token counts,
  weight-read-bound at small ones;
- attention: the score and value products (QK^T, AV), fused; compute-bound in long prefills,
  bound by the KV-cache read when decoding;
- memory: what only streams (norms, activations, residual adds, the embedding gather).

``matmul`` and ``attention`` are fractions of the dense peak of the compute dtype; ``memory``
is the fraction of the catalogue's (achieved) bandwidth that kernels reach, applied to every
byte a layer moves. ``kernel_s`` is the fixed cost of one kernel (launch, prologue, the tail of a
small grid); a layer pays it once per kernel it runs (``footprint.KERNELS``), whatever its size and however
many devices it is split over.

In a device YAML::

    efficiency:
      matmul: {default: 0.7, fp8: 0.5}
      attention: {default: 0.5}
      memory: 0.9
    overhead: {kernel_s: 4.0e-6}

A single number (``efficiency: 0.7``, the format before op classes) sets matmul and attention
for every dtype and memory 1.0; the overhead is its own entry (from ``base`` where not given,
else 0).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .footprint import DTYPE_FALLBACK

__all__ = ["CostFactors"]

@dataclass(frozen=True)
class CostFactors:
    """A device's efficiencies and per-kernel overhead (see the module notes)."""

    matmul: Mapping[str, float] = field(default_factory=lambda: {"default": 0.7})
    """Fraction of dense peak a GEMM reaches, per compute dtype (``default`` for the rest)."""
    attention: Mapping[str, float] = field(default_factory=lambda: {"default": 0.7})
    """Fraction of dense peak fused attention reaches, per compute dtype."""
    memory: float = 1.0
    """Fraction of the memory's (achieved) bandwidth that kernels reach."""
    kernel_s: float = 0.0
    """Fixed seconds per kernel."""

    @staticmethod
    def _pick(table: Mapping[str, float], dtype: str) -> float:
        for name in (dtype, *DTYPE_FALLBACK.get(dtype, ())):
            if name in table:
                return float(table[name])
        return float(table.get("default", 1.0))

    def matmul_for(self, dtype: str) -> float:
        """The GEMM efficiency for a compute dtype: its own, a wider dtype's it falls back on,
        else ``default``."""
        return self._pick(self.matmul, dtype)

    def attention_for(self, dtype: str) -> float:
        return self._pick(self.attention, dtype)

    def to_dict(self) -> dict[str, Any]:
        return {"matmul": dict(self.matmul), "attention": dict(self.attention),
                "memory": self.memory, "kernel_s": self.kernel_s}
