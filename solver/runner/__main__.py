"""``python -m solver.runner``: the entry point torchrun starts (solver/cli/worker.py)."""

from __future__ import annotations

import sys

from ..cli.worker import main

if __name__ == "__main__":
    sys.exit(main())
