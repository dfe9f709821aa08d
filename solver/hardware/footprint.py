"""Footprints: a layer descriptor plus a workload gives bytes and FLOPs.

Counted for one micro-batch in flight (a pipeline stage holds one at a time):
- weight bytes: stored parameters x weight dtype size (int4: half a byte); a quantized
  checkpoint's packed Linear weights count the bytes the checkpoint stores for them instead
  ((stored - quantized parameters) x weight dtype size + quantized bytes);
- activation bytes: the layer's output, elements x activation dtype size;
- buffer bytes: operator workspace: the MLP intermediate or the Q/K/V projections, and with
  eager attention the score matrix (micro-batch x heads x queries x keys); fused attention keeps
  its score tiles on chip and adds nothing;
- KV bytes per token (every phase): 2 (K and V) x KV heads x head dim x activation size, per
  attention layer (0 elsewhere): what one more token of context costs a layer, which the
  serving objective (solve --objective kv-capacity) counts;
- KV cache (decode only): KV bytes per token x micro-batch x context, per attention layer. It
  is live for the whole decode, so it is added to the buffer bytes the partitioner sees, and
  also reported on its own;
- FLOPs: 2 per multiply-add of the projections, plus attention scores (QK^T and AV: 4 x heads x
  head dim x queries x keys, halved for causal prefill);
- bytes moved: weights read, input and output activations, the KV cache read when decoding
  (a mixture of experts that reads only part of its weights reads that share of its weight
  bytes; an embedding gathers one row a token, not its whole table).

At inference, a causal LM's head (``LayerDesc.last_token``) computes the last position's logits
only in prefill: what the next token needs, and what serving engines compute. Training runs it
over every token.

For the cost model (hardware/cost.py) a footprint also splits its FLOPs (``attention_flops``
of ``flops`` are the score and value products) and counts the kernels the layer runs.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

from models.layers import LayerDesc

from ..core.errors import InvalidInputError
from ..core.link import check_whole

__all__ = ["DTYPE_BYTES", "DTYPE_FALLBACK", "KERNELS", "LayerFootprint", "Workload", "footprints",
           "kernels_of"]

DTYPE_BYTES: dict[str, float] = {"fp32": 4, "bf16": 2, "fp16": 2, "fp8": 1, "int8": 1, "int4": 0.5}

DTYPE_FALLBACK: dict[str, tuple[str, ...]] = {
    "int4": ("int8", "fp16", "bf16"),
    "int8": ("fp16", "bf16"),
    "fp8": ("fp16", "bf16"),
    "fp16": ("bf16",),
    "bf16": ("fp16",),
    "fp32": (),
}
"""A compute dtype without a figure of its own takes the first of these that has one."""


KERNELS: dict[str, int] = {"embed": 1, "norm": 1, "attention": 3, "mlp": 3, "moe": 5,
                           "head": 2, "block": 8}
"""Kernels a layer of each kind runs in a forward pass, as fused inference engines run them:
attention = QKV GEMM, fused attention (with rotary), output GEMM; MLP = gate/up GEMM,
activation, down GEMM; MoE = router, expert GEMMs (2), activation, combine; a norm with its
residual add; the head = final norm + GEMM; a block = its two norms, attention and MLP.
Unknown kinds count one."""


def kernels_of(kind: str | None, *, moe: bool = False) -> int:
    """Kernels a layer of ``kind`` runs (a block with a mixture of experts runs the MoE's)."""
    if kind == "block" and moe:
        return 2 * KERNELS["norm"] + KERNELS["attention"] + KERNELS["moe"]
    return KERNELS.get(kind or "", 1)


@dataclass(frozen=True)
class Workload:
    """What runs through the model: a batch of sequences in one phase."""

    batch: int = 1
    seq_len: int = 2048
    """Tokens per sequence in prefill; the context length (KV cache) in decode."""
    phase: Literal["prefill", "decode", "train"] = "prefill"
    """train: a forward and backward pass over whole sequences (solver/hardware/training.py)."""
    micro_batch: int | None = None
    """Sequences in flight per stage (default: the whole batch)."""
    weight_dtype: str = "bf16"
    activation_dtype: str = "bf16"
    attention: Literal["fused", "eager"] = "fused"
    optimizer: Literal["adam", "sgd"] = "adam"
    """Training only (as ``precision`` and ``recompute``): solver/hardware/training.py."""
    precision: Literal["mixed", "bf16"] = "mixed"
    recompute: Literal["none", "selective", "full"] = "none"

    def __post_init__(self) -> None:
        for name in ("batch", "seq_len"):
            check_whole(getattr(self, name), name)
        mb = self.micro_batch
        if mb is not None and (isinstance(mb, bool) or not isinstance(mb, int)
                               or not 1 <= mb <= self.batch):
            raise InvalidInputError(f"must be in 1..{self.batch}, got {mb!r}", field="micro_batch")
        if self.phase not in ("prefill", "decode", "train"):
            raise InvalidInputError(f"expected prefill, decode or train, got {self.phase!r}",
                                    field="phase")
        for name, known in (("optimizer", ("adam", "sgd")), ("precision", ("mixed", "bf16")),
                            ("recompute", ("none", "selective", "full"))):
            if getattr(self, name) not in known:
                raise InvalidInputError(f"expected {' or '.join(known)}, got "
                                        f"{getattr(self, name)!r}", field=name)
        for name in ("weight_dtype", "activation_dtype"):
            if getattr(self, name) not in DTYPE_BYTES:
                raise InvalidInputError(f"unknown dtype {getattr(self, name)!r} (known: "
                                        f"{', '.join(DTYPE_BYTES)})", field=name)
        if self.attention not in ("fused", "eager"):
            raise InvalidInputError(f"expected fused or eager, got {self.attention!r}",
                                    field="attention")

    @property
    def sequences(self) -> int:
        return self.micro_batch or self.batch

    @property
    def tokens_per_step(self) -> int:
        """Tokens a micro-batch produces per pass: all of them in prefill and training, one each
        in decode."""
        return self.sequences * (1 if self.phase == "decode" else self.seq_len)

    def to_dict(self) -> dict[str, Any]:
        doc = {**asdict(self), "micro_batch": self.sequences}
        if self.phase != "train":  # the training options mean nothing to an inference plan
            for name in ("optimizer", "precision", "recompute"):
                doc.pop(name)
        return doc


@dataclass(frozen=True)
class LayerFootprint:
    name: str
    kind: str
    params: int
    weight_bytes: int
    activation_bytes: int
    buffer_bytes: int
    """Workspace plus, when decoding, the KV cache (what the partitioner counts)."""
    kv_cache_bytes: int
    flops: float
    bytes_moved: int
    kv_bytes_per_token: int = 0
    """KV-cache bytes one token of context adds (attention layers; 0 elsewhere), in every
    phase; when decoding, kv_cache_bytes = kv_bytes_per_token x micro-batch x context."""
    attention_flops: float = 0.0
    """Of ``flops``, the attention score and value products (the rest are matmuls)."""
    kernels: int = 1
    """Kernels the layer runs in a forward pass (KERNELS)."""
    weight_read: int | None = None
    """Of ``bytes_moved``, the weight bytes read (None: recovered, see cost.weight_read_bytes)."""


def _weight_bytes(layer: LayerDesc, params: int, wb: float) -> int:
    """Bytes of ``params`` of the layer's stored weights at ``wb`` bytes a parameter, its
    quantized share counted at the bytes its checkpoint stores (a partial read, the same share)."""
    if not layer.quantized_params:
        return math.ceil(params * wb)
    total = (layer.weight_params - layer.quantized_params) * wb + layer.quantized_bytes
    if params >= layer.weight_params:
        return math.ceil(total)
    return math.ceil(total * params / layer.weight_params)


def footprints(layers: list[LayerDesc], workload: Workload) -> list[LayerFootprint]:
    wb = DTYPE_BYTES[workload.weight_dtype]
    ab = DTYPE_BYTES[workload.activation_dtype]
    m = workload.sequences
    decode = workload.phase == "decode"
    out: list[LayerFootprint] = []
    previous_out = 0
    last_only = workload.phase == "prefill"
    for layer in layers:
        if layer.unit == "sample":
            units, queries, keys = m, 1, 1
        else:
            per_seq = layer.tokens_per_sample or workload.seq_len
            queries = 1 if decode and layer.tokens_per_sample is None else per_seq
            if layer.last_token and last_only:
                queries = 1
            keys = per_seq
            units = m * queries
        weight = _weight_bytes(layer, layer.weight_params, wb)
        activation = math.ceil(layer.out_elems * units * ab)
        buffer = math.ceil(layer.buffer_elems * units * ab)
        flops = float(layer.flops) * units
        kv, per_token, attention_flops = 0, 0, 0.0
        attn = layer.attention
        if attn is not None:
            # 2 x 0.5 bytes (int4) is still whole: the per-token figure is exact for every dtype
            per_token = math.ceil(2 * attn.kv_heads * attn.head_dim * ab)
            if workload.attention == "eager":
                buffer += math.ceil(m * attn.heads * queries * keys * ab)
            causal = 0.5 if attn.causal and not decode else 1.0
            attention_flops = 4.0 * m * attn.heads * attn.head_dim * queries * keys * causal
            flops += attention_flops
            if decode:
                kv = per_token * m * keys
        if layer.kind == "embed" and not layer.flops and layer.unit == "token":
            rows = layer.out_elems * units  # a lookup gathers one row a token
            read = _weight_bytes(layer, min(layer.weight_params, rows), wb)
        else:
            read = _weight_bytes(layer, min(layer.weight_params, layer.read_params * units), wb)
        moved = read + previous_out + activation + kv
        out.append(LayerFootprint(layer.name, layer.kind, layer.params, weight, activation,
                                  buffer + kv, kv, flops, moved, per_token, attention_flops,
                                  kernels_of(layer.kind, moe=layer.active_params is not None),
                                  read))
        previous_out = activation
    return out
