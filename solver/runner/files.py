"""Files a rank writes (the report, the pipeline's output), whole or not at all.

Under torchrun a rank dies of SIGINT and SIGTERM at once (solver/runner/__main__.py), so a file
is written beside its destination and renamed over it, with those signals held off meanwhile:
one that arrives then ends the rank after the rename, never halfway through the file.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["write_whole"]

_HELD = {signal.SIGINT, signal.SIGTERM}


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    if not hasattr(signal, "pthread_sigmask") or \
            threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def write_whole(path: str | Path, write: Callable[[Path], object]) -> None:
    """``write(tmp)`` to a temporary file beside ``path``, then rename it to ``path`` (a
    symbolic link's target; a device or pipe such as /dev/stdout is written directly)."""
    target = Path(os.path.realpath(path))
    if target.exists() and not target.is_file():
        with _signals_held():
            write(target)
        return
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with _signals_held():
        try:
            write(tmp)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
