"""What every method shares: options, progress events and the method record."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from ..core.errors import InvalidInputError
from ..core.extensions import Extension
from ..core.link import check_whole
from ..core.partition import Partition
from ..core.problem import Problem

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
    """A feasible partition of the canonical problem to warm-start the ILP from; the ILP
    computes one itself when absent."""
    use_hint: bool = True
    """Without ``hint``, whether the ILP warm-starts from an exact method's plan."""
    progress: Callable[[ProgressEvent], None] | None = None

    def __post_init__(self) -> None:
        # Checked here, once, so every caller (CLI, batch, paper, library) gets the same errors.
        t = self.time_limit_s
        if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t) or t <= 0:
            raise InvalidInputError(f"must be a finite number of seconds > 0, got {t!r}",
                                    field="time_limit_s")
        check_whole(self.workers, "workers")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or \
                not 0 <= self.seed < 2**31:
            raise InvalidInputError(f"must be a whole number in 0..2^31-1, got {self.seed!r}",
                                    field="seed")

    def report(self, method: str, elapsed: float, objective: float | None,
               bound: float | None) -> None:
        if self.progress is not None:
            self.progress(ProgressEvent(method, elapsed, objective, bound))


@dataclass(frozen=True)
class Method:
    """A registered partitioning method and the extensions it solves."""

    name: str
    solve: Callable[[Problem, SolveOptions], Partition]
    exact: bool
    """Returns a proven optimum (within its time limit, for the ILP)."""
    summary: str
    supports: frozenset[Extension] = frozenset()

    def refusal(self, problem: Problem) -> str | None:
        """Why this method cannot solve ``problem`` (an extension it does not support), or None."""
        missing = sorted(problem.extensions - self.supports)
        if not missing:
            return None
        return f"method {self.name!r} does not support {', '.join(map(str, missing))}"
