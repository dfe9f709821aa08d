"""The paper's 16 x H100 experiment, reproduced with what does not hold."""

from __future__ import annotations

from .paper import PAPER_CLAIMS, PaperReport, Scenario, run_paper

__all__ = ["PAPER_CLAIMS", "PaperReport", "Scenario", "run_paper"]
