"""A user's checkpoint through the plan: transformers' numerics, stage by stage, and generation.

Tiny checkpoints of every family are built locally with transformers (seeded random weights,
``save_pretrained``; examples/tiny_checkpoint.py); nothing is fetched. The stages of 2- and
3-stage splits, at block and op granularity where the family's block splits into ops, are
built from the checkpoint and chained in one process, exactly as the runner builds each rank's
stage, and compared with transformers' own model: the logits, and the greedy tokens and their
logits step by step with each stage keeping its KV cache. A few full runs go through torchrun.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("torch.distributed.pipelining")

from models.checkpoint import Checkpoint  # noqa: E402
from models.errors import SpecError  # noqa: E402
from models.safetensors_io import TensorIndex  # noqa: E402
from models.torch_ref import build_chain, greedy_generate, layer_names  # noqa: E402
from solver.cli import main  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "examples"))
import tiny_checkpoint  # noqa: E402

FAMILIES = list(tiny_checkpoint.FAMILIES)
DECODERS = [f for f in FAMILIES if f != "bert"]
# op granularity splits pre-norm, sandwich and single-norm parallel blocks; Falcon-40B's two
# parallel norms and BERT's post-norm blocks run at block granularity only
NO_OPS = {"falcon-40b", "bert"}
TOKENS = 6


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("checkpoints")
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return {f: tiny_checkpoint.build_checkpoint(f, root / f, seed=7) for f in FAMILIES}


def _reference(path: Path) -> Any:
    cls = transformers.AutoModel if path.name == "bert" else transformers.AutoModelForCausalLM
    return cls.from_pretrained(path).eval()


def _ids(batch: int = 4, seq: int = 10, seed: int = 3) -> Any:
    return torch.randint(0, 96, (batch, seq), generator=torch.Generator().manual_seed(seed))


def _stages(ck: Checkpoint, granularity: str, parts: int) -> list[Any]:
    names = layer_names(ck.spec, granularity)
    cuts = [round(i * len(names) / parts) for i in range(parts + 1)]
    return [build_chain(ck.spec, names[a:b], numerics=ck.numerics, weights=ck)
            for a, b in itertools.pairwise(cuts)]


def _forward(stages: list[Any], ids: Any) -> Any:
    x: Any = ids
    with torch.no_grad():
        for stage in stages:
            x = stage(*x) if isinstance(x, tuple) else stage(x)
    return x


def _close(got: Any, want: Any) -> tuple[float, float]:
    """(max |error|, the issue's fp32 tolerance 1e-4 x max(1, max |reference|))."""
    pairs = list(zip(got, want, strict=True)) if isinstance(got, tuple) else [(got, want)]
    error = max(float((g - w).abs().max()) for g, w in pairs)
    return error, 1e-4 * max(1.0, max(float(w.abs().max()) for _, w in pairs))


def _hf_forward(model: Any, ids: Any) -> Any:
    with torch.no_grad():
        out = model(input_ids=ids)
    return out.logits if hasattr(out, "logits") else (out.last_hidden_state, out.pooler_output)


CASES = [(f, g, p) for f in FAMILIES for g in ("block", "op") for p in (2, 3)
         if not (g == "op" and f in NO_OPS)]


@pytest.mark.parametrize(("family", "granularity", "parts"), CASES)
def test_stages_give_transformers_logits(checkpoints: dict[str, Path], family: str,
                                         granularity: str, parts: int) -> None:
    ck = Checkpoint.open(checkpoints[family])
    ids = _ids()
    error, tolerance = _close(_forward(_stages(ck, granularity, parts), ids),
                              _hf_forward(_reference(checkpoints[family]), ids))
    assert error <= tolerance, (family, granularity, parts, error)


GEN_CASES = [(f, g, p) for f in DECODERS for g in ("block", "op") for p in (2, 3)
             if not (g == "op" and f in NO_OPS)]


@pytest.mark.parametrize(("family", "granularity", "parts"), GEN_CASES)
def test_greedy_tokens_and_step_logits_match_transformers(
        checkpoints: dict[str, Path], family: str, granularity: str, parts: int) -> None:
    ck = Checkpoint.open(checkpoints[family])
    ids = _ids()
    model = _reference(checkpoints[family])
    with torch.no_grad():
        want = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=TOKENS,
                              min_new_tokens=TOKENS, do_sample=False, eos_token_id=None,
                              pad_token_id=0, output_logits=True, return_dict_in_generate=True)
    got = greedy_generate(_stages(ck, granularity, parts), ids, TOKENS, microbatches=2)
    assert got.tokens.tolist() == want.sequences[:, ids.shape[1]:].tolist()
    assert len(set(got.tokens.flatten().tolist())) > 2  # a run that repeats one id proves little
    for step, (mine, theirs) in enumerate(zip(got.logits, want.logits, strict=True)):
        error, tolerance = _close(mine, theirs)
        assert error <= tolerance, (family, step, error)


MUTATIONS = [
    # (family, the numerics field changed, its wrong value): each must move the logits past the
    # tolerance, so the equality tests above would catch a runner that ignored the field
    ("mistral", "windows", ()),
    ("qwen2", "windows", ()),
    ("gemma2", "attn_softcap", None),
    ("gemma2", "final_softcap", None),
    ("gemma2", "embed_scale", None),
    ("gemma2", "rms_offset", False),
    ("opt", "position_offset", 0),
    ("opt", "activation", "gelu"),
    ("falcon", "activation", "gelu_tanh"),
    ("llama", "rope", None),
    ("llama3-rope", "rope", None),
    ("bert", "causal", True),
]


@pytest.mark.parametrize(("family", "field", "value"), MUTATIONS)
def test_each_config_field_matters(checkpoints: dict[str, Path], family: str, field: str,
                                   value: Any) -> None:
    ck = Checkpoint.open(checkpoints[family])
    ck.numerics = dataclasses.replace(ck.numerics, **{field: value})
    ids = _ids(seq=12)
    error, tolerance = _close(_forward(_stages(ck, "block", 2), ids),
                              _hf_forward(_reference(checkpoints[family]), ids))
    assert error > tolerance, (family, field, error)


def test_a_sharded_checkpoint(tmp_path: Path) -> None:
    path = tiny_checkpoint.build_checkpoint("llama", tmp_path / "sharded", seed=2, shard_mb=0.05)
    index = json.loads((path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    tensors = TensorIndex(path)
    assert set(tensors.names()) == set(index["weight_map"])
    ck = Checkpoint.open(path)
    ids = _ids()
    error, tolerance = _close(_forward(_stages(ck, "block", 2), ids),
                              _hf_forward(_reference(path), ids))
    assert error <= tolerance


def test_checkpoint_errors_name_the_tensor(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((checkpoints["llama"] / "config.json").read_text())
    tensors = load_file(checkpoints["llama"] / "model.safetensors")
    del tensors["model.layers.2.mlp.up_proj.weight"]
    tensors["model.layers.1.self_attn.k_proj.weight"] = torch.zeros(3, 32)
    save_file(tensors, broken / "model.safetensors")
    ck = Checkpoint.open(broken)
    with pytest.raises(SpecError, match=re.escape("no tensor 'model.layers.2.mlp.up_proj.weight'")):
        ck.check_tensors(["block2"])
    with pytest.raises(SpecError, match=r"k_proj.weight: shape \(3, 32\)"):
        ck.check_tensors(["block1"])
    assert ck.check_tensors(["embed", "block0"]) > 0
    (broken / "model.safetensors").write_bytes(b"\x10\x00")
    with pytest.raises(SpecError, match="not a safetensors file"):
        Checkpoint.open(broken)


_MEASURE = """
import gc, json, sys
from models.checkpoint import Checkpoint
from models.torch_ref import build_chain

def status(key):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith(key))

# every kind of layer built once first: torch allocates lazily on first use of a kernel
small = Checkpoint.open(sys.argv[1])
build_chain(small.spec, ["embed", "block0", "head"], numerics=small.numerics, weights=small)
gc.collect()
ck = Checkpoint.open(sys.argv[2])
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # the peak resident set starts again from here
before = status("VmRSS:")
stage = build_chain(ck.spec, sys.argv[3].split(","), numerics=ck.numerics, weights=ck)
print(json.dumps({"peak_growth": status("VmHWM:") - before,
                  "stage_bytes": sum(p.numel() * p.element_size() for p in stage.parameters())}))
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux /proc only")
def test_a_stage_holds_its_own_weights_in_host_memory(checkpoints: dict[str, Path],
                                                      tmp_path: Path) -> None:
    """The peak growth of a process building one stage is that stage's weights, not the
    model's: tensors are read one by one, straight into the parameters."""
    big = tiny_checkpoint.build_checkpoint("llama", tmp_path / "big", seed=1, hidden_size=512,
                                           intermediate_size=2048, num_attention_heads=8,
                                           num_key_value_heads=8)
    whole = TensorIndex(big).total_bytes()
    for layers in ("embed,block0,block1", "block2,block3,head"):
        done = subprocess.run([sys.executable, "-c", _MEASURE, str(checkpoints["llama"]),
                               str(big), layers], cwd=REPO, capture_output=True, text=True,
                              timeout=120, check=True)
        got = json.loads(done.stdout)
        stage = got["stage_bytes"]
        assert 0.4 * whole < stage < 0.6 * whole  # half the model's weights
        assert 0.95 * stage <= got["peak_growth"] <= 1.1 * stage + 4 * 2**20, (layers, got)


# ----- the CLI: planning a directory, refusing what does not fit, running -------------------
def _solve(model: Path | str, out: Path, *extra: str, devices: int = 2,
           capacity: str = "150kB") -> Path:
    """A plan over ``devices`` stages (150 kB holds a third of most tiny models, not all of
    it, so the runs below cross stage boundaries)."""
    assert main(["solve", str(model), "--devices", str(devices), "--capacity", capacity,
                 "--seq", "10", "--batch", "4", "--micro-batch", "2", "--dtype", "fp32", "-q",
                 "-o", str(out), *extra]) == 0
    assert len(json.loads(out.read_text())["stages"]) == devices
    return out


def test_a_directory_is_a_model(checkpoints: dict[str, Path], tmp_path: Path,
                                capsys: pytest.CaptureFixture[str],
                                monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["inspect", str(checkpoints["mixtral"]), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["source_kind"] == "hf-checkpoint" and doc["model"] == "mixtral"
    model = _reference(checkpoints["mixtral"])
    assert doc["params"] == sum(p.numel() for p in model.parameters())
    monkeypatch.chdir(checkpoints["llama"].parent)
    plan = _solve(Path("llama"), tmp_path / "plan.json")
    assert json.loads(plan.read_text())["model"]["source"] == str(checkpoints["llama"])
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["inspect", str(empty)]) == 2
    assert "without config.json" in capsys.readouterr().err


def _run(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """`cachepart run` in its own process (it launches torchrun)."""
    return subprocess.run([sys.executable, "-m", "solver.cli", "run", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, env=dict(os.environ))


def test_run_refuses_before_launch(checkpoints: dict[str, Path], tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Every refusal happens in `cachepart run` itself, before torchrun starts a process."""
    plan = _solve(checkpoints["llama"], tmp_path / "plan.json")
    torch.save(torch.zeros(4, 10, dtype=torch.int32), tmp_path / "int32.pt")
    torch.save(torch.full((4, 10), 96, dtype=torch.int64), tmp_path / "big.pt")
    torch.save(torch.zeros(3, 10, dtype=torch.int64), tmp_path / "three.pt")
    gpt2 = _solve(checkpoints["gpt2"], tmp_path / "gpt2.json", capacity="200kB")
    bert = _solve(checkpoints["bert"], tmp_path / "bert.json")
    cases = [
        ([plan, "--checkpoint", checkpoints["mistral"]], 2, "--checkpoint: .* fingerprint"),
        ([plan, "--checkpoint", tmp_path], 2, "--checkpoint: .* not a checkpoint directory"),
        ([plan, "--input-ids", tmp_path / "none.pt"], 2, "--input-ids: .* no such file"),
        ([plan, "--input-ids", tmp_path / "int32.pt"], 2, "expected an int64 tensor"),
        ([plan, "--input-ids", tmp_path / "big.pt"], 2, r"must be in 0\.\.95, got 96\.\.96"),
        ([plan, "--input-ids", tmp_path / "three.pt"], 2, "a batch of 3 sequences"),
        ([gpt2, "--generate", "60"], 2, "exceed the 64 learned positions"),
        ([bert, "--generate", "2"], 2, "generation needs a decoder"),
    ]
    for args, code, pattern in cases:
        assert main(["run", *map(str, args)]) == code, args
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and re.search(pattern, lines[0]), (args, lines)
    monkeypatch.setenv("CACHEPART_HOST_MEMORY_BYTES", "1000")
    assert main(["run", str(plan)]) == 3
    err = capsys.readouterr().err
    assert "share this machine's memory" in err and "more than the 1000 B available" in err


def test_a_run_loads_the_checkpoint_and_generates(checkpoints: dict[str, Path],
                                                  tmp_path: Path) -> None:
    plan = _solve(checkpoints["llama"], tmp_path / "plan.json")
    ids = _ids(seq=10, seed=11)
    torch.save(ids, tmp_path / "ids.pt")
    report = tmp_path / "report.json"
    done = _run(str(plan), "--verify", "--generate", "5", "--input-ids", str(tmp_path / "ids.pt"),
                "--save-output", str(tmp_path / "out.pt"), "--report", str(report))
    assert done.returncode == 0, done.stderr[-2000:]
    doc = json.loads(report.read_text())
    assert doc["weights"] == str(checkpoints["llama"])
    assert doc["verify"]["passed"] and doc["verify"]["reference"].startswith("transformers")
    model = _reference(checkpoints["llama"])
    with torch.no_grad():
        want = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=5,
                              min_new_tokens=5, do_sample=False, eos_token_id=None,
                              pad_token_id=0)
    gen = doc["generate"]
    assert gen["tokens"] == want[:, 10:].tolist() and gen["matches_reference"] is True
    assert gen["ttft_s"] > 0 and gen["tpot_s"] > 0 and gen["predicted"]["tpot_s"] > 0
    saved = torch.load(tmp_path / "out.pt", weights_only=True)
    error, tolerance = _close(saved, _hf_forward(model, ids))
    assert saved.shape == (4, 10, 96) and error <= tolerance


def test_a_decode_plan_of_a_sandwich_model_at_op_granularity(checkpoints: dict[str, Path],
                                                            tmp_path: Path) -> None:
    plan = _solve(checkpoints["gemma2"], tmp_path / "plan.json", "--phase", "decode",
                  "--granularity", "op", devices=3)
    report = tmp_path / "report.json"
    done = _run(str(plan), "--verify", "--generate", "4", "--report", str(report))
    assert done.returncode == 0, done.stderr[-2000:]
    doc = json.loads(report.read_text())
    assert doc["generate"]["matches_reference"] is True
    assert len(doc["stages"]) == len(json.loads(plan.read_text())["stages"])
    assert all(st["samples"] == 2 * 3 for st in doc["stages"])  # 2 micro-batches x 3 steps


def test_an_encoder_runs_its_pooler(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    plan = _solve(checkpoints["bert"], tmp_path / "plan.json")
    done = _run(str(plan), "--verify", "--steps", "1", "--warmup", "0")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "passed (against transformers" in done.stdout


def test_a_quantized_model_is_planned_not_run(checkpoints: dict[str, Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    config = json.loads((checkpoints["llama"] / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "awq", "bits": 4, "group_size": 16,
                                     "zero_point": True, "version": "gemm"}
    path = tmp_path / "awq.json"
    path.write_text(json.dumps(config))
    assert main(["inspect", str(path)]) == 0
    assert "(quantized: awq 4-bit gemm, groups of 16)" in capsys.readouterr().out
    plan = _solve(path, tmp_path / "plan.json", devices=1)
    assert main(["run", str(plan)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is quantized (awq 4-bit gemm" in err[0]
    with pytest.raises(SpecError, match="a quantized checkpoint is planned, not run"):
        folder = tmp_path / "awq"
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(config))
        Checkpoint.open(folder)


def test_without_transformers_the_reference_is_every_layer_in_one_process(
        checkpoints: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from solver.plan import load_plan
    from solver.runner import pipeline as pl
    from solver.runner import prepare_run

    plan = load_plan(_solve(checkpoints["qwen2"], tmp_path / "plan.json"))
    setup = prepare_run(plan, len(plan.stages), generate=3)
    assert setup.checkpoint == str(checkpoints["qwen2"])  # the plan's own directory
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers now fails
    ref = pl.build_reference(setup, torch.device("cpu"), 0)
    assert not ref.transformers and "checkpoint's weights" in ref.label
    ids = pl.make_input(setup, torch.device("cpu"), 0)
    model = _reference(checkpoints["qwen2"])
    error, tolerance = _close(pl.reference_output(ref, ids), _hf_forward(model, ids))
    assert error <= tolerance
    with torch.no_grad():
        want = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=3,
                              min_new_tokens=3, do_sample=False, eos_token_id=None,
                              pad_token_id=0)
    assert pl.reference_tokens(ref, setup, ids, 3, 2).tolist() == want[:, 10:].tolist()


# ----- review findings ----------------------------------------------------------------------
def _copy(source: Path, target: Path) -> Path:
    import shutil

    shutil.copytree(source, target)
    return target


def test_a_tied_config_with_a_stored_head_uses_the_stored_head(checkpoints: dict[str, Path],
                                                               tmp_path: Path) -> None:
    path = _copy(checkpoints["llama"], tmp_path / "tied")
    config = json.loads((path / "config.json").read_text())
    config["tie_word_embeddings"] = True  # yet lm_head.weight is stored and differs
    (path / "config.json").write_text(json.dumps(config))
    ck = Checkpoint.open(path)
    ids = _ids()
    error, tolerance = _close(_forward(_stages(ck, "block", 2), ids), _hf_forward(_reference(path), ids))
    assert error <= tolerance


def test_legacy_bert_layer_norm_names(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    path = _copy(checkpoints["bert"], tmp_path / "bert")
    tensors = load_file(path / "model.safetensors")
    renamed = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias",
                                                                       "LayerNorm.beta"): v
               for k, v in tensors.items()}
    save_file(renamed, path / "model.safetensors")
    ck = Checkpoint.open(path)
    ids = _ids()
    error, tolerance = _close(_forward(_stages(ck, "block", 2), ids),
                              _hf_forward(_reference(checkpoints["bert"]), ids))
    assert error <= tolerance


def test_a_fused_tensor_of_another_width_is_refused(checkpoints: dict[str, Path],
                                                   tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    path = _copy(checkpoints["gpt2"], tmp_path / "wide")
    tensors = load_file(path / "model.safetensors")
    tensors["transformer.h.1.attn.c_attn.weight"] = torch.zeros(32, 101)
    save_file(tensors, path / "model.safetensors")
    with pytest.raises(SpecError, match=re.escape("shape (32, 101), but this model's is (32, 96)")):
        Checkpoint.open(path).check_tensors(["block1"])


def test_the_reference_is_built_in_the_run_dtype(checkpoints: dict[str, Path],
                                                 tmp_path: Path) -> None:
    """bf16 buffers (rotary frequencies, Gemma's embedding scale) are made in bf16 by
    transformers, not cast from fp32: the bf16 pipeline equals its bf16 reference."""
    from solver.plan import load_plan
    from solver.runner import pipeline as pl
    from solver.runner import prepare_run

    for family in ("llama", "gemma2"):
        plan = load_plan(_solve(checkpoints[family], tmp_path / f"{family}.json"))
        setup = prepare_run(plan, 2, dtype="bf16")
        ref = pl.build_reference(setup, torch.device("cpu"), 0)
        assert ref.transformers
        ids = pl.make_input(setup, torch.device("cpu"), 0)
        stages = [pl.build_stage_module(setup, st.layers, torch.device("cpu"), 0)
                  for st in plan.stages]
        verdict = pl.compare_outputs(_forward(stages, ids), pl.reference_output(ref, ids),
                                     "bf16", transformers=True)
        assert verdict.passed and verdict.max_abs_error == 0.0, (family, verdict)


def test_a_legacy_falcon_type_falls_back_to_the_chain_reference(checkpoints: dict[str, Path],
                                                                tmp_path: Path) -> None:
    from solver.plan import load_plan
    from solver.runner import pipeline as pl
    from solver.runner import prepare_run

    path = _copy(checkpoints["falcon"], tmp_path / "rw")
    config = json.loads((path / "config.json").read_text())
    config["model_type"] = "RefinedWebModel"
    (path / "config.json").write_text(json.dumps(config))
    plan = load_plan(_solve(path, tmp_path / "plan.json"))
    setup = prepare_run(plan, 2)
    ref = pl.build_reference(setup, torch.device("cpu"), 0)
    assert not ref.transformers and "transformers cannot load it" in ref.label
    ids = pl.make_input(setup, torch.device("cpu"), 0)
    error, tolerance = _close(pl.reference_output(ref, ids),
                              _hf_forward(_reference(checkpoints["falcon"]), ids))
    assert error <= tolerance


def test_more_refusals_before_launch(checkpoints: dict[str, Path], tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    llama = _solve(checkpoints["llama"], tmp_path / "llama.json")
    decode = _solve(checkpoints["llama"], tmp_path / "decode.json", "--phase", "decode")
    bert_op = _solve(checkpoints["bert"] / "config.json", tmp_path / "bert.json",
                     "--granularity", "op")
    sparse = tmp_path / "sparse.pt"
    torch.save(torch.zeros(4, 10, dtype=torch.long).to_sparse(), sparse)
    noshards = tmp_path / "noshards"
    noshards.mkdir()
    for name in ("config.json", "model.safetensors.index.json"):
        if (checkpoints["llama"] / name).exists():
            (noshards / name).write_text((checkpoints["llama"] / name).read_text())
    (noshards / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"lm_head.weight": "model-00001-of-00002.safetensors"}}))
    binonly = tmp_path / "binonly"
    binonly.mkdir()
    (binonly / "config.json").write_text((checkpoints["llama"] / "config.json").read_text())
    (binonly / "pytorch_model.bin").write_bytes(b"0")
    cases = [
        ([llama, "--save-output", tmp_path / "missing" / "out.pt"], "--save-output"),
        ([decode, "--generate", "1"], "--generate: .* N >= 2"),
        ([bert_op], "block granularity only"),
        ([llama, "--input-ids", sparse], "int64 sparse_coo tensor"),
        ([llama, "--checkpoint", noshards], "shard 'model-00001-of-00002.safetensors' is missing"),
        ([llama, "--checkpoint", binonly], "pytorch_model.bin is not read"),
    ]
    for args, pattern in cases:
        assert main(["run", *map(str, args)]) == 2, args
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and re.search(pattern, lines[0]), (args, lines)
    # a plan whose own source folder is gone runs from --checkpoint wherever the model is now
    moved = _copy(checkpoints["llama"], tmp_path / "here")
    plan = _solve(moved, tmp_path / "moved.json")
    import shutil

    shutil.move(str(moved), str(tmp_path / "there"))
    from solver.plan import load_plan
    from solver.runner import prepare_run

    setup = prepare_run(load_plan(plan), 2, checkpoint=str(tmp_path / "there"))
    assert setup.checkpoint == str(tmp_path / "there")


def test_a_checkpoint_named_like_a_zoo_model_is_the_users(checkpoints: dict[str, Path],
                                                          tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    _copy(checkpoints["gpt2"], tmp_path / "gpt2")
    monkeypatch.chdir(tmp_path)
    assert main(["inspect", "gpt2", "--json"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["source_kind"] == "hf-checkpoint"
    assert "both a zoo model and a checkpoint directory" in out.err
