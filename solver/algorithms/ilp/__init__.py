"""The ILP method: segment formulations of the canonical problem and of its extensions, written
once in a backend-neutral form (model.py, segments.py) and solved by CP-SAT, HiGHS or CBC
behind one interface (backends.py). Solver packages load only when a backend runs."""

from __future__ import annotations

from ...core.partition import Partition
from ...core.problem import Problem
from ..base import SolveOptions
from .backends import DEFAULT_BACKEND, ILP_BACKENDS, IlpBackend, get_backend
from .canonical import solve_canonical
from .cluster import solve_free, solve_ordered
from .tiered import solve_tiered
from .tp import solve_tp
from .train import solve_train

__all__ = ["DEFAULT_BACKEND", "ILP_BACKENDS", "IlpBackend", "get_backend", "solve_ilp"]


def solve_ilp(problem: Problem, options: SolveOptions) -> Partition:
    """Minimise the slowest stage with the formulation the problem's extensions call for, on
    ``options.backend`` (default cpsat)."""
    backend = get_backend(options.backend)
    if problem.fleet is not None:
        if problem.fleet.placement == "free":
            return solve_free(problem, options, backend)
        return solve_ordered(problem, options, backend)
    if problem.training is not None:
        return solve_train(problem, options, backend)
    if problem.tensor_parallel is not None:
        return solve_tp(problem, options, backend)
    if problem.residency is not None:
        return solve_tiered(problem, options, backend)
    return solve_canonical(problem, options, backend)
