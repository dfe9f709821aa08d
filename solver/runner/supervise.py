"""The launcher as ``cachepart run`` runs it: every rank ends with the run, however it ends.

torchrun starts each rank in a session of its own, so Ctrl-C in a terminal reaches torchrun
but no rank, and a torchrun that is killed outright leaves its ranks running. So the launcher
(launch.py) is started in a session of its own too, signalled only from here:

- Ctrl-C here (KeyboardInterrupt), or SIGTERM or SIGHUP while the run lasts: the launcher and
  every rank get SIGINT (the launcher passes it on too, and a rank dies of it at once); what is
  left after ``GRACE_S`` is killed; the interrupt goes on (or, for SIGTERM and SIGHUP, 128 + the
  signal is returned) only once no process of the run is left. A second Ctrl-C meanwhile is
  ignored.
- Their stderr comes through a pipe, copied to ours as it arrives, and dropped from the moment
  the run is stopped: an interrupted run says one line, cachepart's own.

Ranks are found through /proc (Linux); elsewhere stopping relies on torchrun passing SIGINT on.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import IO, Any, TextIO, cast

__all__ = ["GRACE_S", "run_supervised"]

GRACE_S = 5.0
"""How long the launcher and the ranks have to end after SIGINT before they are killed."""

_ENDING = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


class _Ended(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class _Relay(threading.Thread):
    """Copies the children's stderr to ours until muted."""

    def __init__(self, source: IO[bytes], sink: TextIO) -> None:
        super().__init__(name="cachepart-run-stderr", daemon=True)
        self.source, self.sink, self.muted = source, sink, False
        self._decode = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def run(self) -> None:
        fd = self.source.fileno()
        while chunk := os.read(fd, 65536):
            text = self._decode.decode(chunk)
            if text and not self.muted:
                self.sink.write(text)
                self.sink.flush()


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, start time) from /proc, or None when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode(errors="replace")
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # after 'pid (comm) '
    return fields[0], int(fields[1]), int(fields[19])


def _descendants(pid: int) -> dict[int, int]:
    """Every process below ``pid``: pid -> start time (empty without /proc)."""
    children: dict[int, list[tuple[int, int]]] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return {}
    for name in names:
        if name.isdigit() and (stat := _stat(int(name))) is not None:
            children.setdefault(stat[1], []).append((int(name), stat[2]))
    found: dict[int, int] = {}
    todo = [pid]
    while todo:
        for child, start in children.get(todo.pop(), []):
            if child not in found:
                found[child] = start
                todo.append(child)
    return found


def _alive(pid: int, start: int) -> bool:
    """Whether the process ``pid`` started at ``start`` still runs (a zombie does not)."""
    stat = _stat(pid)
    return stat is not None and stat[2] == start and stat[0] != "Z"


def _signal(procs: dict[int, int], sig: int) -> None:
    """Send ``sig`` to each live process of ``procs`` and to the group it leads, if any."""
    for pid, start in procs.items():
        if not _alive(pid, start):
            continue
        with contextlib.suppress(OSError):
            if os.getpgid(pid) == pid:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)


@contextlib.contextmanager
def _handlers(signums: Sequence[int], handler: Any) -> Iterator[None]:
    """``handler`` for ``signums`` inside the block (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, handler) for s in signums}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _raise_ended(signum: int, frame: object) -> None:
    raise _Ended(signum)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT to the launcher and every rank, SIGKILL to what is left after GRACE_S; returns
    once none of them runs."""
    with _handlers((signal.SIGINT, *_ENDING), signal.SIG_IGN):
        ranks = _descendants(proc.pid)
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGINT)
        _signal(ranks, signal.SIGINT)
        try:
            proc.wait(GRACE_S)
        except subprocess.TimeoutExpired:
            ranks.update(_descendants(proc.pid))
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        killed = False
        deadline = time.monotonic() + GRACE_S
        while any(_alive(p, s) for p, s in ranks.items()) and not \
                (killed and time.monotonic() > deadline):  # unkillable: give up
            if not killed and time.monotonic() > deadline:
                _signal(ranks, signal.SIGKILL)
                killed, deadline = True, time.monotonic() + GRACE_S
            time.sleep(0.05)


def run_supervised(command: Sequence[str], env: Mapping[str, str], stderr: TextIO) -> int:
    """Run the launcher ``command`` with ``env``, its stderr copied to ``stderr``; its exit code
    (128 + N when signal N ended it). Ctrl-C stops it and every rank, then raises again;
    SIGTERM or SIGHUP stop them and return 128 + the signal."""
    proc = subprocess.Popen(list(command), env=dict(env), stderr=subprocess.PIPE,
                            start_new_session=True)
    source = cast(IO[bytes], proc.stderr)  # stderr=PIPE
    relay = _Relay(source, stderr)
    try:
        with _handlers(_ENDING, _raise_ended):
            relay.start()
            code = proc.wait()
    except (KeyboardInterrupt, _Ended) as exc:
        relay.muted = True
        _stop(proc)
        if isinstance(exc, _Ended):
            return 128 + exc.signum
        raise
    finally:
        if relay.is_alive():
            relay.join(GRACE_S)
        source.close()
    return code if code >= 0 else 128 - code
