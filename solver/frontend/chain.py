"""Chain JSON: the explicit input format (README: "Chain JSON"), read into a LayerGraph and written back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..core.errors import InvalidInputError
from ..core.files import display_path, read_json, shorten
from ..core.link import Link, check_fields, check_number
from .graph import LayerGraph

__all__ = ["chain_from_dict", "chain_to_dict", "load_chain"]

_TOP_FIELDS = frozenset({"name", "input_bytes", "link", "layers", "metadata", "source"})
# What a layer may carry: the canonical fields, and the annotations cachepart itself writes.
_LAYER_FIELDS = frozenset({"name", "weight_bytes", "activation_bytes", "buffer_bytes", "latency_s",
                           "kind", "params", "flops", "bytes_moved", "kv_cache_bytes",
                           "latency_hbm_s", "kv_bytes_per_token", "backward_latency_s",
                           "stash_bytes", "train_state_bytes", "backward_flops",
                           "recompute_flops", "overhead_s", "allreduces", "allreduce_bytes",
                           "heads", "kv_heads"})
# Optional numbers a layer may carry, and whether each must be whole.
_OPTIONAL_NUMBERS = {"kv_bytes_per_token": True, "backward_latency_s": False,
                     "stash_bytes": True, "train_state_bytes": True, "backward_flops": False,
                     "recompute_flops": False, "overhead_s": False, "allreduces": True,
                     "allreduce_bytes": True, "heads": True, "kv_heads": True}
# The annotations cachepart writes, which only reports read back: checked as strictly all the
# same, so that a wrong type fails here, naming the field, and not in a table or a sum later.
_ANNOTATIONS = {"params": True, "flops": False, "bytes_moved": True, "kv_cache_bytes": True,
                "latency_hbm_s": False}
_REQUIRED = ("weight_bytes", "activation_bytes", "latency_s")
_WHOLE = frozenset({"weight_bytes", "activation_bytes", "buffer_bytes"})


def _number(value: Any, where: str, whole: bool) -> float:
    """check_number, quoting a non-number cut short (a bool is not a number)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInputError(f"expected a number, got {shorten(value)}", field=where)
    return check_number(value, where, integral=whole)


def _check_layer(index: int, layer: dict[str, Any]) -> None:
    """Every field of one layer has its type: names and kinds strings, counts of bytes and
    parameters whole numbers >= 0, times and FLOPs numbers >= 0 (fields named as
    LayerGraph.validate names them)."""
    name = layer.get("name", "?")
    extra = sorted(str(key) for key in set(layer) - _LAYER_FIELDS)
    if extra:
        raise InvalidInputError(f"layers[{index}] ({shorten(name)}): unknown field "
                                f"{shorten(extra[0])} (known: {', '.join(sorted(_LAYER_FIELDS))})")
    for key in _REQUIRED:
        if key not in layer:
            raise InvalidInputError(f"layers[{index}] ({shorten(name)}): missing field {key!r}")
    if not isinstance(name, str) or not name:
        raise InvalidInputError(f"expected a non-empty string, got {shorten(name)}",
                                field=f"layers[{index}].name")
    where = f"layer {shorten(name)}"
    for key in ("weight_bytes", "activation_bytes", "buffer_bytes"):
        if key in layer:
            _number(layer[key], f"{where}.{key}", whole=True)
    if not isinstance(layer["latency_s"], dict):  # an object per device kind: _per_kind
        _number(layer["latency_s"], f"{where}.latency_s", whole=False)
    for key, whole in (*_OPTIONAL_NUMBERS.items(), *_ANNOTATIONS.items()):
        if key in layer:
            _number(layer[key], f"{where}.{key}", whole)
    kind = layer.get("kind")
    if "kind" in layer and (not isinstance(kind, str) or not kind):
        raise InvalidInputError(f"expected a layer kind (a non-empty string), got {shorten(kind)}",
                                field=f"{where}.kind")


def chain_from_dict(data: Any, default_name: str = "model") -> LayerGraph:
    """Validate a parsed chain JSON document and build its LayerGraph."""
    check_fields(data, _TOP_FIELDS)
    layers = data.get("layers")
    if not isinstance(layers, list) or not layers:
        raise InvalidInputError(f"layers: expected a non-empty list of layers, got {shorten(layers)}")
    for index, layer in enumerate(layers):
        if not isinstance(layer, dict):
            raise InvalidInputError(f"layers[{index}]: expected an object, got {shorten(layer)}")
        _check_layer(index, layer)
    layers = [_per_kind(index, layer) for index, layer in enumerate(layers)]
    name = data.get("name", default_name)
    if not isinstance(name, str) or not name:
        raise InvalidInputError(f"name: expected a non-empty string, got {shorten(name)}")
    input_bytes = int(_number(data.get("input_bytes", 0), "input_bytes", whole=True))
    link = None
    if data.get("link") is not None:
        link = Link.from_dict(data["link"])
    raw_meta = data.get("metadata") or {}
    if not isinstance(raw_meta, dict):
        raise InvalidInputError(f"metadata: expected an object, got {shorten(raw_meta)}")
    metadata = dict(raw_meta)
    if "source" in data:
        metadata["source"] = data["source"]
    return LayerGraph.chain(name, layers, input_bytes=input_bytes, link=link, metadata=metadata)


def _per_kind(index: int, layer: dict[str, Any]) -> dict[str, Any]:
    """A layer whose ``latency_s`` is an object {device kind: seconds} (for a cluster) keeps it
    as ``latency_by_kind``; its ``latency_s`` becomes the slowest kind's, which only a plan
    without the cluster would read, and lower.py refuses that."""
    times = layer["latency_s"]
    if not isinstance(times, dict):
        return layer
    where = f"layers[{index}] ({shorten(layer.get('name', '?'))}).latency_s"
    if not times:
        raise InvalidInputError("expected {device kind: seconds, ...}, got {}", field=where)
    checked = {str(k): _number(v, f"{where}.{k}", whole=False) for k, v in times.items()}
    return {**layer, "latency_s": max(checked.values()), "latency_by_kind": checked}


def load_chain(path: str | Path) -> LayerGraph:
    """Read a chain JSON file; errors name the file, the field and the value."""
    path = Path(path)
    data = read_json(path)
    try:
        return chain_from_dict(data, default_name=path.stem)
    except InvalidInputError as exc:
        raise InvalidInputError(f"{display_path(path)}: {exc}") from None


def chain_to_dict(graph: LayerGraph) -> dict[str, Any]:
    """The chain JSON document of a LayerGraph (layers in execution order)."""
    keep = ("weight_bytes", "activation_bytes", "buffer_bytes", "latency_s", *_OPTIONAL_NUMBERS)
    layers = []
    for layer in graph.layers():
        entry: dict[str, Any] = {"name": layer["name"]}
        entry.update({k: layer[k] for k in keep if k in layer})
        if "latency_by_kind" in layer:
            entry["latency_s"] = dict(layer["latency_by_kind"])
        layers.append(entry)
    doc: dict[str, Any] = {"name": graph.name, "input_bytes": graph.input_bytes}
    if graph.link is not None:
        doc["link"] = graph.link.to_dict()
    doc["layers"] = layers
    return doc
