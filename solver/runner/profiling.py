"""Time every layer of a model's chain on the current device (torch; no printing).

A zoo decoder: each block-granularity layer is built alone (models/torch_ref.py), so only one
layer is alive at a time and a model far larger than the device profiles layer by layer.

A torch module factory (``file.py:factory``): the whole module is built with the seeded weights
of models/torch_modules.py and run once; each chain layer (block or op granularity, the names
``load_model`` plans with) is then timed on the arguments that forward called it with, so its
input is the real output of the layer before it.

Either way a layer runs a few times to warm up, then is timed ``repeats`` times with the device
synchronised around each call; the median is the layer's latency.
"""

from __future__ import annotations

import functools
import gc
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from models.torch_modules import module_layer_calls
from models.torch_ref import build_layer, layer_names
from models.transformer import Granularity, TransformerSpec

from .pipeline import TORCH_DTYPES

__all__ = ["LayerTiming", "device_name", "profile_layers", "profile_module_layers"]


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


def _time(run: Callable[[], Any], device: torch.device, warmup: int,
          repeats: int) -> list[float]:
    for _ in range(warmup):
        run()
    samples = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        run()
        _sync(device)
        samples.append(time.perf_counter() - t0)
    return samples


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
            samples = _time(functools.partial(layer, x), device, warmup, repeats)
            out.append(LayerTiming(name, statistics.median(samples), repeats, min(samples),
                                   max(samples)))
            del layer
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return out


def profile_module_layers(source: str, input_shape: Sequence[int], *,
                          input_dtype: str | None = None, granularity: Granularity = "block",
                          dtype: str = "fp32", device: torch.device | str = "cpu",
                          warmup: int = 2, repeats: int = 5, seed: int = 0) -> list[LayerTiming]:
    """Median latency of every chain layer of a torch module factory, in chain order.

    A layer the forward calls several times is timed over all its calls (its latency is their
    sum); one it never calls gets 0 s with 0 repeats, so the profile still names every layer.
    """
    device = torch.device(device)
    layers = module_layer_calls(source, input_shape, input_dtype=input_dtype,
                                granularity=granularity, device=device,
                                dtype=TORCH_DTYPES[dtype], seed=seed)
    out = []
    with torch.no_grad():
        for layer in layers:
            if not layer.calls:
                out.append(LayerTiming(layer.name, 0.0, 0, 0.0, 0.0))
                continue

            def run(layer: Any = layer) -> None:
                for args, kwargs in layer.calls:
                    layer.module(*args, **kwargs)

            samples = _time(run, device, warmup, repeats)
            out.append(LayerTiming(layer.name, statistics.median(samples), repeats, min(samples),
                                   max(samples)))
    return out
