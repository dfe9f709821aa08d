"""Solver timings on seeded random chains (with capacity and transfer costs).

Writes results/bench_solvers.csv and prints a Markdown table. Each row is the best of
``--repeat`` runs of one method on one instance; every exact method's objective is checked
against the others on the same instance.

    python benchmarks/bench_solvers.py            # the full set (a few minutes)
    python benchmarks/bench_solvers.py --quick    # small sizes only
"""

from __future__ import annotations

import argparse
import platform
import sys
import time

from common import write_csv

from solver import ILP_BACKENDS, SolveOptions, random_problem, solve

# (method, backend, n, K, use_hint): the targets of the core and performance issues.
FULL = [
    ("dp", None, 200, 16, True),
    ("dp", None, 1000, 64, True),
    ("parametric", None, 200, 16, True),
    ("parametric", None, 1000, 64, True),
    ("parametric", None, 10_000, 256, True),
    ("parametric", None, 100_000, 1024, True),
    ("ilp", "cpsat", 200, 16, True),
    ("ilp", "cpsat", 200, 16, False),
    ("ilp", "cpsat", 1000, 64, True),
    ("ilp", "highs", 200, 16, True),
    ("ilp", "cbc", 200, 16, True),
    ("greedy", None, 100_000, 1024, True),
]
QUICK = [row for row in FULL if row[2] <= 1000 and row[1] not in ("cbc",)]


def run(rows, repeat: int, time_limit: float, seed: int) -> list[dict[str, object]]:
    results: list[dict[str, object]] = []
    optimum: dict[tuple[int, int], float] = {}
    for method, backend, n, k, hint in rows:
        if backend is not None and not ILP_BACKENDS[backend].available():
            print(f"skip {method}/{backend}: not installed", file=sys.stderr)
            continue
        problem = random_problem(seed, n, max_stages=k)
        options = SolveOptions(backend=backend, time_limit_s=time_limit, use_hint=hint)
        best = None
        for _ in range(repeat):
            t0 = time.perf_counter()
            part = solve(problem, method, options)
            elapsed = time.perf_counter() - t0
            best = elapsed if best is None else min(best, elapsed)
        assert part.objective is not None
        if part.status.value == "optimal":
            known = optimum.setdefault((n, k), part.objective)
            if abs(known - part.objective) > 1e-9 * known:
                raise SystemExit(f"{method}/{backend} optimum {part.objective} != {known} "
                                 f"at n={n}, K={k}")
        label = method if backend is None else f"{method}/{backend}"
        results.append({
            "method": label, "hint": hint if method == "ilp" else "", "n": n, "K": k,
            "status": part.status.value, "objective": part.objective, "gap": part.gap,
            "stages": part.num_stages, "seconds": best,
        })
        print(f"{label:16s} n={n:>7} K={k:>5} hint={hint!s:5} {part.status.value:9s} "
              f"{best:8.3f} s", file=sys.stderr, flush=True)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="sizes up to n = 1000 only")
    parser.add_argument("--repeat", type=int, default=3, help="runs per row, best kept")
    parser.add_argument("--time-limit", type=float, default=60.0, help="seconds per ILP solve")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="results/bench_solvers.csv")
    args = parser.parse_args()
    rows = run(QUICK if args.quick else FULL, args.repeat, args.time_limit, args.seed)
    out = write_csv(args.out, rows)
    print(f"machine: {platform.processor() or platform.machine()}, python "
          f"{platform.python_version()}; best of {args.repeat}")
    print("| method | ILP hint | n | K | status | seconds |")
    print("|---|---|---:|---:|---|---:|")
    for r in rows:
        print(f"| {r['method']} | {r['hint']} | {r['n']:,} | {r['K']:,} | {r['status']} | "
              f"{r['seconds']:.3f} |")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
