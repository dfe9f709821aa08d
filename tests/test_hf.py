"""models.hf: Hugging Face config.json import, checked against published parameter counts."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from models.errors import SpecError
from models.hf import SUPPORTED_MODEL_TYPES, load_hf_config, spec_from_hf_config
from models.transformer import TransformerSpec

DATA = Path(__file__).parent / "data" / "hf"


def _config(name: str) -> dict:
    return json.loads((DATA / name).read_text(encoding="utf-8"))


# Every figure is the exact parameter count of the transformers module (sum of numel, a tied
# head counted once): models.md for Llama-2-7B, Mistral-7B, Mixtral-8x7B, GPT-2 and BERT-large
# (BertModel with pooler); the Hub model cards / model.num_parameters() for the others.
PUBLISHED = {
    "llama-2-7b.json": 6_738_415_616,
    "mistral-7b-v0.1.json": 7_241_732_096,
    "mixtral-8x7b-v0.1.json": 46_702_792_704,
    "qwen2-0.5b.json": 494_032_768,
    "gemma-2-9b.json": 9_241_705_984,
    "gemma-2-2b.json": 2_614_341_888,
    "gpt2.json": 124_439_808,
    "opt-125m.json": 125_239_296,
    "falcon-7b.json": 6_921_720_704,
    "bert-large-uncased.json": 335_141_888,
}


@pytest.mark.parametrize("fixture", sorted(PUBLISHED))
def test_published_counts_exact(fixture: str) -> None:
    _, spec = load_hf_config(DATA / fixture)
    assert spec.params() == PUBLISHED[fixture]


def test_every_supported_family_has_a_fixture() -> None:
    families = {_config(name)["model_type"] for name in PUBLISHED}
    assert families == set(SUPPORTED_MODEL_TYPES)


def test_mixtral_active_params_top2() -> None:
    _, spec = load_hf_config(DATA / "mixtral-8x7b-v0.1.json")
    assert (spec.experts, spec.experts_per_token, spec.kvh) == (8, 2, 8)
    assert spec.active_params() == 12_879_925_248  # models.md, top-2 routing


def test_names() -> None:
    assert load_hf_config(DATA / "llama-2-7b.json")[0] == "meta-llama/Llama-2-7b-hf"
    assert load_hf_config(DATA / "gpt2.json")[0] == "gpt2"  # no _name_or_path: the file stem
    assert spec_from_hf_config(_config("gpt2.json"))[0] == "gpt2"  # stem "config": model_type
    assert spec_from_hf_config(_config("gpt2.json"), "ckpt/config.json")[0] == "gpt2"


def test_family_layouts() -> None:
    qwen = load_hf_config(DATA / "qwen2-0.5b.json")[1]
    assert (qwen.qkv_bias, qwen.attn_bias, qwen.tied_embeddings, qwen.kvh) == (True, False, True, 2)
    gemma = load_hf_config(DATA / "gemma-2-9b.json")[1]
    assert (gemma.dh, gemma.norms_per_layer, gemma.tied_embeddings) == (256, 4, True)
    assert gemma.heads * gemma.dh != gemma.hidden
    falcon = load_hf_config(DATA / "falcon-7b.json")[1]
    assert (falcon.kvh, falcon.norms_per_layer, falcon.ffn, falcon.mlp) == (1, 1, 4 * 4544, "plain")
    opt = load_hf_config(DATA / "opt-125m.json")[1]
    assert (opt.positions, opt.attn_bias, opt.final_norm) == (2050, True, True)
    bert = load_hf_config(DATA / "bert-large-uncased.json")[1]
    assert (bert.kind, bert.embed_norm, bert.final_norm, bert.lm_head, bert.pooler) == (
        "encoder", True, False, False, True)


def test_falcon_new_decoder_architecture() -> None:
    # falcon-40b: GQA with 8 KV heads, ln_attn + ln_mlp in each layer.
    config = {"model_type": "falcon", "hidden_size": 8192, "num_attention_heads": 128,
              "num_kv_heads": 8, "num_hidden_layers": 60, "new_decoder_architecture": True,
              "parallel_attn": True, "bias": False, "alibi": False, "vocab_size": 65024}
    _, spec = spec_from_hf_config(config)
    assert (spec.kvh, spec.norms_per_layer) == (8, 2)
    # Weights by hand: fused QKV (128 + 2 x 8) x 64 wide, dense, 4x MLP, two LayerNorms.
    layer = 8192 * 144 * 64 + 8192 * 8192 + 2 * 8192 * 32768 + 2 * 2 * 8192
    assert spec.params() == 60 * layer + 65024 * 8192 + 2 * 8192
    # Falcon2-11B style: new architecture with a single shared norm.
    assert spec_from_hf_config({**config, "num_ln_in_parallel_attn": 1})[1].norms_per_layer == 1


def test_falcon_legacy_aliases() -> None:
    # Pre-port (remote code) falcon-7b and falcon-40b configs: n_embed/n_layer/n_head/n_head_kv.
    old_7b = {"model_type": "RefinedWebModel", "hidden_size": 4544, "n_head": 71, "n_layer": 32,
              "multi_query": True, "parallel_attn": True, "bias": False, "vocab_size": 65024}
    assert spec_from_hf_config(old_7b)[1].params() == PUBLISHED["falcon-7b.json"]
    old_40b = {"model_type": "RefinedWeb", "n_embed": 8192, "n_head": 128, "n_head_kv": 8,
               "n_layer": 60, "parallel_attn": True, "bias": False, "vocab_size": 65024}
    spec = spec_from_hf_config(old_40b)[1]
    assert (spec.hidden, spec.kvh, spec.norms_per_layer) == (8192, 8, 2)
    aliased = {**_config("falcon-7b.json"), "n_embed": 4544, "n_layer": 32, "n_head": 71}
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads"):
        del aliased[key]
    assert spec_from_hf_config(aliased)[1].params() == PUBLISHED["falcon-7b.json"]


def test_falcon_multi_head_and_sequential() -> None:
    base = {**_config("falcon-7b.json"), "hidden_size": 1024, "num_attention_heads": 16}
    mha = spec_from_hf_config({**base, "multi_query": False, "num_kv_heads": 4})[1]
    assert mha.kvh == 16  # the old architecture ignores num_kv_heads without multi_query
    assert spec_from_hf_config({**base, "parallel_attn": False})[1].norms_per_layer == 2


def test_gpt2_n_inner_and_llama_defaults() -> None:
    gpt2 = _config("gpt2.json")
    assert spec_from_hf_config({**gpt2, "n_inner": None})[1].ffn == 3072
    assert spec_from_hf_config({**gpt2, "n_inner": 1000})[1].ffn == 1000
    llama = _config("llama-2-7b.json")
    del llama["num_key_value_heads"]
    del llama["tie_word_embeddings"]
    assert spec_from_hf_config(llama)[1].params() == PUBLISHED["llama-2-7b.json"]
    biased = spec_from_hf_config({**llama, "attention_bias": True, "mlp_bias": True})[1]
    assert biased.params() - PUBLISHED["llama-2-7b.json"] == 32 * (4 * 4096 + 2 * 11008 + 4096)


def test_head_dim_honoured_for_llama_family() -> None:
    # Mistral-Nemo: head_dim 128 while hidden / heads is 160.
    config = {**_config("mistral-7b-v0.1.json"), "hidden_size": 5120, "head_dim": 128,
              "num_hidden_layers": 40, "vocab_size": 131072}
    spec = spec_from_hf_config(config)[1]
    assert spec.dh == 128
    assert spec.attention_params() == 2 * 5120 * 4096 + 2 * 5120 * 1024


def test_opt_variants() -> None:
    opt = _config("opt-125m.json")
    with pytest.raises(SpecError, match=r"^config\.json: word_embed_proj_dim 512 is not supported"):
        spec_from_hf_config({**opt, "word_embed_proj_dim": 512})  # OPT-350m
    post_norm = spec_from_hf_config({**opt, "do_layer_norm_before": False})[1]
    assert PUBLISHED["opt-125m.json"] - post_norm.params() == 2 * 768
    no_bias = spec_from_hf_config({**opt, "enable_bias": False})[1]
    assert not (no_bias.attn_bias or no_bias.mlp_bias)


def test_bert_relative_positions_rejected() -> None:
    config = {**_config("bert-large-uncased.json"), "position_embedding_type": "relative_key"}
    with pytest.raises(SpecError, match="position_embedding_type 'relative_key'"):
        spec_from_hf_config(config)


# ----- errors ----------------------------------------------------------------------------------

def test_unsupported_model_type_lists_supported() -> None:
    with pytest.raises(SpecError) as info:
        spec_from_hf_config({"model_type": "t5", "d_model": 512})
    message = str(info.value)
    assert message.startswith("config.json: model_type 't5' is not supported (supported: ")
    assert all(name in message for name in SUPPORTED_MODEL_TYPES)
    assert "\n" not in message


def test_missing_model_type() -> None:
    with pytest.raises(SpecError, match=r"^cfg\.json: model_type: missing"):
        spec_from_hf_config({"hidden_size": 4096}, "cfg.json")


@pytest.mark.parametrize(("fixture", "field"), [
    ("llama-2-7b.json", "num_attention_heads"),
    ("mixtral-8x7b-v0.1.json", "num_local_experts"),
    ("gemma-2-9b.json", "head_dim"),
    ("gpt2.json", "n_embd"),
    ("opt-125m.json", "ffn_dim"),
    ("falcon-7b.json", "vocab_size"),
    ("bert-large-uncased.json", "type_vocab_size"),
])
def test_missing_field_named(fixture: str, field: str) -> None:
    config = _config(fixture)
    del config[field]
    with pytest.raises(SpecError, match=rf"^config\.json: {field}: missing"):
        spec_from_hf_config(config)


@pytest.mark.parametrize("fixture", ["mistral-7b-v0.1.json", "qwen2-0.5b.json", "gemma-2-2b.json"])
def test_absent_kv_heads_is_an_error_where_the_default_is_version_dependent(fixture: str) -> None:
    config = _config(fixture)
    del config["num_key_value_heads"]
    with pytest.raises(SpecError, match=r"^config\.json: num_key_value_heads: missing"):
        spec_from_hf_config(config)
    config["num_key_value_heads"] = None  # explicit null: transformers uses the head count
    _, spec = spec_from_hf_config(config)
    assert spec.kvh == spec.heads


def test_missing_aliased_field_names_the_aliases() -> None:
    config = _config("falcon-7b.json")
    del config["hidden_size"]
    with pytest.raises(SpecError, match=r"^config\.json: hidden_size: missing \(also looked for n_embed\)"):
        spec_from_hf_config(config)


@pytest.mark.parametrize(("field", "value"), [
    ("hidden_size", -4096),
    ("hidden_size", 0),
    ("num_hidden_layers", 32.5),
    ("intermediate_size", "11008"),
    ("vocab_size", True),
    ("num_key_value_heads", -8),
])
def test_bad_sizes_named(field: str, value: object) -> None:
    config = {**_config("llama-2-7b.json"), field: value}
    with pytest.raises(SpecError) as info:
        spec_from_hf_config(config, "llama/config.json")
    message = str(info.value)
    assert message.startswith(f"llama/config.json: {field}: ")
    assert repr(value) in message


def test_non_dividing_sizes_named() -> None:
    with pytest.raises(SpecError, match=r"^config\.json: num_key_value_heads: 5 does not divide"):
        spec_from_hf_config({**_config("mistral-7b-v0.1.json"), "num_key_value_heads": 5})
    with pytest.raises(SpecError, match=r"^config\.json: n_head: 7 does not divide n_embd 768"):
        spec_from_hf_config({**_config("gpt2.json"), "n_head": 7})
    with pytest.raises(SpecError, match=r"^config\.json: num_experts_per_tok: must be <= "):
        spec_from_hf_config({**_config("mixtral-8x7b-v0.1.json"), "num_experts_per_tok": 9})


def test_bad_flag_named() -> None:
    expected = r"^config\.json: tie_word_embeddings: must be true or false, got 'no'"
    with pytest.raises(SpecError, match=expected):
        spec_from_hf_config({**_config("qwen2-0.5b.json"), "tie_word_embeddings": "no"})


def test_not_an_object() -> None:
    with pytest.raises(SpecError, match=r"^x\.json: expected a JSON object, got list"):
        spec_from_hf_config([1, 2], "x.json")  # type: ignore[arg-type]


def test_unreadable_file_named(tmp_path: Path) -> None:
    missing = tmp_path / "absent" / "config.json"
    with pytest.raises(SpecError, match=rf"^{re.escape(str(missing))}: cannot read the file"):
        load_hf_config(missing)
    with pytest.raises(SpecError, match=rf"^{re.escape(str(tmp_path))}: cannot read the file"):
        load_hf_config(tmp_path)  # a directory
    binary = tmp_path / "config.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(SpecError, match=rf"^{re.escape(str(binary))}: cannot read the file"):
        load_hf_config(binary)


def test_invalid_json_named(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{"model_type": "llama", "hidden_size": 4096,', encoding="utf-8")
    with pytest.raises(SpecError, match=rf"^{re.escape(str(path))}: invalid JSON: "):
        load_hf_config(path)


def test_errors_name_the_loaded_path(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    config = _config("llama-2-7b.json")
    del config["vocab_size"]
    path.write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(SpecError, match=rf"^{re.escape(str(path))}: vocab_size: missing"):
        load_hf_config(path)


def test_input_not_mutated_and_reference_count_unchanged() -> None:
    config = _config("gemma-2-9b.json")
    before = copy.deepcopy(config)
    spec_from_hf_config(config)
    assert config == before
    assert TransformerSpec(hidden=4096, layers=32, heads=32, ffn=11008, vocab=32000).params() \
        == 6_738_415_616
