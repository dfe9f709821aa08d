"""The zoo, spec files, footprints by hand, and the model-facing CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.errors import SpecError
from models.spec import load_spec, spec_from_dict
from models.transformer import TransformerSpec
from models.zoo import load_zoo_model, zoo_names
from solver import InvalidInputError, Workload, load_model
from solver.cli import main
from solver.hardware import footprints

REQUIRED_ZOO = ["llama2-7b", "llama2-13b", "llama2-70b", "llama3-8b", "llama3-70b",
                "llama3.1-405b", "mistral-7b", "mixtral-8x7b", "gpt3-175b", "gpt2", "gpt2-xl",
                "bert-large", "resnet50", "vit-b16", "paper-dense-16l", "paper-dense-30b",
                "tiny-llama"]


def test_zoo_has_the_required_models() -> None:
    assert set(REQUIRED_ZOO) <= set(zoo_names())


@pytest.mark.parametrize("name", REQUIRED_ZOO)
def test_zoo_counts_match_published_figures(name: str) -> None:
    spec = load_zoo_model(name)
    assert spec.source
    layers = spec.arch.layer_descs("block")
    assert sum(layer.params for layer in layers) == spec.params()
    assert sum(layer.params for layer in spec.arch.layer_descs("op")) == spec.params()
    if spec.published_params:
        assert abs(spec.params() - spec.published_params) <= 0.005 * spec.published_params
    if spec.published_active_params:
        active = spec.arch.active_params()
        assert abs(active - spec.published_active_params) <= 0.005 * spec.published_active_params


def test_mixtral_total_and_active() -> None:
    spec = load_zoo_model("mixtral-8x7b")
    assert spec.params() == 46_702_792_704
    assert spec.arch.active_params() == 12_879_925_248


def test_paper_model_contradiction_is_a_warning() -> None:
    spec = load_zoo_model("paper-dense-16l")
    warning = spec.parameter_warning()
    assert warning is not None and "30,000,000,000" in warning and "3,221,487,616" in warning
    assert load_zoo_model("paper-dense-30b").parameter_warning() is None


def test_tiny_llama_footprint_by_hand() -> None:
    """hidden 64, 4 heads x 16, ffn 176, vocab 256; batch 2, seq 8, bf16, prefill."""
    spec = load_zoo_model("tiny-llama")
    fps = footprints(spec.arch.layer_descs("block"), Workload(batch=2, seq_len=8))
    embed, block, head = fps[0], fps[1], fps[-1]
    tokens = 2 * 8
    assert embed.weight_bytes == 256 * 64 * 2
    assert embed.activation_bytes == tokens * 64 * 2
    attn = 4 * 64 * 64
    mlp = 3 * 64 * 176
    assert block.params == attn + mlp + 2 * 64
    assert block.weight_bytes == 2 * block.params
    assert block.activation_bytes == tokens * 64 * 2
    # The gated MLP holds gate and up projections (2 x 176) at once: larger than Q/K/V (192).
    assert block.buffer_bytes == tokens * 2 * 176 * 2
    # Projections 2 x (attn + mlp) per token, plus causal scores 4 * heads * dh * s * s / 2.
    assert block.flops == 2 * (attn + mlp) * tokens + 4 * 2 * 4 * 16 * 8 * 8 * 0.5
    assert head.weight_bytes == 2 * (64 + 256 * 64)  # final norm + untied LM head
    assert len(fps) == 4 + 2


def test_decode_kv_cache_and_eager_scores() -> None:
    spec = load_zoo_model("tiny-llama")
    wl = Workload(batch=2, seq_len=8, phase="decode")
    block = footprints(spec.arch.layer_descs("block"), wl)[1]
    kv = 2 * 2 * 8 * 4 * 16 * 2  # K and V, batch, context, kv heads, head dim, bf16
    assert block.kv_cache_bytes == kv
    assert block.activation_bytes == 2 * 64 * 2  # one new token per sequence
    assert block.buffer_bytes == 2 * 2 * 176 * 2 + kv
    eager = footprints(spec.arch.layer_descs("block"),
                       Workload(batch=2, seq_len=8, attention="eager"))[1]
    assert eager.buffer_bytes == 16 * 2 * 176 * 2 + 2 * 4 * 8 * 8 * 2


def test_dtypes_and_int4() -> None:
    spec = load_zoo_model("tiny-llama")
    fp = footprints(spec.arch.layer_descs("block"), Workload(weight_dtype="int4"))[1]
    assert fp.weight_bytes == fp.params // 2
    with pytest.raises(InvalidInputError, match="weight_dtype: unknown dtype 'fp7'"):
        Workload(weight_dtype="fp7")


def test_op_granularity_splits_blocks() -> None:
    spec = load_zoo_model("llama2-7b")
    ops = spec.arch.layer_descs("op")
    names = [layer.name for layer in ops[:5]]
    assert names == ["embed", "block0.attn_norm", "block0.attn", "block0.mlp_norm", "block0.mlp"]
    assert len(ops) == 2 + 4 * 32
    graph = load_model("llama2-7b", Workload(batch=1, seq_len=128), granularity="op").graph
    assert len(graph) == len(ops)


def test_spec_file_and_bad_specs(tmp_path: Path) -> None:
    good = {"name": "m", "architecture": "transformer",
            "arch": {"hidden": 64, "layers": 2, "heads": 4, "ffn": 128, "vocab": 100}}
    path = tmp_path / "m.yaml"
    path.write_text(json.dumps(good))  # JSON is YAML
    assert load_spec(path).params() == TransformerSpec(64, 2, 4, 128, vocab=100).params()
    cases = [
        ({**good, "arch": {**good["arch"], "hidden": -64}}, "arch.hidden: must be a positive"),
        ({**good, "arch": {k: v for k, v in good["arch"].items() if k != "heads"}}, "heads"),
        ({**good, "architecture": "rnn"}, "architecture: 'rnn' is not known"),
        ({**good, "arch": {**good["arch"], "colour": 1}}, "arch.colour: unknown field"),
        ({k: v for k, v in good.items() if k != "name"}, "name: missing"),
        ({**good, "arch": {**good["arch"], "mlp": "swish"}}, "mlp: expected one of gated, plain"),
    ]
    for doc, message in cases:
        with pytest.raises(SpecError, match=message):
            spec_from_dict(doc, "m.yaml")


def test_cli_inspect_json(capsys) -> None:
    assert main(["inspect", "tiny-llama", "--batch", "2", "--seq", "8", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["params"] == load_zoo_model("tiny-llama").params()
    assert {"name", "params", "weight_bytes", "activation_bytes", "buffer_bytes"} <= set(
        doc["layers"][0])
    assert sum(layer["params"] for layer in doc["layers"]) == doc["params"]


def test_cli_paper_model_warns_and_l2_is_infeasible(capsys) -> None:
    code = main(["solve", "paper-dense-16l", "--batch", "128", "--seq", "10000", "-k", "16",
                 "-c", "l2", "-m", "dp"])
    assert code == 3
    err = capsys.readouterr().err
    assert "warning: paper-dense-16l: declared parameter count 30,000,000,000" in err
    assert "layer 'block0' cannot fit" in err and "52428800" in err


def test_cli_zoo_and_bad_model(capsys, tmp_path: Path) -> None:
    assert main(["zoo"]) == 0
    assert "mixtral-8x7b" in capsys.readouterr().out
    assert main(["inspect", "no-such-model"]) == 2
    assert "is neither a file nor a zoo model" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\narchitecture: transformer\narch: {hidden: 64, layers: 2, heads: 4}\n")
    assert main(["inspect", str(bad)]) == 2
    assert "bad.yaml" in capsys.readouterr().err
    assert main(["solve", "tiny-llama", "-k", "2", "-c", "l3"]) == 2
    assert "tiers: smem, l2, l2-usable, hbm" in capsys.readouterr().err
    assert main(["inspect", "tiny-llama", "--dtype", "fp7"]) == 2


def test_cli_solve_zoo_model_records_device_and_tier(tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    assert main(["solve", "tiny-llama", "--batch", "2", "--seq", "16", "-k", "3", "-c", "l2",
                 "-m", "dp", "-o", str(out), "-q"]) == 0
    plan = json.loads(out.read_text())
    assert plan["hardware"]["device"] == "h100-sxm" and plan["hardware"]["tier"] == "l2"
    assert plan["hardware"]["capacity_bytes"] == 50 * 2**20
    assert plan["workload"]["batch"] == 2


def test_cli_torch_module_factory(capsys) -> None:
    pytest.importorskip("torch")
    factory = str(Path(__file__).resolve().parents[1] / "examples" / "torch_mlp.py") + ":build"
    assert main(["inspect", factory, "--input-shape", "32,1024", "--batch", "32", "--dtype", "fp32",
                 "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["params"] == 6 * (1024 * 4096 + 4096 + 4096 * 1024 + 1024)
    assert doc["layers"][0]["activation_bytes"] == 32 * 4096 * 4
    assert main(["solve", factory, "-k", "2", "-c", "1GB", "-m", "dp", "-q"]) == 2
    assert "--input-shape" in capsys.readouterr().err
