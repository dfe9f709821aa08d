"""The cluster extension: devices of one or more kinds in nodes, and where each stage runs.

A fleet is an ordered list of ranks, numbered node by node and, inside a node, kind by kind.
Each kind has a capacity and its own time per layer; each node has a link between its devices,
and one inter-node link joins any two nodes. A stage on rank r (a block of t ranks with tensor
parallelism, inside one node and of one kind) must fit its kind's capacity; its time is the sum
of its layers' times on that kind (split t ways, plus the all-reduces over its node's link), plus,
for every stage but the first, its input activation over the link between the previous stage's
last device and its first (the node's link when both are in one node, else the inter-node link).

Placement ``ordered``: the stages take the ranks in order from rank 0. Placement ``free``: the
solver chooses which devices host the stages and in which order.

A stage's time and memory are those of a canonical *view* of the problem: the same layers with
its kind's capacity and times, its inbound link, and its node's link for all-reduces. The views
are built once per (kind, inbound link, node) and every method, check and plan evaluates a stage
through them, so all agree to the last bit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .errors import InvalidInputError
from .link import MAX_BYTES, MAX_SECONDS, Link, check_whole

if TYPE_CHECKING:
    from .problem import Problem

__all__ = ["PLACEMENTS", "DeviceClass", "Fleet", "ordered_ranks", "rank_view", "stage_view"]

PLACEMENTS = ("ordered", "free")


@dataclass(frozen=True)
class DeviceClass:
    """The devices of one kind in one node: interchangeable for every stage."""

    node: int
    kind: int
    ranks: tuple[int, ...]
    """Consecutive ranks."""


@dataclass(frozen=True, eq=False)
class Fleet:
    """The cluster a problem is placed on."""

    kinds: tuple[str, ...]
    capacity_bytes: tuple[int, ...]
    """Per kind."""
    latency_s: np.ndarray
    """Per kind and layer: shape (kinds, layers)."""
    rank_kind: tuple[int, ...]
    rank_node: tuple[int, ...]
    node_links: tuple[Link, ...]
    """Per node: the link between two of its devices."""
    inter_node_link: Link
    placement: str = "ordered"
    name: str = ""
    fixed_s: np.ndarray | None = None
    """Per kind and layer: the part of ``latency_s`` that tensor parallelism does not split (the
    kernels' overhead); None: the problem's own figure, capped at each kind's latency."""

    def __post_init__(self) -> None:
        kinds = tuple(self.kinds)
        if not kinds or len(set(kinds)) != len(kinds) or \
                not all(isinstance(k, str) and k for k in kinds):
            raise InvalidInputError(f"expected distinct non-empty names, got {list(kinds)}",
                                    field="cluster.device_types")
        caps = tuple(check_whole(c, f"cluster.device_types.{k}.capacity_bytes")
                     for k, c in zip(kinds, self.capacity_bytes, strict=False))
        if len(caps) != len(kinds) or any(c >= MAX_BYTES for c in caps):
            raise InvalidInputError(f"expected one capacity below 2^62 per kind, got "
                                    f"{list(self.capacity_bytes)}", field="cluster.capacity_bytes")
        try:
            lat = np.asarray(self.latency_s, dtype=np.float64)
        except (TypeError, ValueError):
            raise InvalidInputError("expected numbers", field="cluster.latency_s") from None
        if lat.ndim != 2 or lat.shape[0] != len(kinds) or np.any(~np.isfinite(lat)) \
                or np.any(lat < 0) or not float(lat.sum(axis=1).max(initial=0.0)) < MAX_SECONDS:
            raise InvalidInputError("expected one finite time >= 0 per kind and layer",
                                    field="cluster.latency_s")
        lat.setflags(write=False)
        rk, rn = tuple(self.rank_kind), tuple(self.rank_node)
        if not rk or len(rk) != len(rn):
            raise InvalidInputError("a cluster needs at least one device", field="cluster.nodes")
        links = tuple(self.node_links)
        if any(not 0 <= k < len(kinds) for k in rk) or any(not 0 <= g < len(links) for g in rn):
            raise InvalidInputError("a device names an unknown kind or node", field="cluster.nodes")
        if list(rn) != sorted(rn):
            raise InvalidInputError("ranks must be numbered node by node", field="cluster.nodes")
        seen: set[tuple[int, int]] = set()
        for r, (k, g) in enumerate(zip(rk, rn, strict=True)):
            if r == 0 or (rk[r - 1], rn[r - 1]) != (k, g):  # a new run of one kind in one node
                if (g, k) in seen:
                    raise InvalidInputError(f"node {g}: ranks must run kind by kind",
                                            field="cluster.nodes")
                seen.add((g, k))
        if not all(isinstance(x, Link) for x in (*links, self.inter_node_link)):
            raise InvalidInputError("expected links", field="cluster.links")
        if self.placement not in PLACEMENTS:
            raise InvalidInputError(f"expected ordered or free, got {self.placement!r}",
                                    field="placement")
        put = object.__setattr__
        if self.fixed_s is not None:
            try:
                fixed = np.asarray(self.fixed_s, dtype=np.float64)
            except (TypeError, ValueError):
                raise InvalidInputError("expected numbers", field="cluster.fixed_s") from None
            if fixed.shape != lat.shape or np.any(~np.isfinite(fixed)) or np.any(fixed < 0):
                raise InvalidInputError("expected one time >= 0 per kind and layer",
                                        field="cluster.fixed_s")
            fixed = np.minimum(fixed, lat)  # a fixed part cannot exceed the whole
            fixed.setflags(write=False)
            put(self, "fixed_s", fixed)
        put(self, "kinds", kinds)
        put(self, "capacity_bytes", caps)
        put(self, "latency_s", lat)
        put(self, "rank_kind", rk)
        put(self, "rank_node", rn)
        put(self, "node_links", links)

    @property
    def size(self) -> int:
        return len(self.rank_kind)

    @property
    def nodes(self) -> int:
        return len(self.node_links)

    def link_between(self, a: int, b: int) -> Link:
        """The link a transfer from rank a to rank b crosses."""
        if self.rank_node[a] == self.rank_node[b]:
            return self.node_links[self.rank_node[a]]
        return self.inter_node_link

    def block_ok(self, rank: int, t: int) -> bool:
        """Whether ranks rank .. rank + t - 1 exist and are of one node and one kind."""
        if rank < 0 or rank + t > self.size:
            return False
        block = range(rank, rank + t)
        return len({self.rank_node[r] for r in block}) == 1 and \
            len({self.rank_kind[r] for r in block}) == 1

    @property
    def classes(self) -> tuple[DeviceClass, ...]:
        """The devices grouped by (node, kind), in rank order."""
        out: dict[tuple[int, int], list[int]] = {}
        for r, (k, g) in enumerate(zip(self.rank_kind, self.rank_node, strict=True)):
            out.setdefault((g, k), []).append(r)
        return tuple(DeviceClass(g, k, tuple(ranks)) for (g, k), ranks in out.items())

    def links(self) -> tuple[Link, ...]:
        """Every distinct link of the cluster."""
        return tuple(dict.fromkeys((*self.node_links, self.inter_node_link)))

    def with_placement(self, placement: str) -> Fleet:
        return dataclasses.replace(self, placement=placement)

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "kinds": list(self.kinds),
                "capacity_bytes": list(self.capacity_bytes),
                "latency_s": self.latency_s.tolist(), "rank_kind": list(self.rank_kind),
                "rank_node": list(self.rank_node),
                "node_links": [x.to_dict() for x in self.node_links],
                "inter_node_link": self.inter_node_link.to_dict(), "placement": self.placement,
                "fixed_s": None if self.fixed_s is None else self.fixed_s.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Fleet:
        links, inter = data["node_links"], data["inter_node_link"]
        if not isinstance(links, list) or not isinstance(inter, dict):
            raise InvalidInputError("expected links", field="cluster.links")
        return cls(tuple(data["kinds"]), tuple(data["capacity_bytes"]),  # type: ignore[arg-type]
                   np.asarray(data["latency_s"]), tuple(data["rank_kind"]),  # type: ignore[arg-type]
                   tuple(data["rank_node"]), tuple(Link(**x) for x in links),  # type: ignore[arg-type]
                   Link(**inter), str(data["placement"]), str(data.get("name", "")),
                   None if data.get("fixed_s") is None
                   else np.asarray(data["fixed_s"]))


def stage_view(problem: Problem, kind: int, in_link: Link, node: int) -> Problem:
    """The canonical problem a stage of ``kind`` entered over ``in_link`` sees (with the
    problem's tensor parallelism over ``node``'s link); built once per problem and key."""
    fleet = problem.fleet
    if fleet is None:
        raise InvalidInputError("the problem has no cluster", field="cluster")
    cache: dict[tuple[int, Link, int], Problem] = problem.__dict__.setdefault("_views", {})
    # the node matters only for the all-reduces: without them, nodes share their views
    key = (kind, in_link, node if problem.tensor_parallel is not None else -1)
    view = cache.get(key)
    if view is None:
        tp = problem.tensor_parallel
        if tp is not None:
            assert tp.fixed_s is not None  # filled in by TensorParallel
            # the kind's own fixed time where the fleet has it; else the problem's, capped
            fixed = fleet.fixed_s[kind] if fleet.fixed_s is not None \
                else np.minimum(tp.fixed_s, fleet.latency_s[kind])
            tp = dataclasses.replace(tp, link=fleet.node_links[node], fixed_s=fixed)
        view = problem.replace(fleet=None, capacity_bytes=fleet.capacity_bytes[kind],
                               latency_s=fleet.latency_s[kind], link=in_link,
                               tensor_parallel=tp)
        cache[key] = view
    return view


def rank_view(problem: Problem, rank: int, previous: int | None) -> Problem:
    """The view of a stage whose first device is ``rank``, after a stage ending on
    ``previous`` (None: the first stage, which reads the model input where it is)."""
    fleet = problem.fleet
    if fleet is None:
        raise InvalidInputError("the problem has no cluster", field="cluster")
    node = fleet.rank_node[rank]
    link = fleet.node_links[node] if previous is None else fleet.link_between(previous, rank)
    return stage_view(problem, fleet.rank_kind[rank], link, node)


def ordered_ranks(degrees: Sequence[int]) -> tuple[int, ...]:
    """First rank of each stage when the stages take the ranks in order."""
    ranks, rank = [], 0
    for t in degrees:
        ranks.append(rank)
        rank += t
    return tuple(ranks)
