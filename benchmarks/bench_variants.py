"""CP-SAT on the richer problems: tensor parallelism per stage and tiered residency at n = 128,
K = 16 (seeded random chains), each against its exact reference (the TP DP; for residency, the
warm start and lower bound bracket it). Writes results/bench_variants.csv.

    python benchmarks/bench_variants.py
"""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path

import numpy as np

from solver.algorithms import SolveOptions
from solver.algorithms.ilp_variants import solve_tiered_ilp, solve_tp_ilp, tiered_heuristic
from solver.graph import Link
from solver.synthetic import random_problem
from solver.variants import Residency, TensorParallel, default_allreduce_bytes, tp_dp


def main() -> int:
    rows = []
    for seed in range(3):
        problem = random_problem(seed, 128, max_stages=16, tightness=0.1)
        arb = default_allreduce_bytes([None] * problem.n, problem.activation_bytes) // 10
        tp = TensorParallel((1, 2, 4, 8), 8, arb, Link(1e6, 0.001))
        t0 = time.perf_counter()
        exact = tp_dp(problem, tp)
        dp_s = time.perf_counter() - t0
        for hint in (True, False):
            t0 = time.perf_counter()
            plan = solve_tp_ilp(problem, tp, SolveOptions(use_hint=hint, time_limit_s=60))
            seconds = time.perf_counter() - t0
            assert plan is not None and exact is not None
            agree = abs(plan.objective - exact[0]) <= 1e-9 * exact[0]
            rows.append({"variant": "tp 1,2,4,8", "seed": seed, "hint": hint,
                         "status": plan.status.value, "seconds": round(seconds, 3),
                         "objective": plan.objective, "reference_s": round(dp_s, 3),
                         "agrees_with_reference": agree})
        rng = np.random.default_rng(seed)
        res = Residency(problem.latency_s, problem.latency_s * rng.uniform(1, 3, problem.n))
        warm = tiered_heuristic(problem, res)
        for hint in (True, False):
            t0 = time.perf_counter()
            plan = solve_tiered_ilp(problem, res, SolveOptions(use_hint=hint, time_limit_s=60))
            seconds = time.perf_counter() - t0
            assert plan is not None
            rows.append({"variant": "residency partial", "seed": seed, "hint": hint,
                         "status": plan.status.value, "seconds": round(seconds, 3),
                         "objective": plan.objective, "reference_s": None,
                         "agrees_with_reference": warm is None or plan.objective <= warm[2]})
        for r in rows[-4:]:
            print(r, file=sys.stderr, flush=True)
    out = Path("results/bench_variants.csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print("| variant | seed | ILP hint | status | seconds |")
    print("|---|---:|---|---|---:|")
    for r in rows:
        print(f"| {r['variant']} | {r['seed']} | {r['hint']} | {r['status']} | {r['seconds']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
