"""The methods, registered by name with the extensions each solves, and how ``auto`` picks one.

``auto`` picks the parametric search for the canonical problem and for clusters it holds
(exact, and the fastest of the exact methods at every size measured: benchmarks/bench_scaling.py,
bench_cluster.py), and the ILP where the problem has freedoms only the ILP models in full
(tensor-parallel degrees, tiered residency, free placement beyond the exact search's reach).
"""

from __future__ import annotations

from ..core.errors import InvalidInputError
from ..core.extensions import Extension
from ..core.free import free_search_fits
from ..core.problem import Problem
from .base import Method
from .baselines import solve_params, solve_uniform
from .dp import solve_dp
from .greedy import solve_greedy
from .ilp import solve_ilp
from .parametric import solve_parametric

__all__ = ["AUTO", "METHODS", "choose", "get_method"]

AUTO = "auto"

_TP, _RES = Extension.TENSOR_PARALLEL, Extension.RESIDENCY
_CLUSTER, _FREE = Extension.CLUSTER, Extension.FREE_PLACEMENT
_CUTS = Extension.CUTS
_TRAIN = Extension.TRAINING

METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("ilp", solve_ilp, True,
               "segment ILP minimising the slowest stage (CP-SAT, or HiGHS/CBC through PuLP)",
               frozenset({_TP, _RES, _CLUSTER, _FREE, _CUTS, _TRAIN})),
        Method("dp", solve_dp, True, "exact dynamic program, O(n^2 K)",
               frozenset({_TP, _CLUSTER, _FREE, _CUTS, _TRAIN})),
        Method("parametric", solve_parametric, True,
               "exact parametric search over the bottleneck, O(n log n) per probe",
               frozenset({_CLUSTER, _FREE, _CUTS})),
        Method("greedy", solve_greedy, False,
               "the paper's greedy aggregation: fill a device until the next layer won't fit",
               frozenset({_CLUSTER, _CUTS, _TRAIN})),
        Method("uniform", solve_uniform, False, "equal layer counts per device",
               frozenset({_CLUSTER, _TRAIN})),
        Method("params", solve_params, False, "stages balanced by weight bytes",
               frozenset({_CLUSTER, _TRAIN})),
    )
}

_WHY = {  # in the order auto looks for them
    _TRAIN: "training: a stage's stashes depend on its position; the dynamic program counted "
            "from the last stage is exact",
    _FREE: "free placement beyond the exact search's reach: which devices host the stages, and "
           "in which order, is the ILP's freedom (NP-hard in general)",
    _RES: "tiered residency: an ILP-only freedom",
    _TP: "tensor-parallel degrees per stage: an ILP-only freedom",
    _CLUSTER: "ordered placement on a cluster: the parametric search is exact and faster than "
              "proving the optimum with the ILP",
}


def get_method(name: str) -> Method:
    """The registered method ``name``; InvalidInputError naming the known ones otherwise."""
    if name not in METHODS:
        raise InvalidInputError(f"unknown method {name!r} (known: {AUTO}, {', '.join(METHODS)})",
                                field="method")
    return METHODS[name]


def choose(problem: Problem, name: str = AUTO) -> tuple[Method, str | None]:
    """The method to run and, for ``auto``, why it was chosen. A method asked for an extension
    it does not support is an InvalidInputError naming both."""
    why = None
    if name == AUTO:
        on = [ext for ext in _WHY if ext in problem.extensions]
        if on and on[0] is _FREE and free_search_fits(problem):
            name, why = "parametric", ("free placement: the exact search over the devices used "
                                       "of each kind and node holds this cluster, and is faster "
                                       "than proving the optimum with the ILP")
        elif on:
            why = _WHY[on[0]]
            name = {_CLUSTER: "parametric", _TRAIN: "dp"}.get(on[0], "ilp")
        else:
            name, why = "parametric", ("canonical problem: the parametric search is exact and "
                                       "faster than proving the optimum with the ILP")
    method = get_method(name)
    refusal = method.refusal(problem)
    if refusal is not None:
        able = [m.name for m in METHODS.values() if not problem.extensions - m.supports]
        raise InvalidInputError(f"{refusal} (methods that do: {', '.join(able) or 'none'})",
                                field="method")
    return method, why
