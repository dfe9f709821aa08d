"""The device catalogue: memory tiers, bandwidth, peak throughput and links, each with its source.

The catalogue ships as package data (``solver/data/devices.yaml``, from the project's hardware
reference). Every number carries a source string in ``Device.sources``, keyed by its path in the
entry (``tiers.l2``, ``bandwidth.hbm``, ``peak_flops.bf16``, ``link.latency_s``...) and tagged
[S] vendor specification, [M] measured, [2] secondary, [D] derived, [P] planning default,
[F] fitted to measured times (``cachepart calibrate``). ``efficiency`` and ``overhead`` are the
cost model's factors (hardware/factors.py); ``calibration`` records a fit (not read by the model).

Users add or override devices with their own YAML file in the same format, through
``register_devices(path)`` or the ``CACHEPART_DEVICES`` environment variable (one path, or
several joined by the OS path separator), read at import. A user entry may start from a known
device with ``base: h100-sxm`` and give only what differs; every number it gives needs a source
(its own, or ``sources: {default: "..."}``).

Filled in at load time, and labelled [D] in ``sources``:
- a tier that is the same memory as another (``l2-usable``, ``l2-persist-max`` are L2) takes that
  memory's bandwidth when it has none of its own;
- a compute dtype without a peak falls back to the nearest wider dtype that has one (``int4`` to
  ``int8``, ``fp8`` to ``fp16``, ``bf16`` to ``fp16``...; see ``DTYPE_FALLBACK``): a narrow dtype
  runs at least as fast as a wider one it is upcast to, so this never overstates speed. fp32 has
  no fallback, and a dtype with nothing to fall back on stays absent: ``Device.peak`` then raises.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..core.errors import InvalidInputError
from ..core.files import display_path, plain, read_yaml, shorten
from ..core.link import Link
from ..core.units import parse_bytes
from .factors import CostFactors
from .footprint import DTYPE_BYTES, DTYPE_FALLBACK

__all__ = [
    "CATALOGUE_SCHEMA",
    "DEVICES",
    "DTYPE_FALLBACK",
    "ENV_VAR",
    "TIER_ORDER",
    "Device",
    "capacity_for",
    "catalogue_path",
    "get_device",
    "load_devices",
    "register_devices",
    "register_env_devices",
]

CATALOGUE_SCHEMA = "cachepart-devices/1"
ENV_VAR = "CACHEPART_DEVICES"
TIER_ORDER: tuple[str, ...] = ("smem", "l2", "l2-usable", "hbm")
"""Tiers listed first, in this order; a device's other tiers follow in file order."""

# Tiers that are part of another memory and so share its bandwidth.
SAME_MEMORY: dict[str, str] = {"l2-usable": "l2", "l2-persist-max": "l2"}


_ENTRY_KEYS = frozenset({"description", "base", "main_memory", "tiers", "bandwidth", "peak_flops",
                         "efficiency", "overhead", "link", "pcie", "notes", "sources",
                         "calibration"})
_MERGED_KEYS = ("tiers", "bandwidth", "peak_flops", "link", "pcie", "sources", "overhead")
_CLASSES = ("matmul", "attention")
_EFFICIENCY_KEYS = (*_CLASSES, "memory")
_OVERHEAD_KEYS = ("kernel_s",)
_LINK_KEYS = ("bandwidth_bytes_per_s", "latency_s")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class Device:
    name: str
    tiers: dict[str, int]
    """Capacity per tier in bytes: smem (shared memory in total), l2, l2-usable, hbm, then extra
    tiers (l2-persist-max, infinity-cache, vmem, sram...)."""
    peak_flops: dict[str, float]
    """Dense throughput per compute dtype, FLOP/s (OP/s for integers), fallbacks filled in."""
    hbm_bytes_per_s: float
    """Bandwidth of the main memory (``main_memory``): HBM on GPUs, SRAM on Groq/Cerebras/IPU."""
    link: Link
    """Device-to-device link within a node, one direction."""
    factors: CostFactors = field(default_factory=CostFactors)
    """Efficiencies per operation class and dtype, and the per-kernel overhead (factors.py)."""
    sources: dict[str, str] = field(default_factory=dict)
    """Source of every number, keyed by its path (``tiers.l2``, ``peak_flops.bf16``...)."""
    tier_bandwidth: dict[str, float] = field(default_factory=dict)
    """Bandwidth per memory in bytes/s, where a figure is known."""
    main_memory: str = "hbm"
    """Where weights are read from when no tier is chosen."""
    pcie: Link | None = None
    """Host link, one direction, where known."""
    description: str = ""
    notes: tuple[str, ...] = ()
    peak_fallback: dict[str, str] = field(default_factory=dict)
    """Compute dtype -> the dtype whose rate it was given (only the filled-in ones)."""
    calibration: dict[str, Any] = field(default_factory=dict)
    """What a ``cachepart calibrate`` fit recorded (points, residuals); not read by the model."""

    @property
    def efficiency(self) -> float:
        """The default GEMM efficiency (the single figure of the catalogue before op classes)."""
        return self.factors.matmul_for("default")

    def peak(self, dtype: str) -> float:
        """Peak FLOP/s for a compute dtype; InvalidInputError naming what is known if absent."""
        if dtype not in self.peak_flops:
            known = ", ".join(self.peak_flops) or "none"
            raise InvalidInputError(
                f"device {self.name}: no peak FLOP/s for compute dtype {shorten(dtype)} (known: {known}); "
                f"use a known one or add it in a {ENV_VAR} file "
                f"(base: {self.name}, peak_flops: {{{dtype}: ...}})", field="activation_dtype")
        return self.peak_flops[dtype]

    def bandwidth(self, tier: str | None = None) -> float:
        """Bandwidth of a tier (None: the main memory); InvalidInputError if it has no figure."""
        name = self.main_memory if tier is None else tier
        if name not in self.tier_bandwidth:
            if name not in self.tiers and name != self.main_memory:
                raise InvalidInputError(f"device {self.name}: unknown tier {shorten(name)} "
                                        f"(tiers: {', '.join(self.tiers)})")
            known = ", ".join(self.tier_bandwidth)
            raise InvalidInputError(
                f"device {self.name}: no bandwidth figure for tier {shorten(name)} (known: {known}); "
                f"add one in a {ENV_VAR} file (base: {self.name}, bandwidth: {{{name}: ...}})")
        return self.tier_bandwidth[name]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "description": self.description, "main_memory": self.main_memory,
            "tiers": dict(self.tiers), "bandwidth": dict(self.tier_bandwidth),
            "hbm_bytes_per_s": self.hbm_bytes_per_s, "peak_flops": dict(self.peak_flops),
            "peak_fallback": dict(self.peak_fallback), "efficiency": self.factors.to_dict(),
            "link": self.link.to_dict(), "pcie": None if self.pcie is None else self.pcie.to_dict(),
            "notes": list(self.notes), "sources": dict(self.sources),
            **({"calibration": self.calibration} if self.calibration else {}),
        }


# --------------------------------------------------------------------------- parsing

def _fail(where: str, device: str | None, path: str, problem: str) -> InvalidInputError:
    """One line naming the file, the device and the field."""
    who = f"device {shorten(device)}: " if device is not None else ""
    return InvalidInputError(f"{where}: {who}{plain(path, 80)}: {problem}")  # path: user's keys


def _number(value: Any, where: str, device: str, path: str, *, positive: bool = True) -> float:
    # PyYAML reads 3.35e12 (no exponent sign) as a string: accept numeric strings too.
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise _fail(where, device, path, f"expected a number, got {shorten(value)}") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(where, device, path, f"expected a number, got {shorten(value)}")
    number = float(value)
    if not math.isfinite(number):
        raise _fail(where, device, path, f"expected a finite number, got {shorten(value)}")
    if number < 0 or (positive and number == 0):
        raise _fail(where, device, path, f"must be {'> 0' if positive else '>= 0'}, got {shorten(value)}")
    return number


def _bytes(value: Any, where: str, device: str, path: str) -> int:
    if isinstance(value, str) and len(value) > 60:
        raise _fail(where, device, path, f"expected a byte count (50MiB, 80GB), got {shorten(value)}")
    if isinstance(value, str):  # "50MiB", "80GB"
        try:
            return parse_bytes(value, path)
        except InvalidInputError as exc:
            raise _fail(where, device, path, str(exc).split(": ", 1)[-1]) from None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _fail(where, device, path, f"expected a positive whole number of bytes, got {shorten(value)}")
    return value


def _mapping(value: Any, where: str, device: str, path: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(where, device, path, f"expected a mapping, got {shorten(value)}")
    for key in value:
        if not isinstance(key, str) or not key:
            raise _fail(where, device, path, f"expected names as keys, got {shorten(key)}")
    return dict(value)


def _link(value: Any, where: str, device: str, path: str) -> Link:
    raw = _mapping(value, where, device, path)
    unknown = sorted(set(raw) - set(_LINK_KEYS))
    if unknown:
        raise _fail(where, device, f"{path}.{unknown[0]}",
                    f"unknown field (known: {', '.join(_LINK_KEYS)})")
    if "bandwidth_bytes_per_s" not in raw:
        raise _fail(where, device, f"{path}.bandwidth_bytes_per_s", "missing")
    bandwidth = _number(raw["bandwidth_bytes_per_s"], where, device, f"{path}.bandwidth_bytes_per_s")
    latency = _number(raw.get("latency_s", 0.0), where, device, f"{path}.latency_s", positive=False)
    return Link(bandwidth, latency)


def _ordered_tiers(tiers: dict[str, int]) -> dict[str, int]:
    first = [t for t in TIER_ORDER if t in tiers]
    return {t: tiers[t] for t in (*first, *(t for t in tiers if t not in TIER_ORDER))}


def _number_paths(raw: Mapping[str, Any]) -> list[str]:
    """Every number an entry gives, by path (the keys its sources must cover)."""
    paths: list[str] = []
    for group in ("tiers", "bandwidth", "peak_flops"):
        if isinstance(raw.get(group), Mapping):
            paths += [f"{group}.{key}" for key in raw[group]]
    eff = raw.get("efficiency")
    if isinstance(eff, Mapping):
        for cls in _CLASSES:
            if isinstance(eff.get(cls), Mapping):
                paths += [f"efficiency.{cls}.{key}" for key in eff[cls]]
        if "memory" in eff:
            paths.append("efficiency.memory")
    elif eff is not None:
        paths.append("efficiency")
    if isinstance(raw.get("overhead"), Mapping):
        paths += [f"overhead.{key}" for key in raw["overhead"]]
    for link in ("link", "pcie"):
        if isinstance(raw.get(link), Mapping):
            paths += [f"{link}.{key}" for key in raw[link]]
    return paths


def _merge_base(raw: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """``base`` overlaid with ``raw``; the base's source for a number ``raw`` replaces is dropped."""
    merged = copy.deepcopy(base)
    replaced = set(_number_paths(raw))
    if "pcie" in raw and raw["pcie"] is None:  # `pcie: null` removes the base's host link
        replaced |= {f"pcie.{k}" for k in _LINK_KEYS}
    if "overhead" in raw and raw["overhead"] is None:  # `overhead: null`: none (taken as 0)
        replaced |= {f"overhead.{k}" for k in _OVERHEAD_KEYS}
    scalar_eff = "efficiency" in raw and not isinstance(raw["efficiency"], Mapping)
    merged["sources"] = {k: v for k, v in merged.get("sources", {}).items()
                         if k not in replaced and not (scalar_eff and k.startswith("efficiency"))}
    merged.pop("calibration", None)  # a fit describes the entry it was written for
    for key, value in raw.items():
        if key == "base":
            continue
        if key == "efficiency" and isinstance(value, Mapping) \
                and isinstance(merged.get(key), Mapping):
            old = merged[key]
            merged[key] = {**old, **{k: ({**old[k], **v} if isinstance(v, Mapping)
                                         and isinstance(old.get(k), Mapping) else v)
                                     for k, v in value.items()}}
            continue
        if key in _MERGED_KEYS and isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _device(name: str, raw: dict[str, Any], where: str) -> Device:
    """Validate one (base-merged) entry and build its Device, filling the derived figures."""
    unknown = sorted(set(raw) - _ENTRY_KEYS)
    if unknown:
        raise _fail(where, name, unknown[0], f"unknown field (known: {', '.join(sorted(_ENTRY_KEYS))})")
    for key in ("tiers", "main_memory", "bandwidth", "peak_flops", "efficiency", "link", "sources"):
        if key not in raw:
            raise _fail(where, name, key, "missing")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise _fail(where, name, "description", f"expected a string, got {shorten(description)}")

    tiers = {t: _bytes(v, where, name, f"tiers.{t}")
             for t, v in _mapping(raw["tiers"], where, name, "tiers").items()}
    if not tiers:
        raise _fail(where, name, "tiers", "expected at least one tier")
    main = raw["main_memory"]
    if not isinstance(main, str) or not main:
        raise _fail(where, name, "main_memory", f"expected a memory name, got {shorten(main)}")
    bandwidth = {t: _number(v, where, name, f"bandwidth.{t}")
                 for t, v in _mapping(raw["bandwidth"], where, name, "bandwidth").items()}
    for memory in bandwidth:
        if memory not in tiers and memory != main:
            raise _fail(where, name, f"bandwidth.{memory}",
                        f"not a tier of this device nor its main_memory "
                        f"(tiers: {', '.join(tiers)}; main_memory: {main})")
    if main not in bandwidth:
        raise _fail(where, name, f"bandwidth.{main}",
                    "missing: the main_memory needs a bandwidth figure")
    peaks: dict[str, float] = {}
    # `peak_flops: null` (or {}) states no rate; a list, a number or a string is a mistake
    peak_raw = {} if raw["peak_flops"] is None else raw["peak_flops"]
    for dtype, value in _mapping(peak_raw, where, name, "peak_flops").items():
        if dtype not in DTYPE_BYTES:
            raise _fail(where, name, f"peak_flops.{dtype}",
                        f"unknown dtype (known: {', '.join(DTYPE_BYTES)})")
        peaks[dtype] = _number(value, where, name, f"peak_flops.{dtype}")
    factors = _factors(raw, where, name)
    calibration = raw.get("calibration") or {}
    if not isinstance(calibration, Mapping):
        raise _fail(where, name, "calibration", f"expected a mapping, got {shorten(calibration)}")
    link = _link(raw["link"], where, name, "link")
    pcie = None if raw.get("pcie") is None else _link(raw["pcie"], where, name, "pcie")
    notes_raw = raw.get("notes")
    notes_raw = [] if notes_raw is None else notes_raw
    if not isinstance(notes_raw, list) or not all(isinstance(n, str) for n in notes_raw):
        raise _fail(where, name, "notes", f"expected a list of strings, got {shorten(notes_raw)}")
    notes = list(notes_raw)

    # Every number needs a source: its own, or the entry's `default`.
    given = _mapping(raw["sources"], where, name, "sources")
    for key, text in given.items():
        if not isinstance(text, str) or not text.strip():
            raise _fail(where, name, f"sources.{key}", f"expected a non-empty string, got {shorten(text)}")
    needed = _number_paths(raw)
    stray = sorted(set(given) - set(needed) - {"default"})
    if stray:
        raise _fail(where, name, f"sources.{stray[0]}", "names no number of this device")
    sources: dict[str, str] = {}
    for path in needed:
        text = given.get(path, given.get("default"))
        if text is None:
            raise _fail(where, name, f"sources.{path}",
                        "missing (every number needs a source; sources: {default: ...} covers all)")
        sources[path] = text
    for prefix, value in (("link", link), ("pcie", pcie)):
        if value is not None and f"{prefix}.latency_s" not in sources:
            sources[f"{prefix}.latency_s"] = "[P] not given: taken as 0"
    if "overhead.kernel_s" not in sources:
        sources["overhead.kernel_s"] = "[P] not given: taken as 0"

    # Derived figures, labelled so a reader can tell them from stated ones.
    for tier, parent in SAME_MEMORY.items():
        if tier in tiers and tier not in bandwidth and parent in bandwidth:
            bandwidth[tier] = bandwidth[parent]
            sources[f"bandwidth.{tier}"] = (f"[D] same memory as {parent}: "
                                            f"{sources[f'bandwidth.{parent}']}")
    fallback: dict[str, str] = {}
    stated = set(peaks)  # fall back on stated rates only, never on a filled-in one
    for dtype, wider in DTYPE_FALLBACK.items():
        if dtype in peaks:
            continue
        used = next((w for w in wider if w in stated), None)
        if used is not None:
            peaks[dtype] = peaks[used]
            fallback[dtype] = used
            sources[f"peak_flops.{dtype}"] = (
                f"[D] fallback: no {dtype} rate given, priced at the {used} rate "
                f"(a narrower dtype runs at least as fast as one it is upcast to)")
    if fallback:
        notes.append("Compute dtypes priced at another dtype's rate: "
                     + ", ".join(f"{d} at {u}" for d, u in fallback.items()) + ".")
    peaks = {d: peaks[d] for d in DTYPE_BYTES if d in peaks}

    return Device(
        name=name, tiers=_ordered_tiers(tiers), peak_flops=peaks, hbm_bytes_per_s=bandwidth[main],
        link=link, factors=factors, sources=sources, tier_bandwidth=bandwidth,
        main_memory=main, pcie=pcie, description=description, notes=tuple(notes),
        peak_fallback=fallback, calibration=dict(calibration))


def _fraction(value: Any, where: str, device: str, path: str) -> float:
    number = _number(value, where, device, path)
    if number > 1:
        raise _fail(where, device, path, f"must be in (0, 1], got {shorten(value)}")
    return number


def _factors(raw: Mapping[str, Any], where: str, device: str) -> CostFactors:
    """The efficiency (a number, or a mapping by op class) and overhead entries."""
    eff = raw["efficiency"]
    if not isinstance(eff, Mapping):
        value = _fraction(eff, where, device, "efficiency")
        tables: dict[str, dict[str, float]] = {cls: {"default": value} for cls in _CLASSES}
        memory = 1.0
    else:
        eff = _mapping(eff, where, device, "efficiency")
        unknown = sorted(set(eff) - set(_EFFICIENCY_KEYS))
        if unknown:
            raise _fail(where, device, f"efficiency.{unknown[0]}",
                        f"unknown field (known: {', '.join(_EFFICIENCY_KEYS)})")
        tables = {}
        for cls in _CLASSES:
            table = _mapping(eff.get(cls, {}), where, device, f"efficiency.{cls}")
            for dtype in table:
                if dtype != "default" and dtype not in DTYPE_BYTES:
                    raise _fail(where, device, f"efficiency.{cls}.{dtype}",
                                f"unknown dtype (known: default, {', '.join(DTYPE_BYTES)})")
            tables[cls] = {d: _fraction(v, where, device, f"efficiency.{cls}.{d}")
                           for d, v in table.items()}
            if "default" not in tables[cls]:
                raise _fail(where, device, f"efficiency.{cls}.default",
                            "missing (the figure for dtypes not listed)")
        memory = _fraction(eff.get("memory", 1.0), where, device, "efficiency.memory")
    overhead = _mapping(raw.get("overhead") or {}, where, device, "overhead")
    unknown = sorted(set(overhead) - set(_OVERHEAD_KEYS))
    if unknown:
        raise _fail(where, device, f"overhead.{unknown[0]}",
                    f"unknown field (known: {', '.join(_OVERHEAD_KEYS)})")
    kernel_s = _number(overhead.get("kernel_s", 0.0), where, device, "overhead.kernel_s",
                       positive=False)
    if kernel_s > 1.0:
        raise _fail(where, device, "overhead.kernel_s",
                    f"must be at most 1 second a kernel, got {shorten(overhead['kernel_s'])}")
    return CostFactors(tables["matmul"], tables["attention"], memory, kernel_s)


def _parse_document(doc: Any, where: str, known_raw: Mapping[str, dict[str, Any]]
                    ) -> dict[str, tuple[Device, dict[str, Any]]]:
    """Devices of one parsed file, each with its merged raw entry (a later ``base`` uses it)."""
    if not isinstance(doc, Mapping):
        raise _fail(where, None, "top level", f"expected a mapping with 'devices', got {shorten(doc)}")
    unknown = sorted((str(key) for key in set(doc) - {"schema", "devices"}), key=str)
    if unknown:
        raise _fail(where, None, unknown[0], "unknown top-level field (known: schema, devices)")
    schema = doc.get("schema", CATALOGUE_SCHEMA)
    if schema != CATALOGUE_SCHEMA:
        raise _fail(where, None, "schema", f"expected {CATALOGUE_SCHEMA!r}, got {schema!r}")
    entries = doc.get("devices")
    if not isinstance(entries, Mapping) or not entries:
        raise _fail(where, None, "devices", "expected a non-empty mapping of device name to entry")
    out: dict[str, tuple[Device, dict[str, Any]]] = {}
    raws = dict(known_raw)
    for name, entry in entries.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise _fail(where, None, f"devices.{shorten(name)}",
                        "expected a device name of letters, digits, '.', '_' or '-'")
        raw = _mapping(entry, where, name, "entry")
        base = raw.get("base")
        if base is not None:
            if not isinstance(base, str) or not base:
                raise _fail(where, name, "base",
                            f"expected a device name (a string), got {shorten(base)}")
            if base not in raws:
                raise _fail(where, name, "base",
                            f"unknown device {shorten(base)} (known: {', '.join(raws)})")
            raw = _merge_base(raw, raws[base])
        out[name] = (_device(name, raw, where), raw)
        raws[name] = raw
    return out


def _read(path: str | os.PathLike[str]) -> Any:
    """A device file parsed: UTF-8, at most 1 MiB, no YAML anchors or aliases (core/files)."""
    return read_yaml(path, "device file")


def catalogue_path() -> Path:
    """The shipped catalogue file."""
    return Path(str(resources.files("solver") / "data" / "devices.yaml"))


# --------------------------------------------------------------------------- registry

_RAW: dict[str, dict[str, Any]] = {}
DEVICES: dict[str, Device] = {}


def _load_catalogue() -> None:
    path = catalogue_path()
    for name, (device, raw) in _parse_document(_read(path), display_path(path), {}).items():
        DEVICES[name] = device
        _RAW[name] = raw


def load_devices(path: str | os.PathLike[str]) -> dict[str, Device]:
    """Read a user device file (the catalogue's format) without registering it. ``base`` may
    name any registered device or one earlier in the file."""
    return {name: dev for name, (dev, _) in _parse_document(_read(path), display_path(path), _RAW).items()}


def register_devices(path: str | os.PathLike[str]) -> list[str]:
    """Load a user device file into DEVICES (a name already there is replaced); its names."""
    parsed = _parse_document(_read(path), display_path(path), _RAW)
    for name, (device, raw) in parsed.items():
        DEVICES[name] = device
        _RAW[name] = raw
    return list(parsed)


_ENV_ERROR: list[InvalidInputError] = []


def register_env_devices() -> list[str]:
    """Register the files named by CACHEPART_DEVICES (os.pathsep-separated); their device names.
    A bad file raises here; at import the error is kept and raised by ``get_device`` instead, so
    that importing the package never fails on a user's file."""
    _ENV_ERROR.clear()
    names: list[str] = []
    for part in os.environ.get(ENV_VAR, "").split(os.pathsep):
        if part.strip():
            try:
                names += register_devices(part.strip())
            except InvalidInputError as exc:
                _ENV_ERROR.append(InvalidInputError(f"{ENV_VAR}: {exc}"))
                raise _ENV_ERROR[0] from None
    return names


def get_device(name: str) -> Device:
    if _ENV_ERROR:
        raise _ENV_ERROR[0]
    if name not in DEVICES:
        raise InvalidInputError(f"unknown device {shorten(name)} (known: {', '.join(DEVICES)})",
                                field="device")
    return DEVICES[name]


def capacity_for(text: str, device: Device) -> tuple[int, str | None]:
    """A capacity argument: a tier name of the device, or a byte count. Returns (bytes, tier)."""
    if text in device.tiers:
        return device.tiers[text], text
    if not text.strip()[:1].isdigit():
        raise InvalidInputError(f"{shorten(text)} is neither a byte count (52428800, 50MiB, 80GB) nor "
                                f"a tier of {device.name} (tiers: {', '.join(device.tiers)})",
                                field="capacity")
    return parse_bytes(text, "capacity"), None


_load_catalogue()
with contextlib.suppress(InvalidInputError):  # kept in _ENV_ERROR; get_device reports it
    register_env_devices()
