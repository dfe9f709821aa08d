"""The rows every segment formulation shares: one binary per candidate stage [s, e).

Flow: exactly one segment leaves position 0 and one enters n; at every position between, what
enters leaves. Time: for each start s, z >= sum over the segments leaving s of their time (at most
one leaves s on a chosen path, so the sum is that stage's time). Built once here, for the
canonical, tensor-parallel and tiered formulations alike.
"""

from __future__ import annotations

import numpy as np

from ...core.errors import SolverError
from .model import Row

__all__ = ["chain_of", "flow_rows", "start_time_rows", "state_flow_rows", "state_time_rows"]


def _by_position(positions: np.ndarray, n: int) -> list[np.ndarray]:
    """For p in 0..n, the indices k with positions[k] == p, in index order."""
    order = np.argsort(positions, kind="stable")
    cuts = np.searchsorted(positions[order], np.arange(n + 2))
    return [order[cuts[p]:cuts[p + 1]] for p in range(n + 1)]


def flow_rows(starts: np.ndarray, ends: np.ndarray, n: int) -> list[Row]:
    """Flow conservation from position 0 to n over the segments [starts[k], ends[k])."""
    outs, ins = _by_position(starts, n), _by_position(ends, n)
    rows = [Row(outs[0], np.ones(len(outs[0])), "==", 1.0, name="leave_0"),
            Row(ins[n], np.ones(len(ins[n])), "==", 1.0, name="enter_n")]
    for p in range(1, n):
        into, out = ins[p], outs[p]
        if len(into) or len(out):
            rows.append(Row(np.concatenate((into, out)),
                            np.concatenate((np.ones(len(into)), -np.ones(len(out)))),
                            "==", 0.0, name=f"flow_{p}"))
    return rows


def start_time_rows(starts: np.ndarray, times_s: np.ndarray, n: int) -> list[Row]:
    """z >= the time of the segment chosen from each start (one segment at most leaves it)."""
    rows = []
    for p, group in enumerate(_by_position(starts, n)[:n]):
        if len(group):
            rows.append(Row(group, times_s[group], "<=", 0.0, z_coef=-1.0, timed=True,
                            active=1, name=f"time_{p}"))
    return rows


def chain_of(starts: np.ndarray, ends: np.ndarray, chosen: np.ndarray, n: int) -> np.ndarray:
    """The chosen segments' indices in chain order; SolverError if they do not form one chain
    from position 0 to n."""
    picked = np.flatnonzero(chosen)
    picked = picked[np.argsort(starts[picked], kind="stable")]
    s, e = starts[picked].tolist(), ends[picked].tolist()
    if not s or s[0] != 0 or any(a != b for a, b in zip(e[:-1], s[1:], strict=True)) \
            or e[-1] != n:
        raise SolverError(f"the ILP solution's segments {list(zip(s, e, strict=True))} do not "
                          "form a chain from the first layer to the last")
    return picked


def state_time_rows(tails: np.ndarray, times_s: np.ndarray, states: int,
                    first: int = 0) -> list[Row]:
    """z >= the time of the arc chosen out of each state from ``first`` on (one arc at most
    leaves a state on the path)."""
    rows = []
    for q in range(first, states):
        out = np.flatnonzero(tails == q)
        if out.size:
            rows.append(Row(out, times_s[out], "<=", 0.0, z_coef=-1.0, timed=True, active=1,
                            name=f"time_{q}"))
    return rows


def state_flow_rows(tails: np.ndarray, heads: np.ndarray, source: int, sinks: set[int],
                    states: int) -> list[Row]:
    """Flow over a graph of states (arc k from tails[k] to heads[k]): one unit leaves
    ``source``, one enters the sinks in all, and what enters any other state leaves it."""
    outs, ins = _by_position(tails, states - 1), _by_position(heads, states - 1)
    into_sinks = np.concatenate([ins[s] for s in sorted(sinks)]) if sinks else np.array([], int)
    rows = [Row(outs[source], np.ones(len(outs[source])), "==", 1.0, name="leave_source"),
            Row(into_sinks, np.ones(len(into_sinks)), "==", 1.0, name="enter_sinks")]
    for q in range(states):
        if q == source or q in sinks:
            continue
        into, out = ins[q], outs[q]
        if len(into) or len(out):
            rows.append(Row(np.concatenate((into, out)),
                            np.concatenate((np.ones(len(into)), -np.ones(len(out)))),
                            "==", 0.0, name=f"flow_{q}"))
    return rows
