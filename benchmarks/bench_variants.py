"""The ILP on the richer problems: tensor parallelism per stage and tiered residency at n = 128,
K = 16 (seeded random chains), on every ILP backend, warm-started and cold, each against its
exact reference (the TP DP; for residency, the warm start and lower bound bracket it). Writes
results/bench_variants.csv and prints a Markdown table.

    python benchmarks/bench_variants.py [--backends cpsat,highs,cbc] [--time-limit 60]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from common import write_csv

from solver import ILP_BACKENDS, Link, Residency, SolveOptions, TensorParallel, random_problem, solve
from solver.algorithms import tp_dp
from solver.algorithms.ilp.tiered import tiered_heuristic
from solver.core import default_allreduce_bytes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default=",".join(ILP_BACKENDS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--time-limit", type=float, default=60.0)
    parser.add_argument("--out", default="results/bench_variants.csv")
    args = parser.parse_args()
    backends = [b for b in args.backends.split(",") if ILP_BACKENDS[b].available()]
    rows = []
    for seed in range(args.seeds):
        base = random_problem(seed, 128, max_stages=16, tightness=0.1)
        arb = default_allreduce_bytes([None] * base.n, base.activation_bytes) // 10
        tp = base.replace(tensor_parallel=TensorParallel((1, 2, 4, 8), 8, arb, Link(1e6, 0.001)))
        t0 = time.perf_counter()
        exact = tp_dp(tp)
        dp_s = time.perf_counter() - t0
        rng = np.random.default_rng(seed)
        tiered = base.replace(residency=Residency(
            base.latency_s, base.latency_s * rng.uniform(1, 3, base.n)))
        warm = tiered_heuristic(tiered)
        for backend in backends:
            for variant, problem in (("tp 1,2,4,8", tp), ("residency partial", tiered)):
                for hint in (True, False):
                    options = SolveOptions(backend=backend, use_hint=hint,
                                           time_limit_s=args.time_limit)
                    t0 = time.perf_counter()
                    part = solve(problem, "ilp", options)
                    seconds = time.perf_counter() - t0
                    assert part.objective is not None
                    if variant.startswith("tp"):
                        assert exact is not None
                        agree = abs(part.objective - exact[0]) <= 1e-9 * exact[0]
                        reference: float | None = round(dp_s, 3)
                    else:
                        agree = warm is None or part.objective <= warm[2] * (1 + 1e-12)
                        reference = None
                    rows.append({"variant": variant, "backend": backend, "seed": seed,
                                 "hint": hint, "status": part.status.value,
                                 "seconds": round(seconds, 3), "objective": part.objective,
                                 "gap": part.gap, "reference_s": reference,
                                 "agrees_with_reference": agree})
                    print(rows[-1], file=sys.stderr, flush=True)
    print(f"written to {write_csv(args.out, rows)}")
    print("| variant | backend | seed | warm start | status | seconds |")
    print("|---|---|---:|---|---|---:|")
    for r in rows:
        print(f"| {r['variant']} | {r['backend']} | {r['seed']} | {r['hint']} | {r['status']} "
              f"| {r['seconds']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
