"""Latency of a layer: a roofline per operation class, plus a fixed cost per kernel.

    time = max(matmul FLOPs / matmul rate,    weight bytes / bandwidth)       (the GEMMs)
         + max(attention FLOPs / attn rate,   KV-cache bytes / bandwidth)     (fused attention)
         + other bytes / bandwidth                                            (streaming ops)
         + kernels x kernel overhead

A rate is the dense peak of the compute (activation) dtype times the device's efficiency for
that class and dtype; a bandwidth is the memory's (achieved) figure times the memory efficiency
(hardware/factors.py). The classes run one after the other, so their times add; within a class
the kernel is bound by the slower of its compute and its reads.

With no tier (the default) every byte moves at the main memory's bandwidth (HBM on GPUs). With
a tier, the weights are read at the tier's bandwidth, and the rest (layer input and output, KV
cache) at the tier's bandwidth too by default, because the partitioner's capacity counts a
stage's activations and buffers along with its weights: a plan against the l2 tier assumes all
of them fit in L2. Pass ``activations_in_tier=False`` when only the weights are pinned (a CUDA
persisting window over the weights): the rest then moves at the main memory's bandwidth.

A footprint from ``footprints`` records its weight read; one built by hand may not, and its
weight share is then recovered as bytes moved - input - output - KV cache, where the input is
``input_bytes`` when given, else taken equal to the layer's output.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..core.errors import InvalidInputError
from .catalogue import Device
from .factors import CostFactors
from .footprint import LayerFootprint, Workload

__all__ = [
    "LayerTerms",
    "layer_terms",
    "memory_time",
    "overhead_time",
    "roofline_latency",
    "stage_fits_tier",
    "stage_tier_bytes",
    "terms_latency",
    "weight_read_bytes",
]


@dataclass(frozen=True)
class LayerTerms:
    """What a layer's time is made of, before efficiencies: FLOPs per class at the dtype's peak,
    bytes per class at their memory's bandwidth, and its kernel count."""

    matmul_flops: float
    attention_flops: float
    peak_flops: float
    dtype: str
    weight_bytes: float
    weight_bandwidth: float
    kv_bytes: float
    other_bytes: float
    other_bandwidth: float
    kernels: int


def weight_read_bytes(fp: LayerFootprint, input_bytes: int | None = None) -> int:
    """The weight bytes among ``fp.bytes_moved`` (see the module notes)."""
    if fp.weight_read is not None:
        return fp.weight_read
    inbound = fp.activation_bytes if input_bytes is None else input_bytes
    weights = fp.bytes_moved - inbound - fp.activation_bytes - fp.kv_cache_bytes
    return max(0, min(fp.weight_bytes, weights))


def _bandwidths(device: Device, tier: str | None, activations_in_tier: bool) -> tuple[float, float]:
    """(the weights' bandwidth, the rest's): ``tier``'s for the weights (None: main memory), and
    for the rest too unless only the weights live there."""
    main_bw = device.bandwidth(None)
    tier_bw = main_bw if tier is None or tier == device.main_memory else device.bandwidth(tier)
    return tier_bw, tier_bw if activations_in_tier else main_bw


def layer_terms(fp: LayerFootprint, device: Device, workload: Workload, tier: str | None = None,
                *, activations_in_tier: bool = True, input_bytes: int | None = None) -> LayerTerms:
    """The layer's terms on ``device`` (its weights read from ``tier``; None: main memory)."""
    weight_bw, other_bw = _bandwidths(device, tier, activations_in_tier)
    weights = weight_read_bytes(fp, input_bytes)
    kv = min(fp.kv_cache_bytes, fp.bytes_moved - weights)
    other = max(0, fp.bytes_moved - weights - kv)
    dtype = workload.activation_dtype
    return LayerTerms(fp.flops - fp.attention_flops, fp.attention_flops, device.peak(dtype), dtype,
                      weights, weight_bw, kv, other, other_bw, fp.kernels)


def terms_latency(terms: LayerTerms, factors: CostFactors) -> float:
    """Seconds for a layer's terms under ``factors`` (the module's formula)."""
    mem = factors.memory
    other_bw = terms.other_bandwidth * mem
    matmul = max(terms.matmul_flops / (terms.peak_flops * factors.matmul_for(terms.dtype)),
                 terms.weight_bytes / (terms.weight_bandwidth * mem))
    attention = max(terms.attention_flops
                    / (terms.peak_flops * factors.attention_for(terms.dtype)),
                    terms.kv_bytes / other_bw)
    return matmul + attention + terms.other_bytes / other_bw + terms.kernels * factors.kernel_s


def memory_time(fp: LayerFootprint, device: Device, tier: str | None = None, *,
                activations_in_tier: bool = True, input_bytes: int | None = None) -> float:
    """Seconds to move the layer's bytes, given where its weights (and activations) live."""
    weight_bw, other_bw = _bandwidths(device, tier, activations_in_tier)
    weights = weight_read_bytes(fp, input_bytes)
    mem = device.factors.memory
    return weights / (weight_bw * mem) + (fp.bytes_moved - weights) / (other_bw * mem)


def overhead_time(fp: LayerFootprint, device: Device) -> float:
    """The fixed part of a layer's time: its kernels' overhead (not shortened by splitting it)."""
    return fp.kernels * device.factors.kernel_s


def roofline_latency(fp: LayerFootprint, device: Device, workload: Workload,
                     tier: str | None = None, *, activations_in_tier: bool = True,
                     input_bytes: int | None = None) -> float:
    """The layer's time (the module's formula). ``tier`` None: every byte at main memory."""
    return terms_latency(layer_terms(fp, device, workload, tier,
                                     activations_in_tier=activations_in_tier,
                                     input_bytes=input_bytes), device.factors)


def stage_tier_bytes(fps: Iterable[LayerFootprint], *, weights_only: bool = False) -> int:
    """Bytes a stage keeps in its tier: weights + activations + buffers (the additive memory
    model), or the weights alone when only they are pinned."""
    total = 0
    for fp in fps:
        total += fp.weight_bytes if weights_only else \
            fp.weight_bytes + fp.activation_bytes + fp.buffer_bytes
    return total


def stage_fits_tier(fps: Iterable[LayerFootprint], device: Device, tier: str, *,
                    weights_only: bool = False) -> bool:
    """Whether a stage's layers fit ``tier`` of ``device`` (see ``stage_tier_bytes``)."""
    if tier not in device.tiers:
        raise InvalidInputError(f"device {device.name}: unknown tier {tier!r} "
                                f"(tiers: {', '.join(device.tiers)})")
    return stage_tier_bytes(fps, weights_only=weights_only) <= device.tiers[tier]
