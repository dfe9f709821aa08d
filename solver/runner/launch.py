"""``python -m solver.runner.launch TORCHRUN-ARGS``: torchrun as ``cachepart run`` starts it,
the same launcher (``torch.distributed.run``) with the same arguments, without its noise:

- torchrun's log lines (which worker it signalled, which failed) are off, and its
  ChildFailedError traceback is not printed: every rank says why it failed in one line of its
  own (solver/cli/worker.py). The exit code is the first failed rank's (1 failed, 2 refused);
  a rank killed by a signal, which could say nothing, is named here in one line;
- a signal to the launcher (``cachepart run`` passes Ctrl-C on) ends every rank (torchrun sends
  it on, and a rank dies of it at once: solver/runner/__main__.py) and ends the launcher
  quietly, with 128 + the signal. On Linux the launcher also gets SIGINT when the process that
  started it dies, however it dies, so no rank outlives a killed ``cachepart run``.

``cachepart run`` sets OMP_NUM_THREADS (to torchrun's own default, 1, for several ranks) unless
it is given, so that torchrun prints no banner about setting it.

Run torchrun itself for several nodes (solver/cli/run.py says how); this is only the quiet face
one machine's run shows.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["PROG", "launcher_command", "main"]

PROG = "cachepart runner"
_TORCHRUN = "torch.distributed.run"


def launcher_command(torchrun_command: Sequence[str]) -> list[str]:
    """``python -m torch.distributed.run ARGS`` -> ``python -m solver.runner.launch ARGS``."""
    command = list(torchrun_command)
    for i in range(len(command) - 1):
        if command[i] == "-m" and command[i + 1] == _TORCHRUN:
            return [*command[:i + 1], "solver.runner.launch", *command[i + 2:]]
    raise ValueError(f"not a torchrun command line: {command!r}")


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(code).name
    except ValueError:
        return f"signal {code}"


def _failed(exc: Any) -> int:
    """The exit code and, for a rank killed by a signal, the one line naming it."""
    try:
        rank, failure = exc.get_first_failure()
        code = int(failure.exitcode)
    except (AttributeError, ValueError, TypeError):  # another torch's ChildFailedError
        return 1
    if code < 0:
        print(f"{PROG}: error: rank {rank} (pid {getattr(failure, 'pid', '?')}) was killed by "
              f"{_signal_name(-code)}", file=sys.stderr, flush=True)
        return 1
    return code or 1


def _interrupt_with_parent() -> None:
    """Linux: SIGINT to this process when its parent dies (prctl PR_SET_PDEATHSIG)."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGINT), 0, 0, 0)  # 1: PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it died before the request: act on it now
        os.kill(os.getpid(), signal.SIGINT)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        _interrupt_with_parent()
        logging.disable(logging.CRITICAL)  # torchrun's own lines; the ranks log as they like
        from torch.distributed import run as torchrun
        from torch.distributed.elastic.multiprocessing.api import SignalException
        from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

        try:
            torchrun.main(args)
        except ChildFailedError as exc:
            return _failed(exc)
        except SignalException as exc:  # torchrun has stopped the ranks
            return 128 + int(exc.sigval)
    except KeyboardInterrupt:  # before torchrun's own handler was in place
        return 128 + signal.SIGINT
    except SystemExit as exc:  # a usage error torchrun printed
        return exc.code if isinstance(exc.code, int) else 1
    except Exception as exc:
        text = str(exc).strip()
        print(f"{PROG}: error: torchrun failed: {type(exc).__name__}: "
              f"{text.splitlines()[0] if text else ''}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
