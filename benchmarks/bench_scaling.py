"""Scaling curves: solve time against n (K fixed) and against K (n fixed), every method, on seeded
random chains with capacity and transfer costs; peak memory of the fast exact method; and the
time of a 1,000-solve batch sweep over the zoo.

    python benchmarks/bench_scaling.py [--quick]

Writes results/scaling.csv, results/scaling_n.png, results/scaling_k.png, results/sweep_1000.csv
and prints Markdown tables for the README.
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from pathlib import Path

import pandas as pd

from models.zoo import zoo_names
from solver import SolveOptions, Sweep, Workload, random_problem, run_sweep, solve
from solver.analysis import plot_solve_times

# Largest n each method is timed at (beyond it a solve takes too long or too much memory).
LIMITS = {"parametric": 100_000, "greedy": 100_000, "dp": 3_000, "ilp": 1_000}


def _time(method: str, n: int, k: int, seed: int, time_limit: float) -> dict[str, object]:
    problem = random_problem(seed, n, max_stages=k)
    t0 = time.perf_counter()
    part = solve(problem, method, SolveOptions(time_limit_s=time_limit))
    seconds = time.perf_counter() - t0
    return {"method": method, "n": n, "K": k, "seed": seed, "seconds": seconds,
            "status": part.status.value, "objective": part.objective}


def scaling(quick: bool, time_limit: float) -> pd.DataFrame:
    ns = [100, 300, 1_000, 3_000, 10_000] if quick else \
        [100, 300, 1_000, 3_000, 10_000, 30_000, 100_000]
    ks = [4, 16, 64, 256] if quick else [4, 16, 64, 256, 1_024]
    rows = []
    for method, limit in LIMITS.items():
        for n in ns:
            if n <= limit:
                rows.append({**_time(method, n, 64, 0, time_limit), "sweep": "n"})
                print(f"{method:10s} n={n:>7} K=64   {rows[-1]['seconds']:.3f} s",
                      file=sys.stderr, flush=True)
        n_fixed = min(limit, 1_000 if quick else 10_000)
        for k in ks:
            rows.append({**_time(method, n_fixed, k, 0, time_limit), "sweep": "K"})
            print(f"{method:10s} n={n_fixed:>7} K={k:<5} {rows[-1]['seconds']:.3f} s",
                  file=sys.stderr, flush=True)
    return pd.DataFrame(rows)


def peak_memory(n: int, k: int) -> float:
    """MiB allocated at the peak by the fast exact method (tracemalloc counts numpy too)."""
    problem = random_problem(0, n, max_stages=k)
    tracemalloc.start()
    solve(problem, "parametric")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


def sweep_1000(out: Path, workers: int) -> tuple[float, int]:
    """17 zoo models x 4 device counts x 3 capacities x 5 methods = 1,020 solves."""
    sweep = Sweep(models=tuple(zoo_names()), devices=(4, 8, 16, 64),
                  capacities=("hbm", "l2", "40GB"),
                  methods=("greedy", "dp", "parametric", "uniform", "params"),
                  workload=Workload(batch=8, seq_len=2048), granularity="op")
    for old in out.glob("results.*"):
        old.unlink()
    t0 = time.perf_counter()
    table = run_sweep(sweep, out, workers=workers)
    return time.perf_counter() - t0, len(table)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--time-limit", type=float, default=60.0)
    parser.add_argument("--out", default="results")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = scaling(args.quick, args.time_limit)
    exact = table[table["method"].isin(["parametric", "dp"]) |
                  ((table["method"] == "ilp") & (table["status"] == "optimal"))]
    spread = exact.groupby(["n", "K"])["objective"].agg(lambda v: v.max() - v.min())
    if (spread > 0).any():
        raise SystemExit(f"exact methods disagree:\n{spread[spread > 0]}")
    table.to_csv(out / "scaling.csv", index=False)
    plot_solve_times(table[table["sweep"] == "n"], out / "scaling_n.png", x="n")
    plot_solve_times(table[table["sweep"] == "K"], out / "scaling_k.png", x="K")
    mem_n = 10_000 if args.quick else 100_000
    mib = peak_memory(mem_n, 1_024)
    seconds, rows = sweep_1000(out / "sweep_1000", workers=2)
    print("| method | sweep | n | K | seconds | status |")
    print("|---|---|---:|---:|---:|---|")
    for r in table.itertuples():
        print(f"| {r.method} | {r.sweep} | {r.n:,} | {r.K:,} | {r.seconds:.3f} | {r.status} |")
    print(f"\nparametric peak memory at n={mem_n:,}, K=1,024: {mib:.1f} MiB")
    print(f"batch sweep: {rows} solves in {seconds:.1f} s with 2 workers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
