"""The plan: the deployment record every method's answer becomes, its JSON Schema I/O, the
pipeline simulators behind its predictions (inference GPipe; training GPipe and 1F1B), its
verification against the model it names, and its export to each engine's format."""

from __future__ import annotations

from .build import build_plan, fingerprint
from .export import TARGETS, Export, export_plan, megatron_layout, parse_megatron_layout
from .schedule import TrainSim, TrainSlot, simulate_training, uniform_step_s
from .simulate import SimResult, Slot, simulate, simulate_plan
from .types import (
    SCHEMA_VERSION,
    HardwareInfo,
    ModelInfo,
    Plan,
    SolverInfo,
    StagePlan,
    load_plan,
    plan_schema,
)
from .verify import VerifyResult, verify_plan

__all__ = [
    "SCHEMA_VERSION",
    "TARGETS",
    "Export",
    "HardwareInfo",
    "ModelInfo",
    "Plan",
    "SimResult",
    "Slot",
    "SolverInfo",
    "StagePlan",
    "TrainSim",
    "TrainSlot",
    "VerifyResult",
    "build_plan",
    "export_plan",
    "fingerprint",
    "load_plan",
    "megatron_layout",
    "parse_megatron_layout",
    "plan_schema",
    "simulate",
    "simulate_plan",
    "simulate_training",
    "uniform_step_s",
    "verify_plan",
]
