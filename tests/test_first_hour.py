"""What a new user meets first: the solve headline, compare with an engine's own split, no
setuptools deprecation at install."""

from __future__ import annotations

import json
import re
from pathlib import Path

from solver.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_headline_is_the_batch_rate_and_states_the_default_micro_batch(capsys) -> None:
    args = ["solve", "llama3-8b", "--devices", "4", "--capacity", "hbm", "--batch", "8",
            "--seq", "1024"]
    assert main(args) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("predicted "))
    assert "for the batch of 8 in 1 micro-batch of 8, fill and drain included" in line
    assert "whole batch by default (set --micro-batch)" in line
    assert main([*args, "--micro-batch", "2"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("predicted "))
    assert "in 4 micro-batches of 2" in line and "by default" not in line
    assert main([*args, "--micro-batch", "2", "--steady-state"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("predicted "))
    assert line.endswith("at steady state (a pipeline kept full)")


def test_headline_numbers_are_the_plans(tmp_path, capsys) -> None:
    out = tmp_path / "p.json"
    assert main(["solve", "llama3-8b", "--devices", "4", "--capacity", "hbm", "--batch", "8",
                 "--micro-batch", "2", "--seq", "1024", "-o", str(out)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("predicted "))
    pred = json.loads(out.read_text())["predicted"]
    assert f"{pred['batch_tokens_per_s']:,.0f} tokens/s" in line
    assert f"({pred['tokens_per_s']:,.0f} at steady state)" in line


def test_compare_with_an_engine_adds_its_own_split(capsys) -> None:
    # decode: the head reads its whole matrix a token, so an even split is not the best
    assert main(["compare", "llama3-8b", "--batch", "8", "--micro-batch", "1", "--seq", "4096",
                 "--devices", "8", "--capacity", "hbm", "--engine", "vllm", "--phase", "decode",
                 "--methods", "dp,greedy"]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()
            if line.strip() and line.split()[0] in ("dp", "greedy", "vllm")}
    best = float(rows["dp"][2])
    assert float(rows["vllm"][3]) > best  # vLLM's own split, slower than the optimum
    assert float(rows["vllm"][4]) > 1 and float(rows["greedy"][3]) > 1  # ratio_to_best


def test_no_deprecated_license_table() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    # an SPDX expression (setuptools >= 77), not the deprecated {text = ...} table
    assert re.search(r'^license = "[A-Za-z0-9.-]+"$', text, re.M)
    assert re.search(r'^requires = \["setuptools>=77"', text, re.M)


def test_a_sequence_beyond_the_context_is_a_warning_for_every_family(tmp_path, capsys) -> None:
    """Rotary models by their max_position_embeddings (HF configs and the zoo), learned
    positions by their table; a model that states neither says nothing."""
    import shutil

    cases = [("llama3-8b", 8192), ("mixtral-8x7b", 32768), ("gpt2", 1024)]
    for name in ("llama-2-7b", "mistral-7b-v0.1", "qwen2-0.5b", "gemma-2-2b"):
        config = tmp_path / name / "config.json"
        config.parent.mkdir()
        shutil.copy(ROOT / "tests" / "data" / "hf" / f"{name}.json", config)
        limit = json.loads(config.read_text())["max_position_embeddings"]
        cases.append((str(config), limit))
    for model, limit in cases:
        base = ["solve", model, "-k", "64", "-c", "hbm", "-q", "--dtype", "int4"]
        assert main([*base, "--seq", str(limit)]) in (0, 3)
        assert "exceeds" not in capsys.readouterr().err, model
        main([*base, "--seq", str(limit + 1)])
        err = capsys.readouterr().err
        assert f"exceeds the {limit}" in err, (model, err)
    main(["solve", "paper-dense-16l", "-k", "16", "-c", "hbm", "--seq", "10000", "-q"])
    assert "exceeds" not in capsys.readouterr().err
