"""Free placement on a cluster (no tensor parallelism): which boundaries a budget z reaches.

Devices of one kind in one node (a class) are interchangeable, so what a partial plan has used
is a vector u (devices taken of each class), and what its next stage pays to come in depends
only on the node of its last stage. B[g][u] is the set of boundaries reachable with exactly the
devices u, the last stage on node g (g = -1 before any stage): a stage on class c entered from
node g reaches (p, reach(p)] for each p in B[g][u], with the reach of c's view (its kind, the
link from g's node) under z. Vectors are visited by how many devices they use, every vector of
a level in one numpy step per (class, node), so a probe costs O(vectors x n) array work.
The state space is the product over classes of (devices + 1), times the nodes + 1: exact where
that is small (FREE_MAX_BYTES), and what the parametric search and the ILP's certificate use.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import InvalidInputError
from .fleet import DeviceClass, Fleet, stage_view
from .problem import Problem

__all__ = [
    "FREE_MAX_BYTES",
    "free_partition",
    "free_reach",
    "free_search_bytes",
    "free_search_fits",
    "free_views",
    "reach_union",
]

FREE_MAX_BYTES = 300_000_000
"""What a search may hold: per device-count vector, its digits and its reachable sets."""


def _fleet(problem: Problem) -> Fleet:
    if problem.fleet is None:
        raise InvalidInputError("the problem has no cluster", field="cluster")
    return problem.fleet


def free_search_bytes(problem: Problem) -> int:
    """The bytes the search would hold: per device-count vector, its digits (int32 per class)
    and its reachable sets (a boolean per node + 1 and boundary)."""
    fleet = _fleet(problem)
    vectors = math.prod(len(c.ranks) + 1 for c in fleet.classes)
    return vectors * (4 * len(fleet.classes) + (fleet.nodes + 1) * (problem.n + 1))


def free_search_fits(problem: Problem) -> bool:
    """Whether the exact search applies: no tensor parallelism, and FREE_MAX_BYTES holds it."""
    return problem.tensor_parallel is None and free_search_bytes(problem) <= FREE_MAX_BYTES


def _view(problem: Problem, cls: DeviceClass, last_node: int) -> Problem:
    fleet = _fleet(problem)
    inside = last_node < 0 or last_node == cls.node
    link = fleet.node_links[cls.node] if inside else fleet.inter_node_link
    return stage_view(problem, cls.kind, link, cls.node)


def free_views(problem: Problem) -> list[Problem]:
    """Every view a stage of a free placement may have: each class, entered from each node."""
    fleet = _fleet(problem)
    views = {id(v): v for cls in fleet.classes for g in range(-1, fleet.nodes)
             for v in (_view(problem, cls, g),)}
    return list(views.values())


def reach_union(rows: np.ndarray, reach: np.ndarray) -> np.ndarray:
    """For each row (a set of boundaries 0..n), the union over its p < n of (p, reach[p]]:
    e is in it iff some p < e of the row has reach[p] >= e, a running maximum."""
    n = len(reach)
    masked = np.where(rows[:, :n], reach[None, :], -1)
    best = np.maximum.accumulate(masked, axis=1)
    out = np.zeros((rows.shape[0], n + 1), dtype=bool)
    out[:, 1:] = best >= np.arange(1, n + 1)[None, :]
    return out


class _Search:
    """One budget's reachable sets, kept for the walk back."""

    def __init__(self, problem: Problem, z: float | None, strict: bool) -> None:
        fleet = _fleet(problem)
        if problem.tensor_parallel is not None:
            raise InvalidInputError("the free-placement search plans one device a stage",
                                    field="tensor_parallel")
        if free_search_bytes(problem) > FREE_MAX_BYTES:
            raise InvalidInputError(
                f"the exact search for free placement on this cluster would hold "
                f"{free_search_bytes(problem):,} bytes, more than its {FREE_MAX_BYTES:,}; use the "
                "ilp method",
                field="method")
        self.problem, self.fleet = problem, fleet
        self.classes = fleet.classes
        self.sizes = [len(c.ranks) for c in self.classes]
        self.radix = [math.prod(s + 1 for s in self.sizes[:c]) for c in range(len(self.sizes))]
        vectors = math.prod(s + 1 for s in self.sizes)
        codes = np.arange(vectors)
        self.digits = np.stack([((codes // r) % (s + 1)).astype(np.int32)
                                for r, s in zip(self.radix, self.sizes, strict=True)], axis=1)
        self.level = self.digits.sum(axis=1)
        n = problem.n
        # B[g + 1][code] over boundaries 0..n; g = -1 (no stage yet) is row 0
        self.sets = np.zeros((fleet.nodes + 1, vectors, n + 1), dtype=bool)
        self.sets[0, 0, 0] = True
        self.reaches: dict[int, np.ndarray] = {}
        self.z, self.strict = z, strict
        self._run()

    def reach(self, cls: DeviceClass, last_node: int) -> np.ndarray:
        view = _view(self.problem, cls, last_node)
        found = self.reaches.get(id(view))
        if found is None:
            found = view.capacity_reach
            if self.z is not None:
                found = view.snap(np.minimum(found, view.time_reach(self.z, strict=self.strict)))
            self.reaches[id(view)] = found
        return found

    def _run(self) -> None:
        n = self.problem.n
        for level in range(min(self.problem.stage_limit, int(self.level.max()))):
            codes = np.flatnonzero(self.level == level)
            for g in range(-1, self.fleet.nodes):
                here = self.sets[g + 1, codes]
                alive = here.any(axis=1) & ~here[:, n]  # a finished plan needs no more stages
                if not alive.any():
                    continue
                rows, source = here[alive], codes[alive]
                for c, cls in enumerate(self.classes):
                    room = self.digits[source, c] < self.sizes[c]
                    if not room.any():
                        continue
                    new = reach_union(rows[room], self.reach(cls, g))
                    targets = source[room] + self.radix[c]
                    self.sets[cls.node + 1, targets] |= new

    def finish(self) -> tuple[int, int] | None:
        """(node row, code) of the plan with the fewest devices that covers every layer."""
        n = self.problem.n
        done = self.sets[:, :, n]
        if not done.any():
            return None
        g_rows, codes = np.nonzero(done)
        best = min(zip(self.level[codes].tolist(), codes.tolist(), g_rows.tolist(),
                       strict=True))
        return best[2], best[1]

    def walk_back(self, row: int, code: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The bounds and first rank of each stage of a plan ending in state (row, code):
        each stage, from the last, starting as early as it can."""
        n = self.problem.n
        bounds, stage_classes, end = [n], [], n
        while code != 0:
            g = row - 1
            step = None
            for c, cls in enumerate(self.classes):
                if cls.node != g or self.digits[code, c] == 0:
                    continue
                prev = code - self.radix[c]
                for prev_row in range(self.fleet.nodes + 1):
                    if (prev == 0) != (prev_row == 0):
                        continue  # only the empty plan has no last node
                    reach = self.reach(cls, prev_row - 1)
                    ok = np.flatnonzero(self.sets[prev_row, prev, :end] & (reach[:end] >= end))
                    if ok.size and (step is None or int(ok[0]) < step[0]):
                        step = (int(ok[0]), c, prev, prev_row)
            if step is None:  # unreachable: (row, code) holds end, so some state reached it
                raise AssertionError(f"free walk-back found no stage ending at {end}")
            end, c, code, row = step
            bounds.append(end)
            stage_classes.append(c)
        stage_classes.reverse()
        taken = [0] * len(self.classes)
        firsts = []
        for c in stage_classes:
            firsts.append(self.classes[c].ranks[taken[c]])
            taken[c] += 1
        return tuple(reversed(bounds)), tuple(firsts)


def free_reach(problem: Problem, z: float | None, *, strict: bool = False) -> int | None:
    """The fewest devices of a free placement with every stage within capacity and time <= z
    (< z when strict); None when there is none."""
    search = _Search(problem, z, strict)
    found = search.finish()
    return None if found is None else int(search.level[found[1]])


def free_partition(problem: Problem, z: float | None
                   ) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """(bounds, first rank per stage) of a free placement with every stage time <= z, with the
    fewest devices; None when there is none."""
    search = _Search(problem, z, False)
    found = search.finish()
    return None if found is None else search.walk_back(*found)
