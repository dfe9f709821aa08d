"""A small device table: memory tiers, peak throughput and links, each with its source.

The hardware issue brings the full catalogue; this table covers what planning needs today.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import InvalidInputError
from .graph import Link
from .units import parse_bytes

__all__ = ["DEVICES", "Device", "capacity_for", "get_device"]


@dataclass(frozen=True)
class Device:
    name: str
    tiers: dict[str, int]
    """Capacity per tier in bytes: smem (shared memory in total), l2, l2-usable, hbm."""
    peak_flops: dict[str, float]
    """Dense tensor throughput per compute dtype, FLOP/s."""
    hbm_bytes_per_s: float
    link: Link
    efficiency: float = 0.7
    """Fraction of peak FLOP/s a large matmul reaches; a planning default, not a measurement."""
    sources: dict[str, str] = field(default_factory=dict)


_H100_SRC = ("NVIDIA H100 SXM5 datasheet (132 SMs, 50 MB L2, 80 GB HBM3 at 3.35 TB/s, 989 BF16 "
             "dense TFLOP/s); usable L2 from gpu-benches (hit rate falls at 36-40 MB of 50 MB)")

DEVICES: dict[str, Device] = {
    d.name: d
    for d in (
        Device("h100-sxm",
               {"smem": 132 * 228 * 1024, "l2": 50 * 2**20, "l2-usable": 36 * 10**6,
                "hbm": 80 * 2**30},
               {"fp32": 494.7e12, "bf16": 989e12, "fp16": 989e12, "fp8": 1979e12,
                "int8": 1979e12, "int4": 1979e12},
               3.35e12, Link(3.7e11, 2e-6),
               sources={"all": _H100_SRC, "link": "NCCL over NVLink, ~370 GB/s measured "
                        "(NVIDIA/nccl-tests#212); P2P latency ~2 us (cuda-samples#230)"}),
        Device("a100-80gb",
               {"smem": 108 * 164 * 1024, "l2": 40 * 2**20, "l2-usable": 28 * 10**6,
                "hbm": 80 * 2**30},
               {"fp32": 156e12, "bf16": 312e12, "fp16": 312e12, "fp8": 312e12,
                "int8": 624e12, "int4": 624e12},
               2.039e12, Link(2.3e11, 2e-6),
               sources={"all": "A100 80GB SXM datasheet; usable L2 from gpu-benches (28-30 MB)"}),
        Device("h200",
               {"smem": 132 * 256 * 1024, "l2": 50 * 2**20, "l2-usable": 44 * 10**6,
                "hbm": 141 * 10**9},
               {"fp32": 494.7e12, "bf16": 989e12, "fp16": 989e12, "fp8": 1979e12,
                "int8": 1979e12, "int4": 1979e12},
               4.8e12, Link(3.7e11, 2e-6),
               sources={"all": "H200 spec (141 GB HBM3e, 4.8 TB/s); usable L2 from gpu-benches"}),
    )
}


def get_device(name: str) -> Device:
    if name not in DEVICES:
        raise InvalidInputError(f"--device: unknown device {name!r} (known: {', '.join(DEVICES)})")
    return DEVICES[name]


def capacity_for(text: str, device: Device) -> tuple[int, str | None]:
    """A capacity argument: a tier name of the device, or a byte count. Returns (bytes, tier)."""
    if text in device.tiers:
        return device.tiers[text], text
    if not text.strip()[:1].isdigit():
        raise InvalidInputError(f"--capacity: {text!r} is neither a byte count (52428800, "
                                f"50MiB, 80GB) nor a tier of {device.name} "
                                f"(tiers: {', '.join(device.tiers)})")
    return parse_bytes(text, "--capacity"), None
