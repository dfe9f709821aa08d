"""Start-up time of the command line and of the planning imports, in fresh interpreters.

Each command runs ``--repeats`` times (default 10) in a new process; the table gives the
median and the best wall time, and which heavy packages the start loaded. Writes
results/startup.csv and prints a Markdown table.

    python benchmarks/bench_startup.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import write_csv

HEAVY = ("torch", "pandas", "networkx", "ortools", "pulp", "highspy", "matplotlib")
CASES = [
    ("cachepart --help", [sys.executable, "-m", "solver.cli", "--help"]),
    ("cachepart zoo", [sys.executable, "-m", "solver.cli", "zoo"]),
    ("cachepart devices", [sys.executable, "-m", "solver.cli", "devices"]),
    ("import solver.algorithms", [sys.executable, "-c", "import solver.algorithms"]),
    ("python (bare interpreter)", [sys.executable, "-c", "pass"]),
]
LOADED = ("import json, sys\nimport solver.cli.app as app\napp.build_parser()\n"
          f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", default="results/startup.csv")
    args = parser.parse_args()
    root = Path(__file__).resolve().parents[1]
    rows = []
    for name, cmd in CASES:
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            subprocess.run(cmd, cwd=root, check=True, capture_output=True)
            times.append(time.perf_counter() - t0)
        rows.append({"command": name, "median_s": round(statistics.median(times), 3),
                     "best_s": round(min(times), 3), "repeats": args.repeats})
    done = subprocess.run([sys.executable, "-c", LOADED], cwd=root, check=True,
                          capture_output=True, text=True)
    heavy = json.loads(done.stdout)
    print(f"written to {write_csv(args.out, rows)}")
    print("| command | median (s) | best (s) |")
    print("|---|---:|---:|")
    for r in rows:
        print(f"| `{r['command']}` | {r['median_s']:.3f} | {r['best_s']:.3f} |")
    print(f"\nheavy packages loaded by the CLI's parser: {', '.join(heavy) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
