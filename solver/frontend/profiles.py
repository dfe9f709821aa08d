"""Measured per-layer latencies: a profile JSON that overrides the roofline model.

Format (schema ``cachepart-profile/1``)::

    {"schema": "cachepart-profile/1", "model": "llama2-7b", "device": "h100-sxm",
     "workload": {"batch": 1, "seq_len": 2048, ...},
     "layers": [{"name": "embed", "latency_s": 0.00012, ...}, ...]}

Fields beyond ``name`` and ``latency_s`` in a layer (repeats, min_s, max_s...) and extra
top-level fields (``torch_device``...) are kept and written back.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import InvalidInputError
from ..core.files import display_path, read_json, shorten
from ..core.link import check_number
from .graph import LayerGraph

__all__ = [
    "PROFILE_SCHEMA",
    "Profile",
    "ProfileLayer",
    "apply_profile",
    "load_profile",
    "profile_from_graph",
    "save_profile",
]

PROFILE_SCHEMA = "cachepart-profile/1"
_TOP_FIELDS = ("schema", "model", "device", "workload", "layers")


@dataclass(frozen=True)
class ProfileLayer:
    name: str
    latency_s: float
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "latency_s": self.latency_s, **self.extra}


@dataclass(frozen=True)
class Profile:
    model: str
    device: str
    workload: dict[str, Any]
    layers: tuple[ProfileLayer, ...]
    schema: str = PROFILE_SCHEMA
    extra: dict[str, Any] = field(default_factory=dict)
    """Top-level fields beyond the schema's (kept as written)."""

    def latencies(self) -> dict[str, float]:
        return {layer.name: layer.latency_s for layer in self.layers}

    def to_dict(self) -> dict[str, Any]:
        return {"schema": self.schema, "model": self.model, "device": self.device,
                **self.extra, "workload": dict(self.workload),
                "layers": [la.to_dict() for la in self.layers]}

    @classmethod
    def from_dict(cls, doc: Any, where: str = "profile") -> Profile:
        """Validate a parsed profile; errors name ``where`` and the field."""
        if not isinstance(doc, dict):
            raise InvalidInputError(f"{where}: expected a JSON object, got {type(doc).__name__}")
        if doc.get("schema") != PROFILE_SCHEMA:
            raise InvalidInputError(f"{where}: schema: expected {PROFILE_SCHEMA!r}, "
                                    f"got {shorten(doc.get('schema'))}")
        for key in ("model", "device"):
            if not isinstance(doc.get(key), str) or not doc[key]:
                raise InvalidInputError(f"{where}: {key}: expected a non-empty string, "
                                        f"got {shorten(doc.get(key))}")
        workload = doc.get("workload", {})
        if not isinstance(workload, dict):
            raise InvalidInputError(f"{where}: workload: expected an object, got {shorten(workload)}")
        rows = doc.get("layers")
        if not isinstance(rows, list) or not rows:
            raise InvalidInputError(f"{where}: layers: expected a non-empty list, got {shorten(rows)}")
        layers: list[ProfileLayer] = []
        seen: set[str] = set()
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise InvalidInputError(f"{where}: layers[{i}]: expected an object, got {shorten(row)}")
            name = row.get("name")
            if not isinstance(name, str) or not name:
                raise InvalidInputError(f"{where}: layers[{i}].name: expected a non-empty string, "
                                        f"got {shorten(name)}")
            if name in seen:
                raise InvalidInputError(f"{where}: layers[{i}].name: duplicate layer {shorten(name)}")
            seen.add(name)
            if "latency_s" not in row:
                raise InvalidInputError(f"{where}: layers[{i}] ({shorten(name)}): missing field 'latency_s'")
            try:
                if isinstance(row["latency_s"], str | list | dict):  # quoted cut short
                    raise InvalidInputError(f"expected a number, got {shorten(row['latency_s'])}",
                                            field=f"layers[{i}] ({shorten(name)}).latency_s")
                latency = check_number(row["latency_s"], f"layers[{i}] ({shorten(name)}).latency_s")
            except InvalidInputError as exc:
                raise InvalidInputError(f"{where}: {exc}") from None
            extra = {k: v for k, v in row.items() if k not in ("name", "latency_s")}
            layers.append(ProfileLayer(name, latency, extra))
        extra_top = {k: v for k, v in doc.items() if k not in _TOP_FIELDS}
        return cls(doc["model"], doc["device"], workload, tuple(layers), extra=extra_top)


def load_profile(path: str | os.PathLike[str]) -> Profile:
    p = Path(path)
    return Profile.from_dict(read_json(p, "profile"), display_path(p))


def save_profile(profile: Profile, path: str | os.PathLike[str]) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(profile.to_dict(), indent=2) + "\n", encoding="utf-8")


def profile_from_graph(graph: LayerGraph, device: str | None = None,
                       workload: dict[str, Any] | None = None) -> Profile:
    """A profile holding a graph's current latencies (a template to fill with measurements)."""
    meta = graph.metadata
    return Profile(model=graph.name, device=device or str(meta.get("device", "unknown")),
                   workload=dict(workload if workload is not None else meta.get("workload", {})),
                   layers=tuple(ProfileLayer(row["name"], float(row["latency_s"]))
                                for row in graph.layers()))


def _names(names: list[str]) -> str:
    shown = ", ".join(shorten(n) for n in names[:5])
    return shown + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def apply_profile(graph: LayerGraph, profile: Profile) -> LayerGraph:
    """A copy of ``graph`` with each layer's latency_s replaced by the profile's. The profile and
    the graph must name the same layers: one missing on either side is an error naming it."""
    measured = profile.latencies()
    order = graph.order()
    missing = [n for n in order if n not in measured]
    if missing:
        raise InvalidInputError(f"profile for {profile.model!r}: no latency for layer "
                                f"{_names(missing)} of model {graph.name!r}")
    layer_set = set(order)
    extra = [n for n in measured if n not in layer_set]
    if extra:
        raise InvalidInputError(f"profile for {profile.model!r}: layer {_names(extra)} is not a "
                                f"layer of model {graph.name!r}")
    g = graph.graph.copy()
    for name in order:
        g.nodes[name]["latency_s"] = measured[name]
    meta = {**graph.metadata, "latency_source": "profile",
            "profile": {"model": profile.model, "device": profile.device,
                        "workload": dict(profile.workload)}}
    out = LayerGraph(name=graph.name, graph=g, input_bytes=graph.input_bytes, link=graph.link,
                     metadata=meta)
    out.validate()
    return out
