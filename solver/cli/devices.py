"""``cachepart devices``: the device catalogue as a table, as JSON, or one device with every
source string."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..core.units import format_bytes
from ..hardware.catalogue import DEVICES, ENV_VAR, Device, get_device
from .exit_codes import ExitCode
from .tables import format_table

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "devices", help="list the device catalogue: memory tiers, bandwidth, peak FLOP/s, links",
        description=f"The device catalogue (add your own with a YAML file named by {ENV_VAR}).")
    p.add_argument("--device", metavar="NAME", help="show one device with every source string")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(handler=run)
    return p


def _rate(value: float, unit: str) -> str:
    for scale, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M")):
        if value >= scale:
            return f"{value / scale:.4g} {prefix}{unit}"
    return f"{value:.4g} {unit}"


def _link_text(link: Any) -> str:
    return f"{_rate(link.bandwidth_bytes_per_s, 'B/s')}, {link.latency_s * 1e6:.3g} us"


def _bf16(device: Device) -> str:
    if "bf16" not in device.peak_flops:
        return "-"
    used = device.peak_fallback.get("bf16")
    return f"{device.peak_flops['bf16'] / 1e12:,.0f}" + (f" ({used})" if used else "")


def _table() -> str:
    rows = [{
        "device": d.name,
        "tiers": ", ".join(f"{t} {format_bytes(b)}" for t, b in d.tiers.items()),
        "main memory": f"{d.main_memory} {_rate(d.hbm_bytes_per_s, 'B/s')}",
        "bf16 TFLOP/s": _bf16(d),
        "link": _link_text(d.link),
    } for d in DEVICES.values()]
    return format_table(rows, left=("device", "tiers", "main memory", "link"))


def _detail(d: Device) -> str:
    src = d.sources
    lines = [f"{d.name}: {d.description}" if d.description else d.name,
             f"main memory: {d.main_memory} (weights are read from here when no tier is chosen)",
             "tiers:"]
    for tier, size in d.tiers.items():
        bw = d.tier_bandwidth.get(tier)
        bw_text = f", {_rate(bw, 'B/s')}" if bw is not None else ", bandwidth unknown"
        lines.append(f"  {tier}: {size:,} B ({format_bytes(size)}){bw_text}")
        lines.append(f"    size: {src.get(f'tiers.{tier}', '-')}")
        if bw is not None:
            lines.append(f"    bandwidth: {src.get(f'bandwidth.{tier}', '-')}")
    for memory, bw in d.tier_bandwidth.items():
        if memory not in d.tiers:
            lines.append(f"  {memory} (not a capacity tier): {_rate(bw, 'B/s')}")
            lines.append(f"    bandwidth: {src.get(f'bandwidth.{memory}', '-')}")
    lines.append("peak FLOP/s (dense):")
    if not d.peak_flops:
        lines.append("  none given: the cost model cannot price compute on this device")
    for dtype, value in d.peak_flops.items():
        lines.append(f"  {dtype}: {_rate(value, 'FLOP/s')}")
        lines.append(f"    {src.get(f'peak_flops.{dtype}', '-')}")
    f = d.factors
    lines.append("efficiency (fraction of peak; memory: of the bandwidth):")
    for cls, table in (("matmul", f.matmul), ("attention", f.attention)):
        for dtype, value in table.items():
            lines.append(f"  {cls} {dtype}: {value:g}")
            lines.append(f"    {src.get(f'efficiency.{cls}.{dtype}', src.get('efficiency', '-'))}")
    lines.append(f"  memory: {f.memory:g}")
    lines.append(f"    {src.get('efficiency.memory', '[P] not given: 1, the full bandwidth')}")
    lines.append(f"overhead per kernel: {f.kernel_s * 1e6:g} us")
    lines.append(f"  {src.get('overhead.kernel_s', '-')}")
    if d.calibration:
        cal = d.calibration
        lines.append(f"calibration: {cal.get('points', '?')} points from "
                     f"{cal.get('data', '?')}, rms log residual "
                     f"{cal.get('rms_log_residual', '?')}, worst ratio "
                     f"{cal.get('worst_ratio', '?')}")
    for label, link in (("link", d.link), ("pcie", d.pcie)):
        if link is None:
            lines.append(f"{label}: none given")
            continue
        lines.append(f"{label}: {_link_text(link)}")
        lines.append(f"  bandwidth: {src.get(f'{label}.bandwidth_bytes_per_s', '-')}")
        lines.append(f"  latency: {src.get(f'{label}.latency_s', '-')}")
    if d.notes:
        lines.append("notes:")
        lines += [f"  - {note}" for note in d.notes]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Handler: prints and returns the exit code (0); unknown device -> InvalidInputError."""
    if args.device is not None:
        device = get_device(args.device)
        print(json.dumps(device.to_dict(), indent=2) if args.json else _detail(device))
        return ExitCode.OK
    get_device(next(iter(DEVICES)))  # surfaces a bad CACHEPART_DEVICES file as an input error
    if args.json:
        print(json.dumps({"devices": [d.to_dict() for d in DEVICES.values()]}, indent=2))
    else:
        print(_table())
    return ExitCode.OK
