"""The runner: executes a plan with torch.distributed.pipelining, one stage per rank.

Launch it with torchrun (``python -m solver.runner plan.json``, see __main__.py) or through
``cachepart run``. This package's import needs no torch: the checks (validate.py) and the report
(report.py) are plain Python; pipeline.py and l2.py import torch and are loaded by the runner.
"""

from __future__ import annotations

from .report import REPORT_SCHEMA, RunReport, StageResult, Verify, format_report, predict
from .validate import (
    RUNNABLE_DTYPES,
    TP_DEGREE,
    RunSetup,
    check_fingerprint,
    check_stage_memory,
    check_world_size,
    plan_workload,
    prepare_run,
)

__all__ = [
    "REPORT_SCHEMA",
    "RUNNABLE_DTYPES",
    "TP_DEGREE",
    "RunReport",
    "RunSetup",
    "StageResult",
    "Verify",
    "check_fingerprint",
    "check_stage_memory",
    "check_world_size",
    "format_report",
    "plan_workload",
    "predict",
    "prepare_run",
]
