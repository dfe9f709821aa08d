"""What every method shares: options, progress events and the method record."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..partition import Partition
from ..problem import Problem

__all__ = ["DEFAULT_TIME_LIMIT_S", "Method", "ProgressEvent", "SolveOptions"]

DEFAULT_TIME_LIMIT_S = 60.0


@dataclass(frozen=True)
class ProgressEvent:
    """A snapshot of a running solve: the best objective so far and the best bound."""

    method: str
    elapsed_s: float
    objective: float | None
    bound: float | None


@dataclass(frozen=True)
class SolveOptions:
    """Options a method may use; each ignores what does not apply to it."""

    time_limit_s: float = DEFAULT_TIME_LIMIT_S
    backend: str | None = None
    """ILP backend: 'cpsat' (default), 'highs' or 'cbc'."""
    workers: int = 2
    seed: int = 0
    hint: tuple[int, ...] | None = None
    """A feasible partition to warm-start from; the ILP computes one itself when absent."""
    use_hint: bool = True
    """Without ``hint``, whether the ILP warm-starts from the parametric method's plan."""
    progress: Callable[[ProgressEvent], None] | None = None

    def report(self, method: str, elapsed: float, objective: float | None,
               bound: float | None) -> None:
        if self.progress is not None:
            self.progress(ProgressEvent(method, elapsed, objective, bound))


@dataclass(frozen=True)
class Method:
    """A registered partitioning method."""

    name: str
    solve: Callable[[Problem, SolveOptions], Partition]
    exact: bool
    summary: str
