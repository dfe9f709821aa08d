"""Ordered placement on a cluster: stage j on rank j (no tensor parallelism).

Under a time budget z, stage j starting at boundary p can end anywhere in (p, reach_j(p)],
reach_j being the reach of stage j's view (its rank's kind, and the link from rank j - 1).
The boundaries reachable after exactly j stages, B_j, follow: B_0 = {0}, B_{j+1} = the union
over p in B_j of (p, reach_j(p)]. Unlike the canonical problem's prefix, B_j need not be an
interval (a layer may fit one kind and not the next): each step is a running maximum of the
reaches over B_j, O(n) per stage after the reach arrays, one per distinct view.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .fleet import rank_view
from .free import reach_union
from .problem import Problem

__all__ = ["ordered_partition", "ordered_reach", "ordered_stages", "ordered_views"]


def ordered_views(problem: Problem, order: Sequence[int] | None = None) -> list[Problem]:
    """The view of each stage j < the stage limit: rank j's kind (``order[j]``'s, when the
    stages take the ranks in another order), entered from the rank before."""
    ranks = list(range(problem.stage_limit)) if order is None else list(order)
    return [rank_view(problem, r, None if j == 0 else ranks[j - 1])
            for j, r in enumerate(ranks[:problem.stage_limit])]


def _reach(view: Problem, z: float | None, strict: bool) -> np.ndarray:
    cap = view.capacity_reach
    if z is None:
        return cap
    return view.snap(np.minimum(cap, view.time_reach(z, strict=strict)))


def ordered_reach(problem: Problem, z: float | None, *, strict: bool = False,
                  order: Sequence[int] | None = None
                  ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(B_0, B_1, ... as boolean arrays over boundaries 0..n, up to the first that holds n or is
    empty; the reach array each stage used). ``z`` None: capacity alone; ``strict``: time < z;
    ``order``: the ranks in the order the stages take them (default 0, 1, 2...)."""
    n = problem.n
    views = ordered_views(problem, order)
    cache: dict[int, np.ndarray] = {}
    here = np.zeros(n + 1, dtype=bool)
    here[0] = True
    sets, reaches = [here], []
    for view in views:
        if here[n] or not here.any():
            break
        reach = cache.get(id(view))
        if reach is None:
            reach = cache[id(view)] = _reach(view, z, strict)
        here = reach_union(here[None, :], reach)[0]
        sets.append(here)
        reaches.append(reach)
    return sets, reaches


def ordered_stages(problem: Problem, z: float | None, *, strict: bool = False,
                   order: Sequence[int] | None = None) -> int | None:
    """Fewest stages of an ordered plan with every stage within capacity and time <= z (< z
    when strict); None when none exists within the stage limit."""
    sets, _ = ordered_reach(problem, z, strict=strict, order=order)
    for j, here in enumerate(sets):
        if here[problem.n]:
            return j
    return None


def ordered_partition(problem: Problem, z: float | None,
                      order: Sequence[int] | None = None) -> tuple[int, ...] | None:
    """The ordered plan with every stage time <= z: the fewest stages, then, from the last
    stage back, each stage starting as early as it can. Exact methods pass their optimum
    through it, so they return the same plan."""
    sets, reaches = ordered_reach(problem, z, order=order)
    n = problem.n
    k = next((j for j, here in enumerate(sets) if here[n]), None)
    if k is None:
        return None
    bounds = [n]
    end = n
    for j in range(k - 1, -1, -1):
        ok = np.flatnonzero(sets[j][:end] & (reaches[j][:end] >= end))
        if ok.size == 0:  # unreachable: end is in B_{j+1}, so some p in B_j reaches it
            raise AssertionError(f"ordered walk-back found no start for stage {j}")
        end = int(ok[0])
        bounds.append(end)
    return tuple(reversed(bounds))
