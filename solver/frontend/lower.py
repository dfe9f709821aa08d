"""A LayerGraph lowered to the Problem every method sees, with the extensions it asks for.

Layers are taken in topological order; the bytes that cross each boundary come from the edges
that cross it (for a chain, the previous layer's activation).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..core.errors import InvalidInputError
from ..core.extensions import Residency, TensorParallel, default_allreduce_bytes
from ..core.link import Link
from ..core.problem import MemoryModel, Problem
from .graph import LayerGraph

__all__ = ["allreduce_bytes_of", "problem_from_graph", "residency_for", "tensor_parallel_for"]


def problem_from_graph(
    graph: LayerGraph,
    capacity_bytes: int,
    max_stages: int,
    memory_model: MemoryModel | str = MemoryModel.ADDITIVE,
    *,
    tensor_parallel: TensorParallel | None = None,
    residency: Residency | None = None,
) -> Problem:
    """Lower ``graph`` to a Problem (extensions optional: see tensor_parallel_for and
    residency_for)."""
    graph.validate()
    order = graph.order()
    position = {name: i for i, name in enumerate(order)}
    nodes = graph.graph.nodes
    cut = np.zeros(len(order), dtype=np.int64)
    cut[0] = graph.input_bytes
    diff = np.zeros(len(order) + 1, dtype=np.int64)
    for u, v, data in graph.graph.edges(data=True):
        nbytes = int(data.get("bytes", nodes[u].get("activation_bytes", 0)))
        # The edge crosses every boundary p with position[u] < p <= position[v].
        diff[position[u] + 1] += nbytes
        diff[position[v] + 1] -= nbytes
    cut[1:] = np.cumsum(diff)[1:len(order)]
    return Problem(
        names=tuple(order),
        weight_bytes=np.array([nodes[n]["weight_bytes"] for n in order], dtype=np.float64),
        activation_bytes=np.array([nodes[n]["activation_bytes"] for n in order],
                                  dtype=np.float64),
        buffer_bytes=np.array([nodes[n].get("buffer_bytes", 0) for n in order],
                              dtype=np.float64),
        latency_s=np.array([nodes[n]["latency_s"] for n in order], dtype=np.float64),
        capacity_bytes=capacity_bytes,
        max_stages=max_stages,
        memory_model=MemoryModel.of(memory_model),
        input_bytes=graph.input_bytes,
        link=graph.link,
        cut_bytes=cut,
        tensor_parallel=tensor_parallel,
        residency=residency,
    )


def allreduce_bytes_of(graph: LayerGraph) -> np.ndarray:
    """Per layer, in execution order: the bytes it all-reduces when tensor-parallel (by its
    ``kind``: see default_allreduce_bytes)."""
    layers = graph.layers()
    return default_allreduce_bytes([layer.get("kind") for layer in layers],
                                   np.array([layer["activation_bytes"] for layer in layers]))


def tensor_parallel_for(graph: LayerGraph, degrees: Sequence[int], devices_per_node: int = 8,
                        link: Link | None = None) -> TensorParallel:
    """The tensor-parallel extension for ``graph``: all-reduce bytes from its layer kinds, over
    ``link`` (default: the graph's own link between devices)."""
    link = link if link is not None else graph.link
    if link is None:
        raise InvalidInputError(f"model {graph.name!r} has no link between devices to all-reduce "
                                "over; give one", field="tp_link")
    return TensorParallel(tuple(degrees), devices_per_node, allreduce_bytes_of(graph), link)


def residency_for(graph: LayerGraph) -> Residency:
    """The tiered-residency extension: each layer's latency with its weights on chip
    (``latency_s``, timed at the capacity tier) and streamed (``latency_hbm_s``), which the
    cost model writes when the capacity is an on-chip tier."""
    layers = graph.layers()
    missing = [layer["name"] for layer in layers if "latency_hbm_s" not in layer]
    if missing:
        raise InvalidInputError(f"layer {missing[0]!r} of {graph.name!r} has no streamed latency "
                                "(latency_hbm_s): build the model against an on-chip capacity "
                                "tier, such as l2", field="residency")
    return Residency(np.array([layer["latency_s"] for layer in layers]),
                     np.array([layer["latency_hbm_s"] for layer in layers]))
