"""The runner: executes a plan with torch.distributed.pipelining, one stage per rank.

Launch it with torchrun (``python -m solver.runner plan.json``, solver/cli/worker.py) or through
``cachepart run``. Modules: options.py (what a run is asked to do), validate.py (the checks
before any rank runs), worker.py (one rank's run), pipeline.py and l2.py (torch), report.py.
Names load on first use: importing the package needs neither torch nor the planner.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "RunOptions": "options",
    "REPORT_SCHEMA": "report", "RunReport": "report", "StageResult": "report", "Verify": "report",
    "format_report": "report", "predict": "report",
    "RUNNABLE_DTYPES": "validate", "TP_DEGREE": "validate", "RunSetup": "validate",
    "check_fingerprint": "validate", "check_stage_memory": "validate",
    "check_world_size": "validate", "device_slot": "validate", "plan_workload": "validate",
    "prepare_run": "validate",
}

__all__ = [
    "REPORT_SCHEMA",
    "RUNNABLE_DTYPES",
    "TP_DEGREE",
    "RunOptions",
    "RunReport",
    "RunSetup",
    "StageResult",
    "Verify",
    "check_fingerprint",
    "check_stage_memory",
    "check_world_size",
    "device_slot",
    "format_report",
    "plan_workload",
    "predict",
    "prepare_run",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


if TYPE_CHECKING:
    from .options import RunOptions
    from .report import REPORT_SCHEMA, RunReport, StageResult, Verify, format_report, predict
    from .validate import (
        RUNNABLE_DTYPES,
        TP_DEGREE,
        RunSetup,
        check_fingerprint,
        check_stage_memory,
        check_world_size,
        device_slot,
        plan_workload,
        prepare_run,
    )
