"""ILP backends behind one interface: ``available()`` and ``solve(model, options)``.

Each backend translates a :class:`MilpModel` into its solver's form; the solver package is
imported only inside ``solve`` (and ``available`` probes for it without importing it), so
``import solver.algorithms`` loads no ortools or pulp. ``get_backend(name)`` is the one way to
obtain a backend, with clear errors for an unknown or missing one.

Ctrl-C: a solver searching in native code runs no Python, so a KeyboardInterrupt cannot reach
it (and CP-SAT catches SIGINT itself unless told not to). ``interruptible`` runs such a call in
a thread and waits here, where Ctrl-C does arrive; it then stops the solver, waits for its
thread to end and lets the KeyboardInterrupt go on, so no search outlives an interrupt.
"""

from __future__ import annotations

import importlib.util
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from ...core.errors import InvalidInputError, SolverError

if TYPE_CHECKING:
    from ..base import SolveOptions
    from .model import MilpModel, MilpResult

__all__ = ["DEFAULT_BACKEND", "ILP_BACKENDS", "IlpBackend", "get_backend", "interruptible",
           "report_start"]

DEFAULT_BACKEND = "cpsat"

_T = TypeVar("_T")

STOP_PATIENCE_S = 30.0
"""How long an interrupted solve may take to stop before the interrupt goes on without it."""


def interruptible(work: Callable[[], _T], stop: Callable[[], None]) -> _T:
    """``work()``, run in a thread while this one waits. On KeyboardInterrupt here ``stop()``
    asks the solver to end (again every 0.2 s, in case its search had not started yet), the
    thread is joined and the interrupt is raised again; a second Ctrl-C meanwhile is absorbed."""
    result: list[_T] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            result.append(work())
        except BaseException as exc:  # handed to the waiting thread, raised there
            failure.append(exc)

    thread = threading.Thread(target=target, name="cachepart-solver", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(1.0)
    except KeyboardInterrupt:
        deadline = time.monotonic() + STOP_PATIENCE_S
        while thread.is_alive() and time.monotonic() < deadline:
            try:
                stop()
                thread.join(0.2)
            except KeyboardInterrupt:
                pass
        raise
    if failure:
        raise failure[0]
    return result[0]


def _has_module(name: str) -> bool:
    """Whether ``name`` can be imported here, without importing it."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def report_start(model: MilpModel, options: SolveOptions, t0: float) -> None:
    """Report the warm start (its bottleneck) as the best so far before the solver begins: a
    large model can spend seconds in presolve before the solver reports a solution itself."""
    if model.hint is not None and model.hint_z_s is not None:
        options.report("ilp", time.perf_counter() - t0, model.hint_z_s, model.z_lower_s)


class IlpBackend(ABC):
    """An ILP solver (pulp/apis/core.py's LpSolver is the model)."""

    name: str = ""
    summary: str = ""
    install: str = ""
    """How to install it when it is missing."""

    @abstractmethod
    def _probe(self) -> bool:
        """Whether the solver can run here (may raise on a broken install)."""

    def available(self) -> bool:
        """True when the solver can be imported and run here."""
        try:
            return bool(self._probe())
        except Exception:  # a broken install counts as missing, never as a crash
            return False

    @abstractmethod
    def solve(self, model: MilpModel, options: SolveOptions, t0: float) -> MilpResult:
        """Minimise z within ``options.time_limit_s``; ``t0`` is when the method started (for
        progress reports)."""


class CpSat(IlpBackend):
    name = "cpsat"
    summary = "OR-Tools CP-SAT (times scaled to integers; deterministic search)"
    install = "pip install ortools"

    def _probe(self) -> bool:
        return _has_module("ortools")

    def solve(self, model: MilpModel, options: SolveOptions, t0: float) -> MilpResult:
        from .cpsat import solve_cpsat  # ortools loads only when used

        report_start(model, options, t0)
        return solve_cpsat(model, options, t0)


class Highs(IlpBackend):
    name = "highs"
    summary = "HiGHS MIP through PuLP (highspy)"
    install = "pip install pulp highspy"

    def _probe(self) -> bool:
        return _has_module("pulp") and _has_module("highspy")

    def solve(self, model: MilpModel, options: SolveOptions, t0: float) -> MilpResult:
        from .mip import solve_mip

        report_start(model, options, t0)
        return solve_mip(model, options, t0, "highs")


class Cbc(IlpBackend):
    name = "cbc"
    summary = "CBC MIP through PuLP (the bundled binary)"
    install = "pip install pulp"

    def _probe(self) -> bool:
        if not _has_module("pulp"):
            return False
        from .mip import cbc_available

        return cbc_available()

    def solve(self, model: MilpModel, options: SolveOptions, t0: float) -> MilpResult:
        from .mip import solve_mip

        report_start(model, options, t0)
        return solve_mip(model, options, t0, "cbc")


ILP_BACKENDS: dict[str, IlpBackend] = {b.name: b for b in (CpSat(), Highs(), Cbc())}


def get_backend(name: str | None) -> IlpBackend:
    """The backend called ``name`` (default cpsat): InvalidInputError for an unknown name,
    SolverError when it is not installed here."""
    key = name or DEFAULT_BACKEND
    if key not in ILP_BACKENDS:
        raise InvalidInputError(f"unknown ILP backend {key!r} (known: {', '.join(ILP_BACKENDS)})",
                                field="backend")
    backend = ILP_BACKENDS[key]
    if not backend.available():
        raise SolverError(f"ILP backend {key!r} is not available here (install it: "
                          f"{backend.install})", field="backend")
    return backend
