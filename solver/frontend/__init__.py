"""From a model source to the Problem: MODEL (zoo name, spec YAML, HF config.json, chain JSON,
torch module factory) -> LayerGraph (networkx, footprints and costs) -> Problem."""

from __future__ import annotations

from .chain import chain_from_dict, chain_to_dict, load_chain
from .graph import LayerGraph
from .lower import (
    allreduce_bytes_of,
    check_tp_degrees,
    fleet_for,
    kind_latencies,
    overheads_of,
    problem_from_graph,
    residency_for,
    tensor_parallel_for,
    training_for,
)
from .profiles import Profile, apply_profile, load_profile, profile_from_graph, save_profile
from .sources import LoadedModel, load_model

__all__ = [
    "LayerGraph",
    "LoadedModel",
    "Profile",
    "allreduce_bytes_of",
    "apply_profile",
    "chain_from_dict",
    "chain_to_dict",
    "check_tp_degrees",
    "fleet_for",
    "kind_latencies",
    "load_chain",
    "load_model",
    "load_profile",
    "overheads_of",
    "problem_from_graph",
    "profile_from_graph",
    "residency_for",
    "save_profile",
    "tensor_parallel_for",
    "training_for",
]
