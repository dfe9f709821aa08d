"""Ctrl-C: a long solve and a 2-rank run, each started in a process group of its own and sent
SIGINT to the whole group (what a terminal does), exit 130 with one line on stderr, no
traceback, no file written and no process left behind."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not hasattr(os, "killpg") or not Path("/proc").is_dir(),
                       reason="process groups and /proc (Linux)"),
]

REPO = Path(__file__).resolve().parents[1]
WAIT_S = 90.0
"""The longest wait for a command to show it is working (a loaded machine starts torch
slowly); the tests take 5 to 30 s."""
STOP_S = 20.0
"""The longest an interrupted command may take to exit."""
PROGRESS = re.compile(r"^\[\S+ +[\d.]+s\] best ")


# ----- processes, from /proc (psutil is not a dependency) --------------------------------------
def _processes() -> list[tuple[int, int, str]]:
    """(pid, process group, command line) of every live process (zombies excluded)."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_text(errors="replace")
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] == "Z":
            continue
        text = cmdline.replace(b"\0", b" ").decode(errors="replace")
        out.append((int(name), int(fields[2]), text))
    return out


def _leftovers(match: Callable[[int, int, str], bool], within_s: float = 3.0) -> list[str]:
    """The processes ``match`` picks that are still there ``within_s`` seconds from now."""
    deadline = time.monotonic() + within_s
    while True:
        left = [f"{pid}: {cmd[:160]}" for pid, group, cmd in _processes()
                if pid != os.getpid() and match(pid, group, cmd)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def _sockets(pid: int) -> int:
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return 0
    count = 0
    for fd in fds:
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
    return count


# ----- a command in its own process group, its stderr read as it comes -----------------------
class Command:
    def __init__(self, args: list[str]) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
        self.proc = subprocess.Popen([sys.executable, "-m", "solver.cli", *args], cwd=REPO,
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, start_new_session=True)
        self.group = self.proc.pid
        self.err: list[str] = []
        self.out: list[str] = []
        self._readers = [threading.Thread(target=self._read, args=(stream, lines), daemon=True)
                         for stream, lines in ((self.proc.stdout, self.out),
                                               (self.proc.stderr, self.err))]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream: IO[str], lines: list[str]) -> None:
        for line in stream:
            lines.append(line.rstrip("\n"))

    def wait_for(self, what: str, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + WAIT_S
        while not ready():
            if self.proc.poll() is not None:
                pytest.fail(f"ended (exit {self.proc.returncode}) before {what}: {self.err}")
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"no sign of {what} after {WAIT_S:.0f} s: {self.err}")
            time.sleep(0.05)

    def interrupt(self) -> float:
        """SIGINT to the group, as Ctrl-C in a terminal; the seconds until the command ended."""
        t0 = time.monotonic()
        os.killpg(self.group, signal.SIGINT)
        try:
            self.proc.wait(timeout=STOP_S)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"still running {STOP_S:.0f} s after SIGINT: {self.err}")
        took = time.monotonic() - t0
        self._close()
        return took

    def _close(self) -> None:
        for reader in self._readers:
            reader.join(5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            os.killpg(self.group, signal.SIGKILL)
        self.proc.wait()
        self._close()

    def children(self, word: str) -> list[int]:
        """Live processes of the group (the command's own aside) whose command line has
        ``word``."""
        return [pid for pid, group, cmd in _processes()
                if group == self.group and pid != self.proc.pid and word in cmd]


def _one_line(cmd: Command) -> str:
    """The one line the interrupt left on stderr (progress lines aside); checks it is the only
    one, that no traceback came with it and that the exit code is 130."""
    assert cmd.proc.returncode in (130, -signal.SIGINT), (cmd.proc.returncode, cmd.err)
    text = "\n".join(cmd.err)
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
    lines = [line for line in cmd.err if not PROGRESS.match(line)]
    assert len(lines) == 1, text
    return lines[0]


# ----- a long solve ----------------------------------------------------------------------------
LONG_SOLVE = ["solve", "llama3-70b", "--devices", "16", "--capacity", "hbm", "--tp", "1,2,4,8",
              "--granularity", "op", "--method", "ilp", "--time-limit", "60"]
"""CP-SAT works on this one for over 30 s (its presolve alone takes about 10 s); CBC for 2 to
5 s, after about 3 s of building its model."""


@pytest.mark.skipif(importlib.util.find_spec("ortools") is None, reason="ortools missing")
def test_ctrl_c_stops_a_cpsat_solve(tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    previous = '{"previous": "a complete plan"}\n'
    plan.write_text(previous)
    cmd = Command([*LONG_SOLVE, "--solver", "cpsat", "-o", str(plan)])
    # working: a progress line with the warm start as the best so far
    cmd.wait_for("progress", lambda: any(PROGRESS.match(x) and "best -" not in x
                                         for x in cmd.err))
    time.sleep(1.0)
    took = cmd.interrupt()
    line = _one_line(cmd)
    assert re.fullmatch(r"cachepart: interrupted after \d+\.\d s; best [\d.e-]+ s, "
                        r"bound [\d.e-]+ s \(not written\)", line), line
    assert plan.read_text() == previous  # the previous plan, whole
    assert cmd.out == []  # no table
    assert not _leftovers(lambda pid, group, c: group == cmd.group)
    assert took < 10, took


def _cbc_available() -> bool:
    if importlib.util.find_spec("pulp") is None:
        return False
    from solver.algorithms import ILP_BACKENDS

    return ILP_BACKENDS["cbc"].available()


@pytest.mark.skipif(not _cbc_available(), reason="PuLP's CBC missing")
def test_ctrl_c_stops_a_cbc_solve_and_its_process(tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    cmd = Command([*LONG_SOLVE, "--solver", "cbc", "-q", "-o", str(plan)])
    cmd.wait_for("the CBC process", lambda: bool(cmd.children("cbc")))  # runs 2 to 5 s
    time.sleep(0.3)
    took = cmd.interrupt()
    line = _one_line(cmd)
    assert cmd.err == [line]  # -q: no progress lines either
    assert re.fullmatch(r"cachepart: interrupted after \d+\.\d s; best [\d.e-]+ s, "
                        r"bound [\d.e-]+ s \(not written\)", line), line
    assert not plan.exists()
    assert not _leftovers(lambda pid, group, c: group == cmd.group), "CBC left running"
    assert took < 10, took


# ----- a 2-rank run ------------------------------------------------------------------------------
def _torch_distributed() -> bool:
    return importlib.util.find_spec("torch") is not None and \
        importlib.util.find_spec("torch.distributed.pipelining") is not None


@pytest.mark.skipif(not _torch_distributed(), reason="torch.distributed missing")
def test_ctrl_c_stops_every_rank(tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    subprocess.run([sys.executable, "-m", "solver.cli", "solve", "tiny-llama", "--batch", "4",
                    "--micro-batch", "2", "--seq", "16", "--dtype", "fp32", "--devices", "2",
                    "--capacity", "800kB", "-q", "-o", str(plan)], cwd=REPO, check=True,
                   timeout=120)
    report = tmp_path / "report.json"
    cmd = Command(["run", str(plan), "--nproc", "2", "--steps", "1000000", "--torch-device",
                   "cpu", "--report", str(report)])

    def ranks() -> list[int]:  # torchrun starts each rank in a session of its own
        return [pid for pid, _, c in _processes()
                if "-m solver.runner " in c and "solver.runner.launch" not in c and str(plan) in c]

    # working: both ranks have joined the process group (they hold sockets), then some steps
    cmd.wait_for("two ranks at work", lambda: len(ranks()) == 2 and
                 all(_sockets(pid) for pid in ranks()))
    time.sleep(2.0)
    took = cmd.interrupt()
    line = _one_line(cmd)
    assert line == "cachepart: interrupted"
    assert not report.exists()
    assert not _leftovers(lambda pid, group, c: str(plan) in c), "a process of the run is left"
    assert took < 15, took
