"""``python -m solver.runner``: the entry point torchrun starts (solver/cli/worker.py).

Under torchrun (WORLD_SIZE set) a rank dies of SIGINT at once and silently, as of SIGTERM:
Ctrl-C reaches the ranks from the launcher, which sends it on to every one, and a traceback
from wherever it landed in a rank would only be noise (the files a rank writes are whole or
absent, files.py). Alone, without torchrun, Ctrl-C stays a KeyboardInterrupt, reported in one
line by solver/cli/worker.py.
"""

from __future__ import annotations

import os
import signal
import sys


def _main() -> int:
    if "WORLD_SIZE" in os.environ:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    from ..cli.worker import main

    return main()


if __name__ == "__main__":
    sys.exit(_main())
