"""Time every block-granularity layer of a decoder on the current device (torch; no printing).

Each layer is built alone (models/torch_ref.py), run a few times to warm up, then timed
``repeats`` times with the device synchronised around each call; the median is the layer's
latency. Only one layer is alive at a time, so a model far larger than the device profiles
layer by layer.
"""

from __future__ import annotations

import gc
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

from models.torch_ref import build_layer, layer_names
from models.transformer import TransformerSpec

from .pipeline import TORCH_DTYPES

__all__ = ["LayerTiming", "device_name", "profile_layers"]


@dataclass(frozen=True)
class LayerTiming:
    name: str
    latency_s: float
    """Median of the timed repeats."""
    repeats: int
    min_s: float
    max_s: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def profile_layers(spec: TransformerSpec, *, batch: int, seq_len: int, dtype: str = "fp32",
                   device: torch.device | str = "cpu", warmup: int = 2, repeats: int = 5,
                   seed: int = 0) -> list[LayerTiming]:
    """Median forward latency of every block-granularity layer, in chain order."""
    device = torch.device(device)
    tdtype = TORCH_DTYPES[dtype]
    gen = torch.Generator(device="cpu").manual_seed(seed)
    ids = torch.randint(0, max(spec.vocab, 1), (batch, seq_len), generator=gen).to(device)
    hidden = torch.randn((batch, seq_len, spec.hidden), generator=gen).to(device=device,
                                                                           dtype=tdtype)
    out = []
    with torch.no_grad():
        for name in layer_names(spec):
            layer = build_layer(spec, name, device=device, dtype=tdtype, seed=seed)
            x = ids if name == "embed" else hidden
            for _ in range(warmup):
                layer(x)
            samples = []
            for _ in range(repeats):
                _sync(device)
                t0 = time.perf_counter()
                layer(x)
                _sync(device)
                samples.append(time.perf_counter() - t0)
            out.append(LayerTiming(name, statistics.median(samples), repeats, min(samples),
                                   max(samples)))
            del layer
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return out
