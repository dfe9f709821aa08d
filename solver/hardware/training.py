"""Training footprints: what a layer costs beyond inference when it is trained.

Per layer, for one micro-batch in flight (as in footprint.py):
- training state: the stored parameters x the bytes each needs beyond its weight (gradients,
  master copy, optimizer moments; ``state_bytes_per_param``). The weights themselves are the
  inference footprint's weight bytes, at the workload's weight dtype;
- stash: the activations the layer saves for its backward pass (``LayerDesc.stash_elems``, or
  its output where the descriptor does not say) x tokens x activation size, plus, with eager
  attention and no recompute, the softmax output (micro-batch x heads x queries x keys);
  selective recompute drops the scores and recomputes them (Korthikanti et al. 2022, Section
  5), full recompute keeps only the layer's input and recomputes the whole forward;
- backward FLOPs: twice the forward (the input and the weight gradients), attention scores
  included;
- recompute FLOPs: what recomputation adds: the forward again (full) or the attention scores
  again (selective).

Fused attention's backward recomputes its score tiles inside the kernel; that is the kernel's
own cost and is in neither figure. The recomputed stash of the layer being differentiated under
full recompute is live for that layer's backward only, and is not counted either.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from models.layers import LayerDesc

from ..core.errors import InvalidInputError
from .footprint import DTYPE_BYTES, Workload

__all__ = ["TrainFootprint", "TrainOptions", "state_bytes_per_param", "train_footprints"]

Optimizer = Literal["adam", "sgd"]
Precision = Literal["mixed", "bf16"]
Recompute = Literal["none", "selective", "full"]

_CHOICES: dict[str, tuple[str, ...]] = {
    "optimizer": ("adam", "sgd"),
    "precision": ("mixed", "bf16"),
    "recompute": ("none", "selective", "full"),
}

# Bytes per parameter beyond the weight itself, by (precision, optimizer). Mixed precision keeps
# bf16 gradients, an fp32 master copy and fp32 optimizer state: with the bf16 weight, Adam's is
# the 16 bytes per parameter of Rajbhandari et al. 2020 (ZeRO), Section 3.1. SGD is with
# momentum (one moment); "bf16" keeps everything in bf16 and no master copy.
_STATE_BYTES: dict[tuple[str, str], int] = {
    ("mixed", "adam"): 2 + 4 + 4 + 4,  # gradient, master weight, Adam's m and v
    ("mixed", "sgd"): 2 + 4 + 4,  # gradient, master weight, momentum
    ("bf16", "adam"): 2 + 2 + 2,  # gradient, m, v
    ("bf16", "sgd"): 2 + 2,  # gradient, momentum
}

# Integer weights have no gradient descent to follow; fp8 weights (with an fp32 master copy
# under mixed precision) are trained, so only these are refused.
_UNTRAINABLE_DTYPES = ("int8", "int4")


@dataclass(frozen=True)
class TrainOptions:
    """How the model is trained: optimizer, numeric precision and activation recomputation."""

    optimizer: Optimizer = "adam"
    precision: Precision = "mixed"
    """mixed: bf16 weights and gradients, fp32 master weights and optimizer state; bf16: all
    of them in bf16, no master copy."""
    recompute: Recompute = "none"
    """none: keep every saved activation; selective: recompute the attention scores in the
    backward pass; full: keep each layer's input only and recompute its forward."""

    def __post_init__(self) -> None:
        for name, allowed in _CHOICES.items():
            value = getattr(self, name)
            if value not in allowed:
                raise InvalidInputError(f"expected one of {', '.join(allowed)}, got {value!r}",
                                        field=name)


@dataclass(frozen=True)
class TrainFootprint:
    """One layer's training costs on top of its inference footprint (footprint.py)."""

    name: str
    train_state_bytes: int
    """Gradients, master weights and optimizer state of the parameters the device stores."""
    stash_bytes: int
    """Activations saved for the backward pass, per micro-batch in flight."""
    backward_flops: float
    recompute_flops: float


def state_bytes_per_param(options: TrainOptions) -> int:
    """Bytes per parameter for gradients, master weights and optimizer state (the weight itself
    excluded): 14 for mixed-precision Adam, 10 for mixed SGD, 6 for bf16 Adam, 4 for bf16 SGD."""
    return _STATE_BYTES[(options.precision, options.optimizer)]


def _check_trainable(layers: list[LayerDesc], workload: Workload) -> None:
    if workload.phase == "decode":
        raise InvalidInputError("training runs whole sequences: expected train (or prefill), "
                                "got 'decode'", field="phase")
    if workload.weight_dtype in _UNTRAINABLE_DTYPES:
        raise InvalidInputError(f"training {workload.weight_dtype} weights is not modelled "
                                f"(use bf16, fp16, fp32 or fp8)", field="weight_dtype")
    for layer in layers:
        if layer.quantized_params:
            raise InvalidInputError(f"training a quantized checkpoint is not modelled (layer "
                                    f"{layer.name!r} stores {layer.quantized_params:,} "
                                    f"parameters packed)", field="quantization")


def train_footprints(layers: list[LayerDesc], workload: Workload,
                     options: TrainOptions) -> list[TrainFootprint]:
    """Training footprints of a layer chain, in the chain's order."""
    _check_trainable(layers, workload)
    ab = DTYPE_BYTES[workload.activation_dtype]
    per_param = state_bytes_per_param(options)
    m = workload.sequences
    out: list[TrainFootprint] = []
    # The first layer's input is the model input (token ids or pixels), which the batch holds:
    # full recompute keeps nothing more for it.
    previous_out = 0
    for layer in layers:
        # Units as footprints() counts them in prefill (it has no public helper for it): per
        # sample, or per token of the layer's fixed tokens per sample or the sequence.
        if layer.unit == "sample":
            units, tokens = m, 1
        else:
            tokens = layer.tokens_per_sample or workload.seq_len
            units = m * tokens
        forward = float(layer.flops) * units
        scores_bytes, scores_flops = 0.0, 0.0
        attn = layer.attention
        if attn is not None:
            if workload.attention == "eager":
                scores_bytes = m * attn.heads * tokens * tokens * ab
            causal = 0.5 if attn.causal else 1.0
            scores_flops = 4.0 * m * attn.heads * attn.head_dim * tokens * tokens * causal
        forward += scores_flops
        stash = layer.out_elems if layer.stash_elems is None else layer.stash_elems
        if options.recompute == "full":
            stash_bytes, recompute = previous_out * units * ab, forward
        elif options.recompute == "selective":
            stash_bytes, recompute = stash * units * ab, scores_flops
        else:
            stash_bytes, recompute = stash * units * ab + scores_bytes, 0.0
        out.append(TrainFootprint(layer.name, layer.weight_params * per_param,
                                  math.ceil(stash_bytes), 2.0 * forward, recompute))
        previous_out = layer.out_elems
    return out
