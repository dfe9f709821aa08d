"""--pin-l2: keep a stage's weights resident in the GPU's persisting L2 set-aside.

An access-policy window covers one contiguous address range, so the stage's parameters are
first packed into one flat buffer (each parameter becomes a view into it). The window and the
set-aside are clipped to the device's reported maxima (cudaDevAttrMaxAccessPolicyWindowSize,
cudaDevAttrMaxPersistingL2CacheSize); when the weights are larger than the set-aside, the hit
ratio is set-aside / window so the hardware does not thrash its own persisting lines.

cuda-python (``cuda.bindings.runtime``) is imported only when pinning on an NVIDIA GPU.
No printing here: the runner reports what was done.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["L2Pin", "pack_parameters"]

_ALIGN_BYTES = 256  # keep every packed tensor aligned as the caching allocator would


def pack_parameters(module: nn.Module) -> torch.Tensor | None:
    """Move every parameter of ``module`` into one flat buffer; returns it (None when the
    module has none). Parameters of the most common dtype are packed; others stay put."""
    params = [p for p in module.parameters() if p.numel()]
    if not params:
        return None
    by_dtype: dict[torch.dtype, int] = {}
    for p in params:
        by_dtype[p.dtype] = by_dtype.get(p.dtype, 0) + p.numel()
    dtype = max(by_dtype, key=lambda d: by_dtype[d])
    chosen = [p for p in params if p.dtype == dtype]
    align = max(1, _ALIGN_BYTES // chosen[0].element_size())
    offsets, total = [], 0
    for p in chosen:
        offsets.append(total)
        total += -(-p.numel() // align) * align
    flat = torch.empty(total, dtype=dtype, device=chosen[0].device)
    with torch.no_grad():
        for p, off in zip(chosen, offsets, strict=True):
            view = flat[off:off + p.numel()].view_as(p)
            view.copy_(p)
            p.data = view
    return flat


def _check(result: Any, what: str, cudart: Any) -> Any:
    err = result[0] if isinstance(result, tuple) else result
    if err != cudart.cudaError_t.cudaSuccess:
        name = cudart.cudaGetErrorName(err)[1]
        raise RuntimeError(f"{what} failed: {name.decode() if isinstance(name, bytes) else name}")
    rest = result[1:] if isinstance(result, tuple) else ()
    return rest[0] if len(rest) == 1 else rest


def _member(owner: Any, *names: str) -> Any:
    """An enum member or type under one of its names (cuda-python renamed stream attributes
    to launch attributes in CUDA 12)."""
    for name in names:
        if hasattr(owner, name):
            return getattr(owner, name)
    raise RuntimeError(f"cuda-python has none of {', '.join(names)}")


@dataclass
class L2Pin:
    """Context manager: set the persisting-L2 limit and the stream's access-policy window
    over ``flat`` on enter, and restore both on exit."""

    flat: torch.Tensor
    stream: Any = None
    applied: bool = False
    info: dict[str, Any] | None = None
    _previous_limit: int = 0

    def __enter__(self) -> L2Pin:
        from cuda.bindings import runtime as cudart

        device = self.flat.device.index if self.flat.device.index is not None else \
            torch.cuda.current_device()
        attr = cudart.cudaDeviceAttr
        max_persist = int(_check(cudart.cudaDeviceGetAttribute(
            attr.cudaDevAttrMaxPersistingL2CacheSize, device), "cudaDeviceGetAttribute", cudart))
        max_window = int(_check(cudart.cudaDeviceGetAttribute(
            attr.cudaDevAttrMaxAccessPolicyWindowSize, device), "cudaDeviceGetAttribute", cudart))
        weight_bytes = self.flat.numel() * self.flat.element_size()
        set_aside = min(weight_bytes, max_persist)
        window_bytes = min(weight_bytes, max_window)
        limit = cudart.cudaLimit.cudaLimitPersistingL2CacheSize
        self._previous_limit = int(_check(cudart.cudaDeviceGetLimit(limit), "cudaDeviceGetLimit",
                                          cudart))
        _check(cudart.cudaDeviceSetLimit(limit, set_aside), "cudaDeviceSetLimit", cudart)
        hit_ratio = min(1.0, set_aside / window_bytes) if window_bytes else 0.0
        self._set_window(cudart, self.flat.data_ptr(), window_bytes, hit_ratio, persisting=True)
        self.applied = True
        self.info = {"applied": True, "weight_bytes": weight_bytes, "window_bytes": window_bytes,
                     "set_aside_bytes": set_aside, "hit_ratio": hit_ratio,
                     "max_persisting_l2_bytes": max_persist, "max_window_bytes": max_window}
        return self

    def _set_window(self, cudart: Any, base: int, num_bytes: int, hit_ratio: float,
                    persisting: bool) -> None:
        prop = cudart.cudaAccessProperty
        window = cudart.cudaAccessPolicyWindow()
        window.base_ptr = base
        window.num_bytes = num_bytes
        window.hitRatio = hit_ratio
        window.hitProp = prop.cudaAccessPropertyPersisting if persisting else \
            prop.cudaAccessPropertyNormal
        window.missProp = prop.cudaAccessPropertyStreaming if persisting else \
            prop.cudaAccessPropertyNormal
        value = _member(cudart, "cudaStreamAttrValue", "cudaLaunchAttributeValue")()
        value.accessPolicyWindow = window
        ids = _member(cudart, "cudaStreamAttrID", "cudaLaunchAttributeID")
        key = _member(ids, "cudaLaunchAttributeAccessPolicyWindow",
                      "cudaStreamAttributeAccessPolicyWindow")
        stream = self.stream if self.stream is not None else \
            torch.cuda.current_stream(self.flat.device)
        _check(cudart.cudaStreamSetAttribute(stream.cuda_stream, key, value),
               "cudaStreamSetAttribute", cudart)

    def __exit__(self, *exc: object) -> None:
        if not self.applied:
            return
        from cuda.bindings import runtime as cudart

        torch.cuda.synchronize(self.flat.device)
        self._set_window(cudart, 0, 0, 0.0, persisting=False)
        _check(cudart.cudaCtxResetPersistingL2Cache(), "cudaCtxResetPersistingL2Cache", cudart)
        _check(cudart.cudaDeviceSetLimit(cudart.cudaLimit.cudaLimitPersistingL2CacheSize,
                                         self._previous_limit), "cudaDeviceSetLimit", cudart)
        self.applied = False
