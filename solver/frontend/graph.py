"""LayerGraph: a networkx DiGraph of layers annotated with footprints and costs.

Nodes are layers; node attributes hold the footprint (``weight_bytes``, ``activation_bytes``,
``buffer_bytes``) and cost (``latency_s``) fields; an edge u -> v carries the bytes that flow
from u to v (by default u's activation). The execution order is a topological sort that breaks
ties by insertion order, so it is deterministic.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from ..core.errors import InvalidInputError
from ..core.link import Link, check_number

__all__ = ["FOOTPRINT_FIELDS", "REQUIRED_FIELDS", "LayerGraph"]

REQUIRED_FIELDS: tuple[str, ...] = ("weight_bytes", "activation_bytes", "latency_s")
FOOTPRINT_FIELDS: tuple[str, ...] = ("weight_bytes", "activation_bytes", "buffer_bytes")
_BYTE_FIELDS = frozenset({"weight_bytes", "activation_bytes", "buffer_bytes", "bytes"})


@dataclass
class LayerGraph:
    """A model as an annotated layer graph (a chain in the canonical problem)."""

    name: str
    graph: nx.DiGraph = field(default_factory=nx.DiGraph)
    input_bytes: int = 0
    link: Link | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def chain(
        cls,
        name: str,
        layers: Iterable[Mapping[str, Any]],
        *,
        input_bytes: int = 0,
        link: Link | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> LayerGraph:
        """Build a chain: each layer feeds the next with its activation bytes."""
        lg = cls(name=name, input_bytes=input_bytes, link=link, metadata=dict(metadata or {}))
        previous: str | None = None
        for index, layer in enumerate(layers):
            layer_name = layer.get("name")
            if not isinstance(layer_name, str) or not layer_name:
                raise InvalidInputError(f"layers[{index}].name: expected a non-empty string, "
                                        f"got {layer_name!r}")
            if layer_name in lg.graph:
                raise InvalidInputError(f"layers[{index}].name: duplicate layer name {layer_name!r}")
            attrs = {k: v for k, v in layer.items() if k != "name"}
            attrs.setdefault("buffer_bytes", 0)
            lg.graph.add_node(layer_name, order=index, **attrs)
            if previous is not None:
                lg.graph.add_edge(previous, layer_name,
                                  bytes=lg.graph.nodes[previous].get("activation_bytes", 0))
            previous = layer_name
        lg.validate()
        return lg

    def order(self) -> list[str]:
        """Layers in execution order: topological, ties broken by insertion order."""
        key = {n: d.get("order", i) for i, (n, d) in enumerate(self.graph.nodes(data=True))}
        return list(nx.lexicographical_topological_sort(self.graph, key=lambda n: key[n]))

    def layers(self) -> list[dict[str, Any]]:
        """Node attribute dicts in execution order, each with its ``name``."""
        return [{"name": n, **self.graph.nodes[n]} for n in self.order()]

    def __len__(self) -> int:
        return int(self.graph.number_of_nodes())

    def validate(self, required: Iterable[str] = REQUIRED_FIELDS) -> None:
        """Raise InvalidInputError naming the node and the field of the first problem found."""
        if self.graph.number_of_nodes() == 0:
            raise InvalidInputError(f"model {self.name!r}: has no layers")
        check_number(self.input_bytes, "input_bytes", integral=True)
        if not nx.is_directed_acyclic_graph(self.graph):
            cycle = nx.find_cycle(self.graph)
            nodes = " -> ".join(str(u) for u, _ in cycle)
            raise InvalidInputError(f"model {self.name!r}: the layer graph has a cycle: {nodes}")
        for node, data in self.graph.nodes(data=True):
            for name in required:
                if name not in data:
                    raise InvalidInputError(f"layer {node!r}: missing field {name!r}")
            for name in (*FOOTPRINT_FIELDS, "latency_s", "latency_hbm_s"):
                if name in data:
                    check_number(data[name], f"layer {node!r}.{name}",
                                 integral=name in _BYTE_FIELDS)
        for u, v, data in self.graph.edges(data=True):
            if "bytes" in data:
                check_number(data["bytes"], f"edge {u!r}->{v!r}.bytes", integral=True)

    def total(self, attribute: str) -> float:
        return float(sum(d.get(attribute, 0) for _, d in self.graph.nodes(data=True)))
