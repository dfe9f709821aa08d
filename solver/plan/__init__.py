"""The plan: the deployment record every method's answer becomes, its JSON Schema I/O, and the
GPipe simulator behind its predictions."""

from __future__ import annotations

from .build import build_plan, fingerprint
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

__all__ = [
    "SCHEMA_VERSION",
    "HardwareInfo",
    "ModelInfo",
    "Plan",
    "SimResult",
    "Slot",
    "SolverInfo",
    "StagePlan",
    "build_plan",
    "fingerprint",
    "load_plan",
    "plan_schema",
    "simulate",
    "simulate_plan",
]
