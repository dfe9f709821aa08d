"""A LayerGraph lowered to the Problem every method sees, with the extensions it asks for.

Layers are taken in topological order; the bytes that cross each boundary come from the edges
that cross it (for a chain, the previous layer's activation).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..core.errors import InvalidInputError
from ..core.extensions import Residency, TensorParallel, allreduce_counts
from ..core.fleet import Fleet
from ..core.link import Link
from ..core.problem import MemoryModel, Problem
from ..core.training import Training
from ..hardware.cluster import Cluster
from .graph import LayerGraph

__all__ = [
    "allreduce_bytes_of",
    "allreduce_counts_of",
    "check_tp_degrees",
    "fleet_for",
    "kind_latencies",
    "overheads_of",
    "problem_from_graph",
    "residency_for",
    "tensor_parallel_for",
    "training_for",
]


def problem_from_graph(
    graph: LayerGraph,
    capacity_bytes: int,
    max_stages: int,
    memory_model: MemoryModel | str = MemoryModel.ADDITIVE,
    *,
    tensor_parallel: TensorParallel | None = None,
    residency: Residency | None = None,
    fleet: Fleet | None = None,
    training: Training | None = None,
) -> Problem:
    """Lower ``graph`` to a Problem (extensions optional: see tensor_parallel_for,
    residency_for, fleet_for and training_for). With a fleet, the canonical fields are rank 0's:
    its kind's capacity and times, its node's link; each stage's own come from the fleet."""
    graph.validate()
    order = graph.order()
    per_kind = [n for n in order if "latency_by_kind" in graph.graph.nodes[n]]
    if per_kind and fleet is None:
        raise InvalidInputError(f"layer {per_kind[0]!r} gives its latency per device kind; plan "
                                "it on a cluster that has those kinds", field="latency_s")
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
    latency = np.array([nodes[n]["latency_s"] for n in order], dtype=np.float64)
    link = graph.link
    # A model that gives KV bytes for some layers holds none in the others; none at all: None.
    kv = None
    if any("kv_bytes_per_token" in nodes[n] for n in order):
        kv = np.array([nodes[n].get("kv_bytes_per_token", 0) for n in order], dtype=np.float64)
    if fleet is not None:
        first = fleet.rank_kind[0]
        capacity_bytes, latency = fleet.capacity_bytes[first], fleet.latency_s[first]
        link = fleet.node_links[fleet.rank_node[0]]
    return Problem(
        names=tuple(order),
        weight_bytes=np.array([nodes[n]["weight_bytes"] for n in order], dtype=np.float64),
        activation_bytes=np.array([nodes[n]["activation_bytes"] for n in order],
                                  dtype=np.float64),
        buffer_bytes=np.array([nodes[n].get("buffer_bytes", 0) for n in order],
                              dtype=np.float64),
        latency_s=latency,
        capacity_bytes=capacity_bytes,
        max_stages=max_stages,
        memory_model=MemoryModel.of(memory_model),
        input_bytes=graph.input_bytes,
        link=link,
        cut_bytes=cut,
        tensor_parallel=tensor_parallel,
        residency=residency,
        fleet=fleet,
        kv_bytes_per_token=kv,
        training=training,
    )


def training_for(graph: LayerGraph, schedule: str, microbatches: int) -> Training:
    """The training extension from the layers' own fields where they give them (zoo, spec and
    Hugging Face models planned with --phase train; a chain JSON may), else the defaults: a
    backward pass of twice the forward, a stash of the layer's output, no optimizer state."""
    nodes = graph.graph.nodes
    order = graph.order()
    return Training(
        schedule, microbatches,
        np.array([nodes[n].get("backward_latency_s", 2 * nodes[n]["latency_s"]) for n in order],
                 dtype=np.float64),
        np.array([nodes[n].get("stash_bytes", nodes[n]["activation_bytes"]) for n in order],
                 dtype=np.float64),
        np.array([nodes[n].get("train_state_bytes", 0) for n in order], dtype=np.float64))


def kind_latencies(graph: LayerGraph, kinds: Sequence[str]) -> dict[str, np.ndarray]:
    """Per device kind, its layer times from a chain JSON: ``latency_s`` objects {kind:
    seconds}, or one number a layer for every kind."""
    out: dict[str, list[float]] = {kind: [] for kind in kinds}
    for layer in graph.layers():
        given = layer.get("latency_by_kind")
        for kind in kinds:
            if given is None:
                out[kind].append(float(layer["latency_s"]))
            elif kind in given:
                out[kind].append(float(given[kind]))
            else:
                raise InvalidInputError(f"layer {layer['name']!r} gives no latency for device "
                                        f"kind {kind!r} (it gives: {', '.join(given)})",
                                        field="latency_s")
    return {kind: np.array(times) for kind, times in out.items()}


def fleet_for(cluster: Cluster, latency_by_kind: Mapping[str, np.ndarray],
              capacity_by_kind: Mapping[str, int], placement: str,
              fixed_by_kind: Mapping[str, np.ndarray] | None = None) -> Fleet:
    """The cluster extension: the cluster's ranks, links, each kind's capacity and times (and,
    where known, the part of each time tensor parallelism does not split)."""
    kinds = cluster.kinds
    ranks = cluster.ranks
    fixed = None if fixed_by_kind is None else np.vstack([fixed_by_kind[k] for k in kinds])
    return Fleet(kinds, tuple(capacity_by_kind[k] for k in kinds),
                 np.vstack([latency_by_kind[k] for k in kinds]),
                 tuple(kinds.index(k) for k, _ in ranks), tuple(g for _, g in ranks),
                 tuple(node.link for node in cluster.nodes), cluster.inter_node_link, placement,
                 cluster.name, fixed)


def overheads_of(graph: LayerGraph) -> np.ndarray:
    """Per layer: its ``overhead_s`` (the kernels' fixed time the cost model wrote; 0 where
    absent), the part of its time that tensor parallelism does not split."""
    return np.array([float(layer.get("overhead_s", 0.0)) for layer in graph.layers()])


def allreduce_counts_of(graph: LayerGraph) -> np.ndarray:
    """Per layer: the all-reduces it does when tensor-parallel (its ``allreduces`` where the cost
    model or a chain JSON gives them, else by its ``kind``: see allreduce_counts)."""
    layers = graph.layers()
    by_kind = allreduce_counts([layer.get("kind") for layer in layers])
    return np.array([layer.get("allreduces", c) for layer, c in zip(layers, by_kind, strict=True)],
                    dtype=np.int64)


def allreduce_bytes_of(graph: LayerGraph) -> np.ndarray:
    """Per layer, in execution order: the bytes it all-reduces when tensor-parallel (its
    ``allreduce_bytes`` where the cost model wrote them, in the reduction dtype; else its output
    once per all-reduce, ``allreduce_counts_of``)."""
    layers = graph.layers()
    counts = allreduce_counts_of(graph)
    return np.array([layer.get("allreduce_bytes", int(c) * int(layer["activation_bytes"]))
                     for layer, c in zip(layers, counts, strict=True)], dtype=np.int64)


def check_tp_degrees(graph: LayerGraph, degrees: Sequence[int]) -> None:
    """Every degree must split each attention layer's heads evenly: t divides the query heads,
    and the KV heads either divide by t or are replicated (t a multiple of them)."""
    for layer in graph.layers():
        heads, kv = layer.get("heads"), layer.get("kv_heads")
        if not heads:
            continue
        for t in degrees:
            if heads % t:
                raise InvalidInputError(
                    f"degree {t} does not divide the {heads} attention heads of layer "
                    f"{layer['name']!r} ({graph.name}): use a divisor of {heads}",
                    field="tp_degrees")
            if kv and kv % t and t % kv:
                raise InvalidInputError(
                    f"degree {t} neither divides nor is a multiple of the {kv} KV heads of "
                    f"layer {layer['name']!r} ({graph.name})", field="tp_degrees")


def tensor_parallel_for(graph: LayerGraph, degrees: Sequence[int], devices_per_node: int = 8,
                        link: Link | None = None, algorithm: str = "ring") -> TensorParallel:
    """The tensor-parallel extension for ``graph``: all-reduce bytes and counts from its layers,
    each layer's fixed time (``overhead_s``), over ``link`` (default: the graph's own link
    between devices); the degrees must split every layer's attention heads."""
    link = link if link is not None else graph.link
    if link is None:
        raise InvalidInputError(f"model {graph.name!r} has no link between devices to all-reduce "
                                "over; give one", field="tp_link")
    check_tp_degrees(graph, degrees)
    latency = np.array([layer["latency_s"] if isinstance(layer["latency_s"], int | float)
                        else 0.0 for layer in graph.layers()], dtype=np.float64)
    fixed = np.minimum(overheads_of(graph), latency)
    return TensorParallel(tuple(degrees), devices_per_node, allreduce_bytes_of(graph), link,
                          allreduce_count=allreduce_counts_of(graph), fixed_s=fixed,
                          algorithm=algorithm)


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
