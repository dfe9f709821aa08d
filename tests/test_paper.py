"""The paper's experiment: its contradictions are reported, its layouts evaluated."""

from __future__ import annotations

import json

import pytest

from solver import run_paper
from solver.cli import main


@pytest.fixture(scope="module")
def report():
    return run_paper(methods=("greedy", "dp"))


def test_paper_json_fields(report) -> None:
    doc = report.to_dict()
    assert doc["params_computed"] == 3_221_487_616
    assert doc["params_declared"] == 30_000_000_000
    assert doc["l2_feasible"] is False
    assert set(doc["predicted_tokens_per_s"]) == {"baseline", "layerwise"}
    assert all(v > 0 for v in doc["predicted_tokens_per_s"].values())
    json.dumps(doc)


def test_paper_contradictions(report) -> None:
    text = "\n".join(report.contradictions)
    assert "3,221,487,616" in text and "30,000,000,000" in text
    assert "block0" in report.l2_diagnosis and "52428800" in report.l2_diagnosis
    assert "0.0781 ms" in text
    assert report.l2_devices_weights_only == -(-16 * 402_685_952 // 52_428_800)


def test_paper_layouts(report) -> None:
    greedy = report.scenario("layer-wise HBM (greedy)")
    dp = report.scenario("layer-wise HBM (dp)")
    base = report.scenario("baseline TP=8 x PP=2")
    assert greedy.devices == 1  # the paper's greedy fills one 80 GB device first
    assert dp.devices == 16 and dp.stages == 16
    assert base.tp == (8, 8) and base.devices == 16
    assert dp.bottleneck_s < base.bottleneck_s
    best = report.scenario("best TP x PP (dp)")
    assert best.bottleneck_s <= dp.bottleneck_s * (1 + 1e-12)


def test_paper_cli(capsys) -> None:
    assert main(["paper", "--methods", "dp", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["l2_feasible"] is False
    assert main(["paper", "--methods", "dp"]) == 0
    out = capsys.readouterr().out
    assert "What does not hold" in out and "paper: layer-wise" in out
