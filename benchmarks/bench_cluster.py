"""Clusters: ordered placement at scale (the parametric search), free placement by the ILP on
mixed fleets, and what free placement gains over ordered. Seeded random chains
(solver.core.synthetic); writes results/bench_cluster.csv, results/cluster_times.png and prints
a Markdown table.

    python benchmarks/bench_cluster.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from common import write_csv

from solver import Fleet, Link, Problem, SolveOptions, random_problem, solve
from solver.algorithms import dp_bottleneck

NVLINK, PCIE, IB = Link(3.7e11, 2e-6), Link(3.2e10, 5e-6), Link(5e10, 5e-6)


def fleet(seed: int, n: int, nodes: int, per_node: int, kinds: int, placement: str,
          base: Problem) -> Fleet:
    """``nodes`` nodes of ``per_node`` devices; kind k has capacity x (1 + k) / kinds of the
    largest and runs (1 + k/2)x faster, and each node holds a random mix of the kinds."""
    rng = np.random.default_rng(seed)
    rank_kind, rank_node = [], []
    for g in range(nodes):
        mix = sorted(rng.integers(0, kinds, per_node).tolist())
        rank_kind += mix
        rank_node += [g] * per_node
    caps = tuple(int(base.capacity_bytes * (1 + k) / kinds) for k in range(kinds))
    lat = np.vstack([base.latency_s / (1 + k / 2) for k in range(kinds)])
    links = tuple(NVLINK if g % 2 == 0 else PCIE for g in range(nodes))
    return Fleet(tuple(f"k{k}" for k in range(kinds)), caps, lat, tuple(rank_kind),
                 tuple(rank_node), links, IB, placement, f"{nodes}x{per_node}")


def ordered_at_scale(n: int, nodes: int, per_node: int, seed: int = 0) -> dict[str, object]:
    # capacity: a device holds about 1.6 / devices of the model (a stage of the large kind)
    base = random_problem(seed, n, tightness=1.6 / (nodes * per_node), max_stages=nodes * per_node)
    problem = base.replace(fleet=fleet(seed, n, nodes, per_node, 2, "ordered", base))
    t0 = time.perf_counter()
    part = solve(problem, "parametric")
    seconds = time.perf_counter() - t0
    canonical_s = None
    if n <= 4000:
        t1 = time.perf_counter()
        dp_bottleneck(base)
        canonical_s = round(time.perf_counter() - t1, 3)
    t2 = time.perf_counter()
    solve(base, "parametric")
    return {"case": "ordered", "n": n, "devices": nodes * per_node, "kinds": 2, "nodes": nodes,
            "method": "parametric", "status": part.status.value, "seconds": round(seconds, 3),
            "objective": part.objective, "canonical_parametric_s":
                round(time.perf_counter() - t2, 3), "canonical_dp_s": canonical_s}


def free_vs_ordered(n: int, nodes: int, per_node: int, seed: int, limit: float
                    ) -> list[dict[str, object]]:
    base = random_problem(seed, n, tightness=0.15, max_stages=nodes * per_node)
    free = base.replace(fleet=fleet(seed, n, nodes, per_node, 3, "free", base))
    ordered = free.replace(fleet=free.fleet.with_placement("ordered"))  # type: ignore[union-attr]
    t0 = time.perf_counter()
    best_ordered = solve(ordered, "parametric")
    ordered_s = time.perf_counter() - t0
    rows = []
    for method in ("parametric", "ilp"):
        t1 = time.perf_counter()
        part = solve(free, method, SolveOptions(time_limit_s=limit))
        seconds = time.perf_counter() - t1
        gain = None if best_ordered.objective is None or part.objective is None else \
            best_ordered.objective / part.objective
        rows.append({"case": "free", "n": n, "devices": nodes * per_node, "kinds": 3,
                     "nodes": nodes, "method": method, "status": part.status.value,
                     "seconds": round(seconds, 3), "objective": part.objective, "gap": part.gap,
                     "seed": seed, "ordered_objective": best_ordered.objective,
                     "ordered_s": round(ordered_s, 3),
                     "free_gain": None if gain is None else round(gain, 4)})
    return rows


def figure(rows: list[dict[str, object]], path: str) -> object:
    """Solve time against n: ordered placement (parametric) and free placement (ILP, the
    median over seeds of each size and cluster shape)."""
    import pandas as pd

    from solver.analysis import plot_solve_times

    table = pd.DataFrame(rows)
    table["method"] = [f"{c}, {m} ({d} devices in {g} nodes)" for c, m, d, g in
                       zip(table["case"], table["method"], table["devices"], table["nodes"],
                           strict=True)]
    table.loc[table["case"] == "ordered", "method"] = "ordered, parametric (64-256 devices)"
    timing = table.groupby(["method", "n"], as_index=False)["seconds"].median()
    return plot_solve_times(timing, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--time-limit", type=float, default=60.0)
    parser.add_argument("--out", default="results/bench_cluster.csv")
    parser.add_argument("--figure", default="results/cluster_times.png")
    args = parser.parse_args()
    rows = []
    sizes = [(2000, 8, 8), (10_000, 32, 8)] if args.quick else \
        [(1000, 8, 8), (2000, 16, 8), (5000, 32, 8), (10_000, 32, 8)]
    for n, nodes, per_node in sizes:
        rows.append(ordered_at_scale(n, nodes, per_node))
        print(rows[-1], file=sys.stderr, flush=True)
    free_cases = [(32, 2, 8), (128, 2, 8)] if args.quick else \
        [(32, 2, 8), (64, 2, 8), (128, 2, 8), (128, 4, 4)]
    for n, nodes, per_node in free_cases:
        for seed in range(1 if args.quick else 3):
            for row in free_vs_ordered(n, nodes, per_node, seed, args.time_limit):
                rows.append(row)
                print(row, file=sys.stderr, flush=True)
    print(f"written to {write_csv(args.out, rows)}")
    print(f"figure: {figure(rows, args.figure)}")
    print("| placement | n | devices | kinds x nodes | method | status | seconds | free / ordered |")
    print("|---|---:|---:|---|---|---|---:|---:|")
    for r in rows:
        gain = r.get("free_gain")
        print(f"| {r['case']} | {r['n']:,} | {r['devices']} | {r['kinds']} x {r['nodes']} | "
              f"{r['method']} | {r['status']} | {r['seconds']} | "
              f"{'-' if gain is None else f'{1 / gain:.3f}'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
