"""ILP backends behind one interface: ``available()`` and ``solve(model, options)``.

Each backend translates a :class:`MilpModel` into its solver's form; the solver package is
imported only inside ``solve`` (and ``available`` probes for it without importing it), so
``import solver.algorithms`` loads no ortools or pulp. ``get_backend(name)`` is the one way to
obtain a backend, with clear errors for an unknown or missing one.
"""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

from ...core.errors import InvalidInputError, SolverError

if TYPE_CHECKING:
    from ..base import SolveOptions
    from .model import MilpModel, MilpResult

__all__ = ["DEFAULT_BACKEND", "ILP_BACKENDS", "IlpBackend", "get_backend"]

DEFAULT_BACKEND = "cpsat"


def _has_module(name: str) -> bool:
    """Whether ``name`` can be imported here, without importing it."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


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

        return solve_cpsat(model, options, t0)


class Highs(IlpBackend):
    name = "highs"
    summary = "HiGHS MIP through PuLP (highspy)"
    install = "pip install pulp highspy"

    def _probe(self) -> bool:
        return _has_module("pulp") and _has_module("highspy")

    def solve(self, model: MilpModel, options: SolveOptions, t0: float) -> MilpResult:
        from .mip import solve_mip

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
