"""A backend-neutral integer program, the form every ILP formulation is written in.

Variables: binaries x_0 .. x_{m-1} and one bottleneck variable z in seconds; the objective is
always min z. A row is ``sum coef_i x_i + z_coef z  (<= | ==)  rhs``, optionally enforced only
when a binary is 1. Rows marked ``timed`` hold seconds (stage times, z); the others (flow, stage
counts, bytes) hold whole numbers. Backends (cpsat.py, mip.py) only translate this form, each
scaling the timed rows its own way, defined here once:

- an integer backend (CP-SAT) counts units of the largest time in the model / 1e9
  (:class:`TimeScale` of ``largest_time_s``), so no coefficient exceeds 1e9: CP-SAT's LP
  relaxation works in doubles, and coefficients of 1e12 made it prove a plan 17% off optimal;
- a MIP backend divides by ``time_unit_s``, a time near the optimum, so its absolute tolerances
  (1e-6) stay small against z (dividing by the largest time, 2,000 times the optimum, let CBC
  return a plan 1.6% off optimal as proven).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ...core.errors import SolverError

__all__ = ["SCALE_UNITS", "MilpModel", "MilpResult", "Row", "TimeScale"]

SCALE_UNITS = 1e9
"""The reference time is this many integer units on an integer backend."""

_SLIVER = 1e-3
"""Extra units taken off an integer bound: T * scale is a rounded float product."""


@dataclass(frozen=True, eq=False)
class Row:
    """One linear row over the binaries (by index) and z."""

    index: np.ndarray
    coef: np.ndarray
    sense: Literal["<=", "=="]
    rhs: float
    z_coef: float = 0.0
    timed: bool = False
    """Coefficients, z and rhs are seconds (scaled by the backend)."""
    enforce: int | None = None
    """The row holds only when this binary is 1."""
    active: int | None = None
    """At most this many of the row's binaries are 1 at once (None: any number); an integer
    backend's rounding error grows with it."""
    name: str = ""


@dataclass(frozen=True)
class TimeScale:
    """Seconds as integers: units of ``reference_s`` / 1e9, T_int = round(T x scale)."""

    reference_s: float

    @property
    def scale(self) -> float:
        return SCALE_UNITS / self.reference_s if self.reference_s > 0 else 1.0

    def to_int(self, seconds: np.ndarray | float) -> np.ndarray:
        return np.rint(np.asarray(seconds, dtype=np.float64) * self.scale).astype(np.int64)

    def int_bound_s(self, raw: float, rounded_terms: int = 1) -> float | None:
        """A valid bound in seconds from an integer backend's bound: half a unit of rounding for
        each rounded term a row can sum, and a sliver for the float product, are taken off.
        None when the backend has none."""
        if not math.isfinite(raw):
            return None
        return (raw - 0.5 * rounded_terms - _SLIVER) / self.scale


@dataclass(frozen=True, eq=False)
class MilpModel:
    """Rows over ``num_vars`` binaries and z; minimise z."""

    name: str
    num_vars: int
    rows: list[Row]
    z_lower_s: float
    """A valid floor for z (the problem's lower bound)."""
    z_upper_s: float
    """No plan worth finding needs z above this."""
    time_unit_s: float
    """A time near the optimum (a MIP backend's unit)."""
    hint: np.ndarray | None = None
    """A feasible assignment of the binaries to start from (bool per variable)."""
    hint_z_s: float | None = None

    @property
    def largest_time_s(self) -> float:
        """The largest magnitude among the timed rows' coefficients and right sides, and z's."""
        most = max(abs(self.z_upper_s), abs(self.z_lower_s))
        for row in self.rows:
            if row.timed:
                most = max(most, abs(row.rhs), float(np.abs(row.coef).max(initial=0.0)))
        return most

    @property
    def rounded_terms(self) -> int:
        """The most rounded coefficients (and right-hand side) one timed row can sum."""
        most = 1
        for row in self.rows:
            if row.timed:
                terms = len(row.index) if row.active is None else min(row.active, len(row.index))
                most = max(most, terms + (1 if row.rhs else 0))
        return most

    def __post_init__(self) -> None:
        for row in self.rows:
            if row.z_coef and not row.timed:
                raise SolverError(f"ilp model {self.name}: row {row.name!r} uses z but is not timed")
            if len(row.index) != len(row.coef):
                raise SolverError(f"ilp model {self.name}: row {row.name!r} has "
                                  f"{len(row.index)} variables and {len(row.coef)} coefficients")
        if self.hint is not None and len(self.hint) != self.num_vars:
            raise SolverError(f"ilp model {self.name}: hint has {len(self.hint)} values for "
                              f"{self.num_vars} variables")


@dataclass(frozen=True)
class MilpResult:
    """What a backend found: the binaries of its best solution, if any, and a bound."""

    status: str
    """The backend's own status word, for the record."""
    values: np.ndarray | None
    """Bool per binary of the best solution; None when there is none."""
    proven: bool = False
    """The backend proved the solution optimal."""
    infeasible: bool = False
    bound_s: float | None = None
    """A lower bound on min z in seconds, valid up to the backend's tolerances."""
    info: Mapping[str, Any] = field(default_factory=dict)
