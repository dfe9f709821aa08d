"""cachepart: partition a model's layers across devices so every stage fits a memory tier and
the slowest pipeline stage is as fast as possible.

The public API, re-exported from the packages that hold it (layout in the README):

- ``solver.core``: Problem and its extensions, Partition, Status, the error tree, feasibility;
- ``solver.algorithms``: the methods, their registry and ``solve``;
- ``solver.frontend``: model sources -> LayerGraph -> Problem;
- ``solver.hardware``: devices, workloads, footprints, clusters;
- ``solver.plan``: Plan, build / load, the simulator;
- ``solver.analysis`` and ``solver.experiments``: comparisons, sweeps, frontier, the paper.

Names load on first use, so ``import solver`` (and the CLI's start) pulls in no networkx,
pandas, solver backend or torch until something needs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .core.lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # core
    "CachepartError": "core", "InfeasibleError": "core", "InvalidInputError": "core",
    "SolverError": "core", "Status": "core", "MemoryModel": "core", "Problem": "core",
    "Partition": "core", "Link": "core", "Extension": "core", "TensorParallel": "core",
    "Residency": "core", "Fleet": "core", "canonical_partition": "core", "check_partition": "core",
    "diagnose": "core", "evaluate": "core", "lower_bound": "core", "format_bytes": "core",
    "parse_bytes": "core", "random_problem": "core", "Training": "core",
    # algorithms
    "AUTO": "algorithms", "METHODS": "algorithms", "ILP_BACKENDS": "algorithms",
    "ProgressEvent": "algorithms", "SolveOptions": "algorithms", "get_backend": "algorithms",
    "get_method": "algorithms", "solve": "algorithms",
    # frontend
    "LayerGraph": "frontend", "LoadedModel": "frontend", "chain_from_dict": "frontend",
    "chain_to_dict": "frontend", "load_chain": "frontend", "load_model": "frontend",
    "problem_from_graph": "frontend", "tensor_parallel_for": "frontend", "fleet_for": "frontend",
    "residency_for": "frontend", "load_profile": "frontend", "apply_profile": "frontend",
    "training_for": "frontend",
    # hardware
    "DEVICES": "hardware", "Device": "hardware", "Workload": "hardware",
    "capacity_for": "hardware", "get_device": "hardware", "get_cluster": "hardware",
    "Cluster": "hardware", "load_cluster": "hardware",
    # plan
    "SCHEMA_VERSION": "plan", "Plan": "plan", "build_plan": "plan", "load_plan": "plan",
    "fingerprint": "plan", "simulate": "plan", "simulate_plan": "plan", "SimResult": "plan",
    "simulate_training": "plan", "TrainSim": "plan",
    # analysis and experiments
    "compare": "analysis", "compare_table": "analysis", "frontier_table": "analysis",
    "Sweep": "analysis", "load_sweep": "analysis", "run_sweep": "analysis",
    "run_paper": "experiments",
}

__all__ = [
    "AUTO",
    "DEVICES",
    "ILP_BACKENDS",
    "METHODS",
    "SCHEMA_VERSION",
    "CachepartError",
    "Cluster",
    "Device",
    "Extension",
    "Fleet",
    "InfeasibleError",
    "InvalidInputError",
    "LayerGraph",
    "Link",
    "LoadedModel",
    "MemoryModel",
    "Partition",
    "Plan",
    "Problem",
    "ProgressEvent",
    "Residency",
    "SimResult",
    "SolveOptions",
    "SolverError",
    "Status",
    "Sweep",
    "TensorParallel",
    "TrainSim",
    "Training",
    "Workload",
    "apply_profile",
    "build_plan",
    "canonical_partition",
    "capacity_for",
    "chain_from_dict",
    "chain_to_dict",
    "check_partition",
    "compare",
    "compare_table",
    "diagnose",
    "evaluate",
    "fingerprint",
    "fleet_for",
    "format_bytes",
    "frontier_table",
    "get_backend",
    "get_cluster",
    "get_device",
    "get_method",
    "load_chain",
    "load_cluster",
    "load_model",
    "load_plan",
    "load_profile",
    "load_sweep",
    "lower_bound",
    "parse_bytes",
    "problem_from_graph",
    "random_problem",
    "residency_for",
    "run_paper",
    "run_sweep",
    "simulate",
    "simulate_plan",
    "simulate_training",
    "solve",
    "tensor_parallel_for",
    "training_for",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


if TYPE_CHECKING:  # what type checkers and editors see
    from .algorithms import (
        AUTO,
        ILP_BACKENDS,
        METHODS,
        ProgressEvent,
        SolveOptions,
        get_backend,
        get_method,
        solve,
    )
    from .analysis import Sweep, compare, compare_table, frontier_table, load_sweep, run_sweep
    from .core import (
        CachepartError,
        Extension,
        Fleet,
        InfeasibleError,
        InvalidInputError,
        Link,
        MemoryModel,
        Partition,
        Problem,
        Residency,
        SolverError,
        Status,
        TensorParallel,
        Training,
        canonical_partition,
        check_partition,
        diagnose,
        evaluate,
        format_bytes,
        lower_bound,
        parse_bytes,
        random_problem,
    )
    from .experiments import run_paper
    from .frontend import (
        LayerGraph,
        LoadedModel,
        apply_profile,
        chain_from_dict,
        chain_to_dict,
        fleet_for,
        load_chain,
        load_model,
        load_profile,
        problem_from_graph,
        residency_for,
        tensor_parallel_for,
        training_for,
    )
    from .hardware import (
        DEVICES,
        Cluster,
        Device,
        Workload,
        capacity_for,
        get_cluster,
        get_device,
        load_cluster,
    )
    from .plan import (
        SCHEMA_VERSION,
        Plan,
        SimResult,
        TrainSim,
        build_plan,
        fingerprint,
        load_plan,
        simulate,
        simulate_plan,
        simulate_training,
    )
