"""``cachepart export``: each target's format read back by the target's own rules.

Where each rule comes from (../shared/reference/engines.md):

- vLLM: ``VLLM_PP_LAYER_PARTITION`` read by vllm/distributed/utils.py ``get_pp_indices``
  (vllm/envs.py): one int per PP rank, summing to ``num_hidden_layers``; the embedding on rank 0,
  the final norm and LM head on the last.
- SGLang: ``SGLANG_PP_LAYER_PARTITION``, python/sglang/srt/distributed/utils.py
  ``get_pp_indices`` (the same rule).
- TensorRT-LLM: ``pp_partition``, tensorrt_llm/mapping.py ``pp_layers``: length PP, sum the
  decoder layers.
- Megatron-Core: ``--pipeline-model-parallel-layout``,
  megatron/core/transformer/pipeline_parallel_layer_layout.py (``|`` stages, ``x*n`` repeats,
  ``E`` once and first, ``L`` once and last, count of ``t`` = ``--num-layers``); the older
  ``--decoder-first/last-pipeline-num-layers``, megatron/training/arguments.py (checked in
  megatron/core/transformer/transformer_config.py).
- torchtitan: ``parallelism.module_fqns_per_model_part``, torchtitan/config/configs.py,
  torchtitan/distributed/pipeline_parallel.py.
- torch pipelining: ``pipeline(model, mb_args, split_spec)``, torch/distributed/pipelining.
- accelerate: ``device_map``, src/accelerate/big_modeling.py (every parameter covered).
- DeepSpeed: ``PipelineModule`` parts, deepspeed/runtime/pipe/module.py.
- torchgpipe: ``balance`` over ``nn.Sequential(embed, *blocks, head)``, torchgpipe/gpipe.py.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import random
import re
import socket
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from solver import InvalidInputError
from solver.cli import main
from solver.engines import ENGINES
from solver.hardware import register_devices
from solver.plan import (
    TARGETS,
    Plan,
    export_plan,
    load_plan,
    megatron_layout,
    parse_megatron_layout,
)

# Decode: the head reads its whole matrix per token, so the optimum splits the blocks unevenly
# (in prefill only the last position runs the head, and 32 blocks split 8/8/8/8).
LLAMA = ["llama3-8b", "--devices", "4", "--device", "h100-sxm", "--capacity", "80GB",
         "--seq", "2048", "--phase", "decode"]
BLOCKS = 32  # llama3-8b's decoder layers
_BLOCK = re.compile(r"^block(\d+)$")


# ----- plans ----------------------------------------------------------------------------------
def _chain(path: Path, embed_s: float, head_s: float, blocks: int = 4) -> Path:
    """A chain of embed, block0..blocks-1, head whose latencies make the optimum put a heavy
    embedding or head on a stage of its own."""
    lat = [embed_s, *[1.0] * blocks, head_s]
    names = ["embed", *(f"block{i}" for i in range(blocks)), "head"]
    layers = [{"name": n, "weight_bytes": 1000, "activation_bytes": 10, "latency_s": t}
              for n, t in zip(names, lat, strict=True)]
    path.write_text(json.dumps({"name": path.stem, "layers": layers}))
    return path


@pytest.fixture(scope="module")
def solved(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Plan]:
    """``solved(key, *argv)``: the plan of ``cachepart solve *argv``, solved once per module."""
    root = tmp_path_factory.mktemp("plans")
    cache: dict[str, Plan] = {}

    def make(key: str, *argv: str) -> Plan:
        if key not in cache:
            path = root / f"{key}.json"
            assert main(["solve", *argv, "-q", "-o", str(path)]) == 0, argv
            cache[key] = load_plan(path)
            (root / f"{key}.path").write_text(str(path))
        return cache[key]

    make.root = root  # type: ignore[attr-defined]
    return make


def _path(solved: Callable[..., Plan], key: str) -> str:
    return (solved.root / f"{key}.path").read_text()  # type: ignore[attr-defined]


def _engine_plan(solved: Callable[..., Plan], engine: str) -> Plan:
    return solved(engine, *LLAMA, "--engine", engine)


def _edge_plans(solved: Callable[..., Plan]) -> dict[str, Plan]:
    """Plans with a stage of the embedding alone, of the head alone, with different TP sizes,
    at op granularity, and an even split."""
    root = solved.root  # type: ignore[attr-defined]
    return {
        "alone": solved("alone", str(_chain(root / "alone.json", 5.0, 5.0)), "--devices", "3",
                        "--capacity", "1MB"),
        "head": solved("head", str(_chain(root / "head.json", 0.1, 5.0)), "--devices", "2",
                       "--capacity", "1MB"),
        "even": solved("even", str(_chain(root / "even.json", 0.1, 0.1)), "--devices", "2",
                       "--capacity", "1MB"),
        "mixed_tp": solved("mixed_tp", str(_chain(root / "tp.json", 10.0, 1.0)), "--devices",
                           "3", "--capacity", "1MB", "--tp", "1,2"),
        "op": solved("op", *LLAMA, "--granularity", "op"),
    }


def _blocks(plan: Plan) -> list[list[int]]:
    """The decoder blocks of each stage, by index (zoo names)."""
    return [[int(m.group(1)) for n in st.layers if (m := _BLOCK.match(n))] for st in plan.stages]


def _hf_names(layer: str) -> list[str]:
    """The Hugging Face Llama modules of a zoo layer, written out here independently."""
    if layer == "embed":
        return ["model.embed_tokens", "model.rotary_emb"]
    if layer == "head":
        return ["model.norm", "lm_head"]
    m = _BLOCK.match(layer)
    assert m, layer
    return [f"model.layers.{m.group(1)}"]


# ----- the engines' own readers, rewritten from their sources ---------------------------------
def _get_pp_indices(partition: str, num_hidden_layers: int, pp_rank: int,
                    pp_size: int) -> tuple[int, int]:
    """vllm/distributed/utils.py get_pp_indices with VLLM_PP_LAYER_PARTITION set (SGLang's
    python/sglang/srt/distributed/utils.py is the same)."""
    partitions = [int(layer) for layer in partition.split(",")]
    if len(partitions) != pp_size:
        raise ValueError(f"{len(partitions)=} does not match {pp_size=}.")
    if sum(partitions) != num_hidden_layers:
        raise ValueError(f"{sum(partitions)=} does not match {num_hidden_layers=}.")
    start = sum(partitions[:pp_rank])
    return start, start + partitions[pp_rank]


def _trt_pp_layers(pp_partition: list[int], num_layers: int, pp_rank: int,
                   pp_size: int) -> list[int]:
    """tensorrt_llm/mapping.py pp_layers with pp_partition given."""
    assert len(pp_partition) == pp_size and sum(pp_partition) == num_layers
    start = sum(pp_partition[:pp_rank])
    return list(range(start, start + pp_partition[pp_rank]))


def _flags(args: list[str], *names: str) -> argparse.Namespace:
    """Parse an export's flags as integer options the way the engine's argparse does."""
    parser = argparse.ArgumentParser(exit_on_error=False)
    for name in names:
        parser.add_argument(name, type=int, required=True)
    parser.add_argument("--pipeline-model-parallel-layout")
    return parser.parse_args(args)


def _megatron_core() -> dict[str, Any]:
    """megatron-core's layout class, layer types and config, or a skip where it is missing
    (it warns about Transformer Engine and Apex on import; pytest makes warnings errors)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            from megatron.core.transformer.enums import LayerType
            from megatron.core.transformer.pipeline_parallel_layer_layout import (
                PipelineParallelLayerLayout,
            )
            from megatron.core.transformer.transformer_config import TransformerConfig
        except (ImportError, RuntimeError, OSError) as exc:
            pytest.skip(f"megatron-core not importable: {exc}")
    return {"Layout": PipelineParallelLayerLayout, "LayerType": LayerType,
            "Config": TransformerConfig}


def _read_back(target: str, export: dict[str, Any], plan: Plan) -> tuple[list[list[int]], int, int]:
    """(blocks per stage by index, P, T) as the target itself would read the export."""
    env, args, config = export["env"], export["args"], export["config"]
    units = [n for st in plan.stages for n in st.layers]
    if target in ("vllm", "sglang"):
        var = f"{target.upper()}_PP_LAYER_PARTITION"
        assert set(env) == {var}
        flags = ("--pipeline-parallel-size", "--tensor-parallel-size") if target == "vllm" \
            else ("--pp-size", "--tp-size")
        ns = _flags(args, *flags)
        pp, tp = vars(ns)[flags[0][2:].replace("-", "_")], vars(ns)[flags[1][2:].replace("-", "_")]
        ranges = [_get_pp_indices(env[var], BLOCKS, r, pp) for r in range(pp)]
        return [list(range(*r)) for r in ranges], pp, tp
    if target == "trtllm":
        pp = config["pipeline_parallel_size"]
        return ([_trt_pp_layers(config["pp_partition"], BLOCKS, r, pp) for r in range(pp)], pp,
                config["tensor_parallel_size"])
    if target == "megatron":
        ns = _flags(args, "--pipeline-model-parallel-size", "--tensor-model-parallel-size",
                    "--num-layers")
        stages = parse_megatron_layout(ns.pipeline_model_parallel_layout, ns.num_layers)
        assert "E" in stages[0] and "L" in stages[-1]
        out, taken = [], 0
        for stage in stages:
            out.append(list(range(taken, taken + stage.count("t"))))
            taken += stage.count("t")
        return out, ns.pipeline_model_parallel_size, ns.tensor_model_parallel_size
    if target == "torchtitan":
        par = config["parallelism"]
        parts = par["module_fqns_per_model_part"]
        assert parts[0][0] == "tok_embeddings" and parts[-1][-2:] == ["norm", "output"]
        return ([[int(f.split(".")[1]) for f in part if f.startswith("layers.")] for part in parts],
                par["pipeline_parallel_degree"], par["tensor_parallel_degree"])
    if target in ("deepspeed", "torchgpipe"):
        assert [u for unit in config["layers"] for u in unit] == units
        if target == "deepspeed":
            bounds = config["parts"]
            pp, tp = config["num_stages"], config["topology"]["num_mp"]
        else:
            assert all(b > 0 for b in config["balance"])
            bounds = [0, *itertools.accumulate(config["balance"])]
            pp, tp = len(config["balance"]), 1
        assert bounds[0] == 0 and bounds[-1] == len(config["layers"]) and len(bounds) == pp + 1
        stages = [[n for unit in config["layers"][s:e] for n in unit]
                  for s, e in itertools.pairwise(bounds)]
        return [[int(m.group(1)) for n in st if (m := _BLOCK.match(n))] for st in stages], pp, tp
    if target == "pipelining":
        points = list(config["split_spec"])
        assert set(config["split_spec"].values()) == {"BEGINNING"}
        # stages begin at a block here: the block index is in the module name
        starts = [0, *(int(p.rsplit(".", 1)[1]) for p in points), BLOCKS]
        assert all(p.startswith("model.layers.") for p in points)
        return [list(range(s, e)) for s, e in itertools.pairwise(starts)], len(points) + 1, 1
    assert target == "accelerate"
    dm = config["device_map"]
    pp = max(dm.values()) + 1
    assert dm["model.embed_tokens"] == dm["model.rotary_emb"] == 0
    assert dm["model.norm"] == dm["lm_head"] == pp - 1
    return [[i for i in range(BLOCKS) if dm[f"model.layers.{i}"] == j] for j in range(pp)], pp, 1


# ----- 1. every target reads back the plan's split --------------------------------------------
@pytest.mark.parametrize("target", TARGETS)
def test_an_engine_plan_reads_back_as_its_split(target: str,
                                                solved: Callable[..., Plan]) -> None:
    # torchgpipe has no --engine of its own: DeepSpeed's rules are its rules
    plan = _engine_plan(solved, target if target in ENGINES else "deepspeed")
    export = export_plan(plan, target).to_dict()
    assert set(export) == {"target", "env", "args", "config", "notes"}
    assert export["target"] == target and export["notes"]
    blocks, pp, tp = _read_back(target, export, plan)
    assert pp == len(plan.stages) == 4 and tp == 1
    assert blocks == _blocks(plan)
    assert sum(len(b) for b in blocks) == BLOCKS
    assert len({len(b) for b in blocks}) > 1  # an uneven split: the test can tell stages apart


def test_one_tp_size_reaches_every_format_that_has_one(solved: Callable[..., Plan]) -> None:
    plan = solved("tp2", LLAMA[0], "--devices", "8", *LLAMA[3:], "--engine", "megatron",
                  "--tp", "2")
    assert {st.tp_degree for st in plan.stages} == {2}
    for target in ("vllm", "sglang", "trtllm", "megatron", "torchtitan", "deepspeed"):
        blocks, pp, tp = _read_back(target, export_plan(plan, target).to_dict(), plan)
        assert (blocks, pp, tp) == (_blocks(plan), len(plan.stages), 2), target
    for target in ("pipelining", "accelerate", "torchgpipe"):
        with pytest.raises(InvalidInputError, match="no tensor parallelism") as err:
            export_plan(plan, target)
        assert err.value.field == "to" and "--engine" in err.value.reason


def test_a_plan_not_shaped_for_an_engine_exports_when_it_keeps_the_rules(
        solved: Callable[..., Plan]) -> None:
    plan = solved("plain", *LLAMA)
    assert plan.engine is None and plan.stages[0].layers[:2] == ("embed", "block0")
    env = export_plan(plan, "vllm").env
    assert env == {"VLLM_PP_LAYER_PARTITION": ",".join(str(len(b)) for b in _blocks(plan))}


# ----- 2. refusals: one line, exit 2, the reason and the --engine that fixes it ----------------
def _refused(path: str, target: str, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["export", path, "--to", target]) == 2, target
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert captured.out == "" and len(err) == 1, err
    assert err[0].startswith("cachepart: error: --to: ")
    return err[0]


def test_a_stage_of_the_embedding_or_head_alone_is_refused_by_the_counting_engines(
        solved: Callable[..., Plan], capsys: pytest.CaptureFixture[str]) -> None:
    plans = _edge_plans(solved)
    assert [st.layers for st in plans["alone"].stages] == [
        ("embed",), ("block0", "block1", "block2", "block3"), ("head",)]
    assert plans["head"].stages[-1].layers == ("head",) and len(plans["head"].stages) == 2
    for target in ("vllm", "sglang", "trtllm"):
        line = _refused(_path(solved, "alone"), target, capsys)
        assert "embedding" in line and "stage 0 holds embed alone" in line
        assert f"--engine {target}" in line
        line = _refused(_path(solved, "head"), target, capsys)
        assert "LM head" in line and "stage 1 holds head alone" in line
        assert f"--engine {target}" in line
    # the formats where E and L are stages of their own take the same plan
    alone = plans["alone"]
    assert export_plan(alone, "megatron").config["pipeline_model_parallel_layout"] == "E|t*4|L"
    assert export_plan(alone, "torchtitan").config["parallelism"][
        "module_fqns_per_model_part"] == [["tok_embeddings"],
                                          ["layers.0", "layers.1", "layers.2", "layers.3"],
                                          ["norm", "output"]]
    assert export_plan(alone, "deepspeed").config["parts"] == [0, 1, 5, 6]
    assert export_plan(alone, "torchgpipe").config["balance"] == [1, 4, 1]
    assert export_plan(alone, "pipelining").config["split_spec"] == {
        "model.layers.0": "BEGINNING", "model.norm": "BEGINNING"}
    assert export_plan(plans["head"], "megatron").config[
        "pipeline_model_parallel_layout"] == "Et*4|L"


def test_parts_of_blocks_and_mixed_tp_sizes_are_refused_by_every_target(
        solved: Callable[..., Plan], capsys: pytest.CaptureFixture[str]) -> None:
    plans = _edge_plans(solved)
    assert [st.tp_degree for st in plans["mixed_tp"].stages] == [2, 1]
    assert any("." in n for st in plans["op"].stages for n in st.layers)
    for target in TARGETS:
        engine = target if target in ENGINES else "deepspeed"
        line = _refused(_path(solved, "op"), target, capsys)
        assert "whole blocks" in line and "--granularity block" in line
        assert f"--engine {engine}" in line
        line = _refused(_path(solved, "mixed_tp"), target, capsys)
        assert f"--engine {engine}" in line and "2, 1" in line
        expected = "no tensor parallelism" if target in ("pipelining", "accelerate",
                                                         "torchgpipe") \
            else "one tensor-parallel size for every stage"
        assert expected in line, line


# ----- 3. Megatron's layout grammar and its older flags ---------------------------------------
def _random_stages(rng: random.Random) -> list[tuple[bool, int, bool]]:
    pp = rng.randint(1, 6)
    counts = [rng.randint(0 if j in (0, pp - 1) and pp > 1 else 1, 12) for j in range(pp)]
    return [(j == 0, c, j == pp - 1) for j, c in enumerate(counts)]


def test_megatron_layout_round_trip() -> None:
    rng = random.Random(7)
    for _ in range(200):
        stages = _random_stages(rng)
        layout = megatron_layout(stages)
        parsed = parse_megatron_layout(layout, sum(c for _, c, _ in stages))
        assert [(s[:1] == ["E"], s.count("t"), s[-1:] == ["L"]) for s in parsed] == stages
        assert all(set(s) <= {"E", "t", "L"} for s in parsed)
    assert megatron_layout([(True, 3, False), (False, 5, False), (False, 4, True)]) == \
        "Et*3|t*5|t*4L"
    assert megatron_layout([(True, 0, False), (False, 1, False), (False, 0, True)]) == "E|t|L"
    # the grammar's other forms: commas are cosmetic, (...)*n repeats a group, m is MTP
    assert parse_megatron_layout("Ettt|(tt|)*2,m|L") == [
        ["E", "t", "t", "t"], ["t", "t"], ["t", "t"], ["m"], ["L"]]
    for bad, why in [("tE|L", "E must appear once, first"), ("E|t|L|L", "L must appear once"),
                     ("E|tLt", "L must appear once, last"), ("E|x*2|L", "unknown layer"),
                     ("Et*3|t*4L", "7 decoder layers"), ("", "expected a layout")]:
        with pytest.raises(InvalidInputError, match=re.escape(why)) as err:
            parse_megatron_layout(bad, 8 if bad == "Et*3|t*4L" else None)
        assert err.value.field == "layout"


def test_megatron_core_reads_the_layouts_and_the_older_flags(
        solved: Callable[..., Plan]) -> None:
    mc = _megatron_core()
    Layout, LayerType, Config = mc["Layout"], mc["LayerType"], mc["Config"]
    chars = {LayerType.embedding: "E", LayerType.decoder: "t", LayerType.loss: "L",
             LayerType.mtp: "m"}
    rng = random.Random(11)
    samples = [megatron_layout(_random_stages(rng)) for _ in range(50)] + ["Ettt|(tt|)*2,m|L"]
    for layout in samples:
        theirs = [[chars[t] for t in stage] for stage in Layout.parse_str_to_list(layout)]
        assert parse_megatron_layout(layout) == theirs, layout
    import torch

    plans = {"llama": _engine_plan(solved, "megatron"), **_edge_plans(solved),
             "llama3": solved("megatron3", *LLAMA, "--devices", "3", "--engine", "megatron")}
    for key in ("llama", "alone", "head", "even"):
        export = export_plan(plans[key], "megatron").config
        pp, layout, n = (export["pipeline_model_parallel_size"],
                         export["pipeline_model_parallel_layout"], export["num_layers"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parsed = Layout(layout, pp)
            parsed.validate_layer_layout(num_layers=n, mtp_num_layers=None)
            # the layout as a training config takes it too (PP > 1 needs a pipeline dtype)
            Config(num_layers=n, hidden_size=64, num_attention_heads=4,
                   pipeline_model_parallel_size=pp, pipeline_model_parallel_layout=layout,
                   pipeline_dtype=torch.bfloat16)
        counts = [parsed.layout[r][0].count(LayerType.decoder) for r in range(pp)]
        assert counts == [len(b) for b in _blocks(plans[key])], key
    # older flags: first and last given, the middle stages split the rest evenly
    # (megatron/training/arguments.py); a plan whose middle stages differ has none
    with_flags = 0
    for key in ("llama", "llama3", "alone", "head", "even"):
        plan = plans[key]
        flags = export_plan(plan, "megatron").config["older_flags"]
        counts = [len(b) for b in _blocks(plan)]
        if len(set(counts)) == 1:
            assert flags == [], key  # even: no flags needed
        elif counts[0] and counts[-1] and len(set(counts[1:-1])) <= 1:
            with_flags += 1
            assert flags == ["--decoder-first-pipeline-num-layers", str(counts[0]),
                             "--decoder-last-pipeline-num-layers", str(counts[-1])], key
            with warnings.catch_warnings():  # Megatron-Core takes the flags
                warnings.simplefilter("ignore")
                Config(num_layers=sum(counts), hidden_size=64, num_attention_heads=4,
                       pipeline_model_parallel_size=len(counts), pipeline_dtype=torch.bfloat16,
                       num_layers_in_first_pipeline_stage=counts[0],
                       num_layers_in_last_pipeline_stage=counts[-1])
        else:
            assert flags is None, key
    assert with_flags  # the flags are checked on at least one plan
    assert export_plan(plans["even"], "megatron").config["older_flags"] == []
    assert _blocks(plans["even"]) == [[0, 1], [2, 3]]
    # an embedding-only first stage has no older form (the first count must be > 0)
    assert export_plan(plans["alone"], "megatron").config["older_flags"] is None


# ----- 4. and 5. a tiny Hugging Face Llama through torch pipelining and accelerate ------------
_TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4,
         "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 128,
         "max_position_embeddings": 64, "bos_token_id": 0, "eos_token_id": 1,
         "pad_token_id": None}

_FACTORY = f'''
def tiny():
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(**{_TINY!r}))
'''


def _tiny() -> Any:
    """The tiny Llama, seeded, in eval mode, without a KV cache (a DynamicCache in the output
    does not trace under torch.export)."""
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    import torch

    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**_TINY)).eval()
    model.config.use_cache = False
    return model


def _ids() -> Any:
    import torch

    return torch.randint(0, _TINY["vocab_size"], (4, 8), generator=torch.Generator().manual_seed(1))


def _no_overhead_device(root: Path) -> str:
    """An h100-sxm whose kernels cost nothing fixed, registered for this session."""
    path = root / "no-overhead.yaml"
    path.write_text("devices:\n  h100-no-overhead:\n    base: h100-sxm\n    overhead: null\n"
                    "    sources: {default: \"[P] a test device\"}\n")
    return register_devices(path)[0]


@pytest.fixture(scope="module")
def tiny_plans(solved: Callable[..., Plan]) -> dict[str, Plan]:
    """The tiny Llama's plans: from its config.json (zoo names) and from a module factory
    (its own module names)."""
    model = _tiny()
    root = solved.root  # type: ignore[attr-defined]
    model.config.save_pretrained(root / "tiny")
    factory = root / "tiny_factory.py"
    factory.write_text(_FACTORY)
    return {
        "config": solved("tiny-config", str(root / "tiny" / "config.json"), "--devices", "2",
                         "--capacity", "250KB", "--seq", "8"),
        # an H100 without kernel overhead: the tiny layers' times follow their bytes, and the
        # split (3 | 1 blocks) differs from the config plan's
        "module": solved("tiny-module", f"{factory}:tiny", "--input-shape", "2,8",
                         "--input-dtype", "long", "--devices", "2", "--capacity", "300KB",
                         "--device", _no_overhead_device(root)),
    }


def _owner(name: str, modules: list[str]) -> str:
    """The module of ``modules`` that holds parameter or buffer ``name``."""
    owners = [m for m in modules if name == m or name.startswith(m + ".")]
    assert len(owners) == 1, (name, owners)
    return owners[0]


ALL_MODULES = ["model.embed_tokens", "model.rotary_emb",
               *(f"model.layers.{i}" for i in range(4)), "model.norm", "lm_head"]


def _expected_modules(plan: Plan) -> list[set[str]]:
    """Per stage, the tiny Llama's modules the plan puts there."""
    return [{m for n in st.layers for m in (_hf_names(n) if _BLOCK.match(n) or n in
                                            ("embed", "head") else [n])}
            for st in plan.stages]


def test_module_names_count_blocks_like_zoo_names(tiny_plans: dict[str, Plan]) -> None:
    # a torch module plan names its blocks model.layers.N and keeps the modules around them
    # (embedding + rotary, norm + head) with the stages of the first and last blocks
    plan = tiny_plans["module"]
    per_stage = [sum(n.startswith("model.layers.") for n in st.layers) for st in plan.stages]
    assert per_stage == [3, 1]
    assert export_plan(plan, "vllm").env == {"VLLM_PP_LAYER_PARTITION": "3,1"}
    assert export_plan(plan, "megatron").config["pipeline_model_parallel_layout"] == "Et*3|tL"
    assert export_plan(plan, "torchtitan").config["parallelism"]["module_fqns_per_model_part"] \
        == [["tok_embeddings", "layers.0", "layers.1", "layers.2"], ["layers.3", "norm", "output"]]
    # [embed, 4 blocks, head]: the embedding unit is model.embed_tokens + model.rotary_emb
    config = export_plan(plan, "deepspeed").config
    assert config["parts"] == [0, 4, 6] and config["layers"][0] == ["model.embed_tokens",
                                                                  "model.rotary_emb"]
    assert export_plan(plan, "torchgpipe").config["balance"] == [4, 2]


@pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")  # torch.export's own
def test_pipelining_split_spec_runs_the_plan(solved: Callable[..., Plan],
                                             tiny_plans: dict[str, Plan]) -> None:
    import torch
    from torch.distributed.pipelining import SplitPoint, pipeline

    ids = _ids()
    with torch.no_grad():
        reference = _tiny()(ids).logits
    # config.json (zoo names mapped to the module names), the module's own names, and a plan
    # with the embedding and the head on stages of their own (stages begin at model.layers.0
    # and model.norm)
    plans = {**tiny_plans, "alone": _edge_plans(solved)["alone"]}
    assert [len(p.stages) for p in plans.values()] == [2, 2, 3]
    assert _expected_modules(plans["config"]) != _expected_modules(plans["module"])
    for key, plan in plans.items():
        spec = export_plan(plan, "pipelining").config["split_spec"]
        model = _tiny()  # a fresh copy: pipeline() leaves its split points on the modules
        pipe = pipeline(model, mb_args=(ids,),
                        split_spec={k: SplitPoint[v] for k, v in spec.items()})
        assert pipe.num_stages == len(plan.stages), key
        out: Any = (ids,)
        held = []
        with torch.no_grad():
            for i in range(pipe.num_stages):
                stage = pipe.get_stage_module(i)
                names = [n for n, _ in itertools.chain(stage.named_parameters(),
                                                       stage.named_buffers())]
                held.append({_owner(n, ALL_MODULES) for n in names})
                out = stage(*out)
                out = out if isinstance(out, tuple) else (out,)
        assert held == _expected_modules(plan), key
        torch.testing.assert_close(out[0], reference, rtol=0, atol=0)


def _pipeline_rank(rank: int, world: int, port: int, split: list[str], out: str) -> None:
    """One rank of the two-process run: the same seeded model, traced, its stage run under
    GPipe with two micro-batches; the last rank saves the logits."""
    import torch
    import torch.distributed as dist
    from torch.distributed.pipelining import ScheduleGPipe, SplitPoint, pipeline

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="localhost", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            model, ids = _tiny(), _ids()
            pipe = pipeline(model, mb_args=(ids[:2],),
                            split_spec={k: SplitPoint.BEGINNING for k in split})
        schedule = ScheduleGPipe(pipe.build_stage(rank, torch.device("cpu")), n_microbatches=2)
        with torch.no_grad():
            if rank == 0:
                schedule.step(ids)
            else:
                torch.save(schedule.step(), out)
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forks the two ranks")
@pytest.mark.filterwarnings("ignore:.*use of fork\\(\\) may lead to deadlocks:DeprecationWarning")
def test_pipelining_on_two_gloo_ranks_matches_one_process(tiny_plans: dict[str, Plan],
                                                          tmp_path: Path) -> None:
    import torch
    import torch.multiprocessing as mp

    model, ids = _tiny(), _ids()
    with torch.no_grad():
        reference = model(ids).logits
    split = list(export_plan(tiny_plans["config"], "pipelining").config["split_spec"])
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    out = tmp_path / "logits.pt"
    # fork, not spawn: the ranks inherit torch and transformers already imported (seconds)
    mp.start_processes(_pipeline_rank, args=(2, port, split, str(out)), nprocs=2, join=True,
                       start_method="fork")
    torch.testing.assert_close(torch.load(out), reference, rtol=1e-6, atol=1e-6)


def test_accelerate_device_map_covers_the_model_by_stage(tiny_plans: dict[str, Plan]) -> None:
    accelerate = pytest.importorskip("accelerate")
    import torch
    from accelerate.utils.modeling import check_device_map

    model, ids = _tiny(), _ids()
    with torch.no_grad():
        reference = model(ids).logits
    everything = [n for n, _ in itertools.chain(model.named_parameters(),
                                                model.named_buffers())]
    assert any("rotary_emb" in n for n in everything)  # a buffer-only module to cover
    for key, plan in tiny_plans.items():
        device_map = export_plan(plan, "accelerate").config["device_map"]
        check_device_map(model, device_map)  # raises when a parameter has no device
        assert {_owner(n, list(device_map)) for n in everything} == set(device_map)
        by_stage = [{m for m, j in device_map.items() if j == i} for i in range(len(plan.stages))]
        assert by_stage == _expected_modules(plan), key
        if key == "module":  # a torch module plan: its layer names are the map's keys
            assert list(device_map) == [n for st in plan.stages for n in st.layers]
        # one CPU stands in for every device; the hooks still move each module's inputs
        fresh = _tiny()
        dispatched = accelerate.dispatch_model(fresh, {k: "cpu" for k in device_map},
                                               force_hooks=True)
        with torch.no_grad():
            torch.testing.assert_close(dispatched(ids).logits, reference, rtol=0, atol=0)


# ----- 6. the command line ----------------------------------------------------------------------
def test_export_command_line(solved: Callable[..., Plan],
                             capsys: pytest.CaptureFixture[str]) -> None:
    plan = _engine_plan(solved, "vllm")
    path = _path(solved, "vllm")
    assert main(["export", path, "--to", "vllm", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc == export_plan(plan, "vllm").to_dict()
    assert doc["args"] == ["--pipeline-parallel-size", "4", "--tensor-parallel-size", "1"]

    assert main(["export", path, "--to", "vllm"]) == 0
    lines = capsys.readouterr().out.splitlines()
    partition = ",".join(str(len(b)) for b in _blocks(plan))
    assert lines[0] == f"VLLM_PP_LAYER_PARTITION={partition}"
    assert lines[1] == "--pipeline-parallel-size 4 --tensor-parallel-size 1"
    assert lines[2].startswith("note: ") and all(x.startswith("note: ") for x in lines[2:])

    # the layout's | is quoted for the shell; the config follows as JSON
    assert main(["export", _path(solved, "megatron"), "--to", "megatron"]) == 0
    text = capsys.readouterr().out
    layout = export_plan(_engine_plan(solved, "megatron"), "megatron").config[
        "pipeline_model_parallel_layout"]
    assert f"--pipeline-model-parallel-layout '{layout}'" in text
    assert json.loads(text[text.index("{"):text.index("\nnote: ")])[
        "pipeline_model_parallel_layout"] == layout

    for argv, pattern in [(["--to", "nope"], "invalid choice: 'nope'"),
                          ([], "the following arguments are required: --to")]:
        assert main(["export", path, *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and pattern in err[0], err
    missing = str(Path(path).with_name("missing.json"))
    assert main(["export", missing, "--to", "vllm"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.json" in err[0] and "cannot read" in err[0]
    with pytest.raises(InvalidInputError, match="unknown target 'nope'"):
        export_plan(plan, "nope")
    assert main(["export", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--engine" in text and f"the engine: {', '.join(TARGETS)}" in text
