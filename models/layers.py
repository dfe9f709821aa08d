"""Workload-independent layer descriptors: what an architecture says about each layer.

Sizes are in elements (not bytes) per *unit*: per token for sequence models, per sample for
layers whose size does not depend on the sequence (a CNN's convolutions). The footprint module
(solver/hardware/footprint.py) turns them into bytes and FLOPs for a workload; the one size
given in bytes is what a quantized checkpoint stores for its packed weights, which no dtype
of the workload's describes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .errors import SpecError

__all__ = ["AttentionShape", "LayerDesc", "Unit"]

Unit = Literal["token", "sample"]


@dataclass(frozen=True)
class AttentionShape:
    """What the attention in a layer needs beyond its projections: score FLOPs and workspace
    grow with seq^2, the KV cache with the context length."""

    heads: int
    kv_heads: int
    head_dim: int
    causal: bool = True


@dataclass(frozen=True)
class LayerDesc:
    """One node of the layer chain, before a workload is chosen."""

    name: str
    kind: str
    """embed, block, attention, mlp, moe, norm, head, conv, pool, fc, module, ..."""
    params: int
    """Parameters this layer owns (a tied LM head owns none: its matrix is the embedding's)."""
    unit: Unit = "token"
    out_elems: int = 0
    """Output elements per unit (what crosses to the next layer)."""
    flops: int = 0
    """Forward FLOPs per unit, excluding attention scores (2 per multiply-add)."""
    buffer_elems: int = 0
    """Transient workspace per unit (the MLP intermediate, Q/K/V projections)."""
    stash_elems: int | None = None
    """Elements per unit the layer saves for its backward pass in training (the tensors autograd
    keeps: norm inputs, projection inputs, Q/K/V, the MLP intermediates), excluding the attention
    score matrix, which grows with the sequence (solver/hardware/training.py adds it). None:
    unknown; the training footprint then counts the layer's output, ``out_elems``."""
    active_params: int | None = None
    """Parameters read per unit when fewer than all (mixture of experts: the routed experts)."""
    stored_params: int | None = None
    """Parameters the device holding this layer must store, when not ``params`` (a tied head
    keeps its own copy of the embedding matrix on its device)."""
    attention: AttentionShape | None = None
    tokens_per_sample: int | None = None
    """Fixed tokens per sample (a ViT's patches + class token); None: the workload's seq_len."""
    last_token: bool = False
    """At inference the layer runs on each sequence's last position only in prefill (a causal
    LM's head: the next token needs only the last logits)."""
    dtype: str | None = None
    """Parameter dtype recorded by an import (torch modules); the workload's dtype wins."""
    quantized_params: int = 0
    """Of ``weight_params``, the Linear weight elements a quantized checkpoint stores packed
    (0: none; the rest are stored in the workload's weight dtype)."""
    quantized_bytes: int = 0
    """Bytes the checkpoint stores for those: packed weights with their scales, zero points,
    group indices or block statistics (models/quant.py)."""
    extra: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        stash = self.stash_elems
        if stash is not None and (isinstance(stash, bool) or not isinstance(stash, int)
                                  or stash < 0):
            raise SpecError(f"{self.name}: stash_elems must be a whole number >= 0 or None, "
                            f"got {stash!r}")
        qp, qb = self.quantized_params, self.quantized_bytes
        if not 0 <= qp <= self.weight_params or qb < 0 or (qp == 0) != (qb == 0):
            raise SpecError(f"{self.name}: quantized_params {qp!r} and quantized_bytes {qb!r} "
                            f"must both be 0 or both positive, with at most the layer's "
                            f"{self.weight_params} stored parameters quantized")

    @property
    def weight_params(self) -> int:
        return self.params if self.stored_params is None else self.stored_params

    @property
    def read_params(self) -> int:
        return self.weight_params if self.active_params is None else self.active_params
