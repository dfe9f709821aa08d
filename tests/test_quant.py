"""Quantized checkpoints: quantization_config read into weight bytes, or refused.

Expected figures are computed here from each format's tensor list (shape, element size), written
out from the classes that hold a quantized Linear, independently of models/quant.py."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from models.errors import SpecError
from models.hf import load_hf_config, spec_from_hf_config
from models.layers import LayerDesc
from models.quant import QuantConfig, linear_bytes, parse_quantization_config
from solver import Workload, fingerprint, load_model
from solver.cli import main
from solver.hardware import footprints

DATA = Path(__file__).parent / "data" / "hf"

# A small Llama: hidden 256, 4 heads of 64 (2 KV heads), MLP 512, 2 blocks, vocab 1000, untied.
LLAMA = {"model_type": "llama", "hidden_size": 256, "intermediate_size": 512,
         "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
         "vocab_size": 1000, "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
# (in, out) of each block Linear: q, k, v, o, gate, up, down.
LLAMA_LINEARS = [(256, 256), (256, 128), (256, 128), (256, 256), (256, 512), (256, 512), (512, 256)]
# Embedding + untied head + final norm + two RMSNorms in each of the two blocks, in bf16.
LLAMA_FLOAT_BYTES = (1000 * 256 + 1000 * 256 + 256 + 2 * 2 * 256) * 2


def _tensors(*tensors: tuple[tuple[int, ...], int]) -> int:
    """Bytes of tensors given as (shape, element size)."""
    return sum(math.prod(shape) * size for shape, size in tensors)


# ----- each format's tensors for one nn.Linear(I, O), bias excepted ----------------------------

def awq_gemm(i: int, o: int, g: int = 128) -> int:
    # AutoAWQ WQLinear_GEMM: qweight int32 (I, O/8), qzeros int32 (I/g, O/8), scales fp16 (I/g, O)
    return _tensors(((i, o // 8), 4), ((i // g, o // 8), 4), ((i // g, o), 2))


def awq_gemv(i: int, o: int, g: int = 128) -> int:
    # AutoAWQ WQLinear_GEMV: qweight int32 (O, I/8), qzeros int32 (O, w), scales fp16 (O, 8w),
    # w = calculate_zeros_width(I, g): ceil(I/g / 8), rounded up to a multiple of 1 (g >= 128),
    # 2 (g 64) or 4 (g 32)
    mult = 1 if g >= 128 else {64: 2, 32: 4}[g]
    w = math.ceil(math.ceil((i // g) / 8) / mult) * mult
    return _tensors(((o, i // 8), 4), ((o, w), 4), ((o, w * 8), 2))


def gptq(i: int, o: int, bits: int, g: int | None) -> int:
    # AutoGPTQ QuantLinear: qweight int32 (I/32*bits, O), qzeros int32 (ceil(I/g), O/32*bits),
    # scales fp16 (ceil(I/g), O), g_idx int32 (I); g -1 (None here) is I
    groups = -(-i // (g or i))
    return _tensors(((i // 32 * bits, o), 4), ((groups, o // 32 * bits), 4), ((groups, o), 2),
                    ((i,), 4))


def bnb8(i: int, o: int) -> int:
    # Linear8bitLt state dict: weight int8 (O, I), SCB float32 (O,), weight_format uint8 ()
    return _tensors(((o, i), 1), ((o,), 4), ((), 1))


def bnb4_tensors(i: int, o: int, nested: bool) -> int:
    # Linear4bit: weight uint8 ((O*I+1)//2, 1), quant_map float32 (16,); absmax float32
    # (ceil(O*I/64),), or nested: absmax uint8 (ceil(O*I/64),), nested_absmax float32
    # (ceil(blocks/256),), nested_quant_map float32 (256,)
    n = o * i
    blocks = -(-n // 64)
    tensors = [(((n + 1) // 2, 1), 1), ((16,), 4)]
    if nested:
        tensors += [((blocks,), 1), ((-(-blocks // 256),), 4), ((256,), 4)]
    else:
        tensors.append(((blocks,), 4))
    return _tensors(*tensors)


def bnb4_blob(i: int, o: int, quant_type: str, nested: bool) -> int:
    # ... and quant_state.bitsandbytes__<type>: the JSON of the non-tensor state as uint8, its
    # dtype name and offset repr taken at their longest
    blob = (f'{{"quant_type": "{quant_type}", "blocksize": 64, "dtype": "bfloat16", '
            f'"shape": [{o}, {i}]')
    if nested:
        blob += ', "nested_blocksize": 256, "nested_dtype": "float32", ' \
                '"nested_offset": -2.2250738585072014e-308'
    return len(blob + "}")


def bnb4(i: int, o: int, quant_type: str, nested: bool) -> int:
    return bnb4_tensors(i, o, nested) + bnb4_blob(i, o, quant_type, nested)


def fp8(i: int, o: int, block: tuple[int, int] | None = (128, 128), scale_size: int = 4,
        static: bool = False) -> int:
    # transformers FP8Linear: weight float8_e4m3fn (O, I), weight_scale_inv (ceil(O/b0),
    # ceil(I/b1)) float32 (ue8m0: 1 byte) or a float32 scalar; static: activation_scale scalar
    scales = ((), 4) if block is None else ((-(-o // block[0]), -(-i // block[1])), scale_size)
    return _tensors(((o, i), 1), scales) + (4 if static else 0)


def _write(tmp_path: Path, config: dict, name: str = "config.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


def _inspect(capsys, path: Path, *extra: str) -> dict:
    assert main(["inspect", str(path), "--json", "--dtype", "bf16", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def _refused(capsys, path: Path) -> str:
    assert main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if not line.startswith("cachepart: warning")]
    assert "Traceback" not in err and len(lines) == 1, err
    return lines[0]


# ----- weight bytes per method -------------------------------------------------------------------

def test_a_literal_linear_per_format() -> None:
    # q_proj, 256 -> 256, written out number by number
    awq = QuantConfig("awq", 4, group_size=128, awq_version="gemm")
    assert linear_bytes(awq, 256, 256) == 256 * 32 * 4 + 2 * 32 * 4 + 2 * 256 * 2 == 34_048
    gq = QuantConfig("gptq", 4, group_size=128)
    assert linear_bytes(gq, 256, 256) == 32 * 256 * 4 + 2 * 32 * 4 + 2 * 256 * 2 + 256 * 4 == 35_072
    assert linear_bytes(QuantConfig("bitsandbytes", 8), 256, 256) == 65_536 + 1_024 + 1 == 66_561
    assert linear_bytes(QuantConfig("fp8", 8, fp8_block=(128, 128)), 256, 256) == 65_536 + 16


METHODS = {
    "awq-gemm": ({"quant_method": "awq", "bits": 4, "group_size": 128, "version": "gemm",
                  "zero_point": True, "modules_to_not_convert": None}, awq_gemm),
    "awq-gemv-g64": ({"quant_method": "awq", "bits": 4, "group_size": 64, "version": "GEMV",
                      "zero_point": True, "backend": "autoawq"}, lambda i, o: awq_gemv(i, o, 64)),
    "gptq-4bit-act-order": ({"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": True,
                             "sym": True, "true_sequential": True, "damp_percent": 0.01,
                             "model_name_or_path": None, "model_file_base_name": "model"},
                            lambda i, o: gptq(i, o, 4, 128)),
    "gptq-3bit-per-column": ({"quant_method": "gptq", "bits": 3, "group_size": -1,
                              "desc_act": False, "checkpoint_format": "gptq"},
                             lambda i, o: gptq(i, o, 3, None)),
    "gptq-8bit-gptqmodel": ({"quant_method": "gptq", "bits": 8, "group_size": 32,
                             "checkpoint_format": "gptq_v2", "pack_dtype": "int32",
                             "lm_head": False, "dynamic": None, "meta": {"quantizer": ["x"]}},
                            lambda i, o: gptq(i, o, 8, 32)),
    "bnb-int8": ({"quant_method": "bitsandbytes", "load_in_8bit": True, "_load_in_8bit": True,
                  "load_in_4bit": False, "llm_int8_threshold": 6.0,
                  "llm_int8_skip_modules": None}, bnb8),
    "bnb-nf4-double": ({"quant_method": "bitsandbytes", "load_in_4bit": True,
                        "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True,
                        "bnb_4bit_compute_dtype": "bfloat16", "bnb_4bit_quant_storage": "uint8"},
                       lambda i, o: bnb4(i, o, "nf4", True)),
    "bnb-fp4": ({"load_in_4bit": True}, lambda i, o: bnb4(i, o, "fp4", False)),  # no quant_method
    "fp8-blocks": ({"quant_method": "fp8", "activation_scheme": "dynamic", "fmt": "e4m3",
                    "weight_block_size": [128, 128]}, fp8),
    "fp8-per-tensor-static": ({"quant_method": "fp8", "activation_scheme": "static",
                               "weight_block_size": None},
                              lambda i, o: fp8(i, o, None, static=True)),
    "fp8-ue8m0": ({"quant_method": "fp8", "weight_block_size": [64, 96], "scale_fmt": "ue8m0"},
                  lambda i, o: fp8(i, o, (64, 96), 1)),
}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_inspect_weight_bytes_equal_the_format(tmp_path: Path, capsys, method: str) -> None:
    qc, per_linear = METHODS[method]
    path = _write(tmp_path, {**LLAMA, "quantization_config": qc})
    doc = _inspect(capsys, path)
    expected = LLAMA_FLOAT_BYTES + 2 * sum(per_linear(i, o) for i, o in LLAMA_LINEARS)
    assert doc["weight_bytes"] == expected
    assert doc["params"] == load_hf_config(_write(tmp_path, LLAMA, "plain.json"))[1].params()
    # op granularity: the same total, split between attention and MLP
    ops = _inspect(capsys, path, "--granularity", "op")
    assert ops["weight_bytes"] == expected
    by_name = {row["name"]: row["weight_bytes"] for row in ops["layers"]}
    assert by_name["block1.attn"] == sum(per_linear(i, o) for i, o in LLAMA_LINEARS[:4])
    assert by_name["block1.mlp"] == sum(per_linear(i, o) for i, o in LLAMA_LINEARS[4:])
    assert by_name["block1.attn_norm"] == 256 * 2


def test_biases_and_a_fused_qkv_stay_exact(tmp_path: Path, capsys) -> None:
    # Falcon (old architecture, multi-query): one query_key_value Linear 256 -> 256 + 2 x 64,
    # so GPTQ stores one g_idx for it, not three; the biases stay bf16.
    falcon = {"model_type": "falcon", "hidden_size": 256, "num_attention_heads": 4,
              "num_hidden_layers": 2, "vocab_size": 1000, "bias": True, "multi_query": True,
              "parallel_attn": True, "new_decoder_architecture": False,
              "quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": 128}}
    doc = _inspect(capsys, _write(tmp_path, falcon))
    linears = [(256, 384), (256, 256), (256, 1024), (1024, 256)]
    biases = 384 + 256 + 1024 + 256
    norm = 2 * 256  # one LayerNorm (weight + bias) per parallel block, and the final one
    float_bytes = (1000 * 256 + 2 * (biases + norm) + norm) * 2  # tied head: the embedding
    tied_copy = 1000 * 256 * 2  # the head's device stores its own copy of the embedding
    blocks = 2 * sum(gptq(i, o, 4, 128) for i, o in linears)
    assert doc["weight_bytes"] == float_bytes + tied_copy + blocks


def test_a_quantized_llama_7b_is_about_a_quarter_or_half_of_bf16(capsys) -> None:
    base = json.loads((DATA / "llama-2-7b.json").read_text(encoding="utf-8"))
    _, spec = spec_from_hf_config(base)
    total = spec.params()
    quantized = 32 * (4 * 4096 * 4096 + 3 * 4096 * 11008)  # every block Linear weight
    bf16 = total * 2
    for method, (qc, _) in METHODS.items():
        _, qspec = spec_from_hf_config({**base, "quantization_config": qc})
        layers = qspec.layer_descs()
        assert sum(layer.quantized_params for layer in layers) == quantized
        weight = sum(f.weight_bytes for f in footprints(layers, Workload()))
        bits = 8 if "8" in method else (3 if "3bit" in method else 4)
        ideal = (quantized * bits / 8 + (total - quantized) * 2) / bf16
        # scales, zeros and indices (group 32 at most here) cost under 1/8 byte a weight more
        assert ideal < weight / bf16 < ideal + quantized / 8 / bf16, (method, weight / bf16, ideal)


# ----- which modules ----------------------------------------------------------------------------

MIXTRAL = {"model_type": "mixtral", "hidden_size": 256, "intermediate_size": 512,
           "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
           "num_local_experts": 8, "num_experts_per_tok": 2, "vocab_size": 1000,
           "tie_word_embeddings": False}
MIXTRAL_FLOAT = (1000 * 256 * 2 + 256 + 2 * 2 * 256) * 2
MIXTRAL_ATTN = [(256, 256), (256, 128), (256, 128), (256, 256)]
MIXTRAL_EXPERTS = 8 * [(256, 512), (256, 512), (512, 256)]  # w1, w3, w2 of each expert
ROUTER = (256, 8)


def test_mixtral_router_left_unquantized_by_name(tmp_path: Path, capsys) -> None:
    awq = {"quant_method": "awq", "bits": 4, "group_size": 128, "version": "gemm",
           "zero_point": True}
    per_block = sum(awq_gemm(i, o) for i, o in MIXTRAL_ATTN + MIXTRAL_EXPERTS)
    skipped = _inspect(capsys, _write(tmp_path, {
        **MIXTRAL, "quantization_config": {**awq, "modules_to_not_convert": ["gate"]}}))
    assert skipped["weight_bytes"] == MIXTRAL_FLOAT + 2 * (per_block + 256 * 8 * 2)
    # transformers 5 calls the router mlp.gate: the same module
    renamed = _inspect(capsys, _write(tmp_path, {
        **MIXTRAL, "quantization_config": {**awq, "modules_to_not_convert": ["mlp.gate"]}}))
    assert renamed["weight_bytes"] == skipped["weight_bytes"]
    # without the skip AutoAWQ packs the router too (8 outputs: one int32 per input row)
    packed = _inspect(capsys, _write(tmp_path, {**MIXTRAL, "quantization_config": awq}))
    assert packed["weight_bytes"] == MIXTRAL_FLOAT + 2 * (per_block + awq_gemm(*ROUTER))
    # GPTQ with TheBloke-style modules_in_block_to_quantize: attention and experts only
    inside = [["self_attn.k_proj", "self_attn.v_proj", "self_attn.q_proj"], ["self_attn.o_proj"],
              [f"block_sparse_moe.experts.{e}.w{n}" for e in range(8) for n in (1, 3)],
              [f"block_sparse_moe.experts.{e}.w2" for e in range(8)]]
    gq = _inspect(capsys, _write(tmp_path, {**MIXTRAL, "quantization_config": {
        "quant_method": "gptq", "bits": 4, "group_size": 128, "modules_in_block_to_quantize": inside}}))
    per_block = sum(gptq(i, o, 4, 128) for i, o in MIXTRAL_ATTN + MIXTRAL_EXPERTS)
    assert gq["weight_bytes"] == MIXTRAL_FLOAT + 2 * (per_block + 256 * 8 * 2)


def test_skip_lists_reach_single_blocks_and_the_head(tmp_path: Path, capsys) -> None:
    awq = {"quant_method": "awq", "bits": 4, "group_size": 128, "version": "gemm",
           "modules_to_not_convert": ["model.layers.1.mlp"]}
    doc = _inspect(capsys, _write(tmp_path, {**LLAMA, "quantization_config": awq}),
                   "--granularity", "op")
    rows = {row["name"]: row["weight_bytes"] for row in doc["layers"]}
    assert rows["block0.mlp"] == sum(awq_gemm(i, o) for i, o in LLAMA_LINEARS[4:])
    assert rows["block1.mlp"] == 3 * 256 * 512 * 2  # left in bf16
    assert rows["block1.attn"] == sum(awq_gemm(i, o) for i, o in LLAMA_LINEARS[:4])
    # An explicit bitsandbytes skip list replaces transformers' default one, so the untied
    # LM head is converted too unless the list names it.
    bnb = {"quant_method": "bitsandbytes", "load_in_8bit": True,
           "llm_int8_skip_modules": ["mlp.down_proj"]}
    doc = _inspect(capsys, _write(tmp_path, {**LLAMA, "quantization_config": bnb}))
    head = next(row for row in doc["layers"] if row["name"] == "head")
    assert head["weight_bytes"] == 256 * 2 + bnb8(256, 1000)
    down = 512 * 256 * 2
    block = sum(bnb8(i, o) for i, o in LLAMA_LINEARS[:6]) + down + 2 * 256 * 2
    assert doc["weight_bytes"] == 1000 * 256 * 2 + 256 * 2 + bnb8(256, 1000) + 2 * block
    named = _inspect(capsys, _write(tmp_path, {**LLAMA, "quantization_config": {
        **bnb, "llm_int8_skip_modules": ["mlp.down_proj", "lm_head"]}}))
    assert named["weight_bytes"] == doc["weight_bytes"] - bnb8(256, 1000) + 1000 * 256 * 2


# ----- refusals ---------------------------------------------------------------------------------

AWQ = {"quant_method": "awq", "bits": 4, "group_size": 128, "version": "gemm", "zero_point": True}
GPTQ = {"quant_method": "gptq", "bits": 4, "group_size": 128}
BNB4 = {"quant_method": "bitsandbytes", "load_in_4bit": True}
FP8 = {"quant_method": "fp8", "weight_block_size": [128, 128]}


@pytest.mark.parametrize(("base", "qc", "message"), [
    (LLAMA, {"quant_method": "hqq", "nbits": 4},
     "quantization_config.quant_method 'hqq' is not supported (supported: awq, gptq, "
     "bitsandbytes, fp8)"),
    (LLAMA, {"bits": 4}, "quantization_config.quant_method: missing"),
    (LLAMA, "awq", "quantization_config: expected a JSON object, got str"),
    (LLAMA, {**AWQ, "bits": 8}, "quantization_config.bits: 8 is not supported for awq"),
    (LLAMA, {**AWQ, "version": "gemv_fast"}, "quantization_config.version: 'gemv_fast'"),
    (LLAMA, {**AWQ, "zero_point": False}, "quantization_config.zero_point: False"),
    (LLAMA, {**AWQ, "group_size": 96}, "quantization_config.group_size: 96 does not divide"),
    (LLAMA, {**AWQ, "version": "gemv", "group_size": 16},
     "quantization_config.group_size: 16 is not supported by the gemv packing"),
    (LLAMA, {**GPTQ, "bits": 5}, "quantization_config.bits: 5 is not supported for gptq"),
    (LLAMA, {**GPTQ, "bits": "4"}, "quantization_config.bits: must be a whole number, got '4'"),
    (LLAMA, {**GPTQ, "bits": None}, "quantization_config.bits: missing"),
    (LLAMA, {**GPTQ, "group_size": 0}, "quantization_config.group_size: must be -1"),
    (LLAMA, {**GPTQ, "checkpoint_format": "marlin"},
     "quantization_config.checkpoint_format: 'marlin'"),
    (LLAMA, {**GPTQ, "is_marlin_format": True}, "quantization_config.is_marlin_format: True"),
    (LLAMA, {**GPTQ, "dynamic": {"-:.*mlp": {}}}, "quantization_config.dynamic: {'-:.*mlp': {}}"),
    (LLAMA, {**GPTQ, "pack_dtype": "int16"}, "quantization_config.pack_dtype: 'int16'"),
    (LLAMA, {**GPTQ, "adapter": {"name": "lora"}}, "quantization_config.adapter: {'name': 'lora'}"),
    (LLAMA, {**GPTQ, "modules_in_block_to_quantize": ["q_proj"]},
     "quantization_config.modules_in_block_to_quantize: must be a list of lists"),
    (LLAMA, {**GPTQ, "lm_head": True, "vocab_size": 1000},
     "quantization_config.vocab_size: 1000 is a gptq setting"),
    (LLAMA, {"quant_method": "bitsandbytes", "load_in_8bit": False},
     "quantization_config.load_in_4bit: False with load_in_8bit False"),
    (LLAMA, {**BNB4, "load_in_8bit": True}, "quantization_config.load_in_4bit: True with "
                                            "load_in_8bit True"),
    (LLAMA, {**BNB4, "_load_in_4bit": False}, "quantization_config.load_in_4bit: True disagrees"),
    (LLAMA, {**BNB4, "bnb_4bit_quant_type": "int4"},
     "quantization_config.bnb_4bit_quant_type: 'int4' is not supported for bitsandbytes"),
    (LLAMA, {**BNB4, "llm_int8_has_fp16_weight": True},
     "quantization_config.llm_int8_has_fp16_weight: True"),
    (LLAMA, {**BNB4, "llm_int8_skip_modules": "lm_head"},
     "quantization_config.llm_int8_skip_modules: must be a list of module names"),
    (LLAMA, {**BNB4, "llm_int8_skip_modules": ["(unclosed"]},
     "quantization_config.llm_int8_skip_modules: '(unclosed' is not a valid pattern"),
    (LLAMA, {**FP8, "fmt": "e5m2"}, "quantization_config.fmt: 'e5m2'"),
    (LLAMA, {**FP8, "expert_dtype": "fp4"}, "quantization_config.expert_dtype: 'fp4'"),
    (LLAMA, {**FP8, "weight_block_size": [128]},
     "quantization_config.weight_block_size: must be two positive whole numbers"),
    (LLAMA, {**FP8, "dequantize": True}, "quantization_config.dequantize: True"),
    (LLAMA, {**FP8, "modules_to_convert": ["embed_tokens"]},
     "quantization_config.modules_to_convert: ['embed_tokens']"),
    (LLAMA, {**FP8, "activation_scheme": "tensor"}, "quantization_config.activation_scheme: 'tensor'"),
    ({**LLAMA, "tie_word_embeddings": True}, {**BNB4, "llm_int8_skip_modules": ["mlp.gate_proj"]},
     "quantization_config.llm_int8_skip_modules: the LM head would be quantized, but this model "
     "ties it"),
    (MIXTRAL, BNB4, "quantization_config.quant_method 'bitsandbytes' is not modelled for mixtral"),
    (MIXTRAL, FP8, "quantization_config.quant_method 'fp8' is not modelled for mixtral"),
    (MIXTRAL, GPTQ, "quantization_config.bits: gptq packs 32 values into 4 int32 words; "
                    "out_features 8 is not a multiple of 32 (the router Linear, 256 -> 8 features)"),
    (MIXTRAL, {**AWQ, "modules_to_not_convert": ["experts.0.w1"]},
     "quantization_config.modules_to_not_convert: quantizes some experts of block 0"),
    ({"model_type": "gpt2", "n_embd": 256, "n_head": 4, "n_layer": 2, "n_positions": 64,
      "vocab_size": 1000}, AWQ, "quantization_config: quantized gpt2 checkpoints are not modelled"),
    ({"model_type": "bert", "hidden_size": 256, "num_attention_heads": 4, "num_hidden_layers": 2,
      "intermediate_size": 512, "vocab_size": 1000, "max_position_embeddings": 64,
      "type_vocab_size": 2}, FP8, "quantization_config: quantized bert checkpoints"),
])
def test_refusals_are_one_line_naming_the_field(tmp_path: Path, capsys, base: dict, qc: object,
                                                 message: str) -> None:
    line = _refused(capsys, _write(tmp_path, {**base, "quantization_config": qc}))
    assert message in line, line
    assert "config.json" in line


def test_falcon_fp8_is_refused_and_gptq_is_not() -> None:
    falcon = json.loads((DATA / "falcon-7b.json").read_text(encoding="utf-8"))
    with pytest.raises(SpecError, match=r"quant_method 'fp8' is not modelled for falcon"):
        spec_from_hf_config({**falcon, "quantization_config": FP8})
    # falcon-7b's fused QKV is 4544 -> 4544 + 2 x 64 = 4672: 32 divides both
    _, spec = spec_from_hf_config({**falcon, "quantization_config": GPTQ})
    assert spec.fused_qkv and spec.block_linears()[0] == ("qkv", 4544, 4672, 1)


# ----- nothing changes without quantization ----------------------------------------------------

@pytest.mark.parametrize("fixture", sorted(p.name for p in DATA.glob("*.json")))
def test_a_spec_without_quantization_is_unchanged(fixture: str) -> None:
    config = json.loads((DATA / fixture).read_text(encoding="utf-8"))
    _, spec = spec_from_hf_config(config)
    assert spec.quantization is None
    assert spec_from_hf_config({**config, "quantization_config": None})[1] == spec
    for granularity in ("block", "op"):
        layers = spec.layer_descs(granularity)  # type: ignore[arg-type]
        assert all(layer.quantized_params == layer.quantized_bytes == 0 for layer in layers)
        for wl in (Workload(), Workload(weight_dtype="int4", phase="decode", batch=3)):
            wb = {"bf16": 2, "int4": 0.5}[wl.weight_dtype]
            for layer, fp in zip(layers, footprints(layers, wl), strict=True):
                assert fp.weight_bytes == math.ceil(layer.weight_params * wb)


def test_quantization_is_part_of_the_spec_and_the_fingerprint(tmp_path: Path) -> None:
    plain = _write(tmp_path, LLAMA, "plain.json")
    quantized = _write(tmp_path, {**LLAMA, "quantization_config": METHODS["awq-gemm"][0]})
    a, b = load_hf_config(plain)[1], load_hf_config(quantized)[1]
    assert a != b and a.params() == b.params()
    assert b.quantization == QuantConfig("awq", 4, group_size=128, awq_version="gemm")
    assert fingerprint(load_model(str(plain)).graph) != fingerprint(load_model(str(quantized)).graph)


# ----- the typed values -------------------------------------------------------------------------

def test_quant_config_is_validated_and_frozen() -> None:
    with pytest.raises(SpecError, match=r"^quantization\.bits: awq stores 4 bits, got 8$"):
        QuantConfig("awq", 8, awq_version="gemm")
    with pytest.raises(SpecError, match=r"quantization\.method: expected one of"):
        QuantConfig("hqq", 4)  # type: ignore[arg-type]
    with pytest.raises(SpecError, match=r"quantization\.float_modules"):
        QuantConfig("fp8", 8, float_modules=frozenset({(0, "attn")}))  # type: ignore[arg-type]
    config = parse_quantization_config(METHODS["fp8-blocks"][0])
    assert config == QuantConfig("fp8", 8, fp8_block=(128, 128))
    with pytest.raises(AttributeError):
        config.bits = 4  # type: ignore[misc]
    # a float module the model does not have is refused by the spec
    _, spec = spec_from_hf_config({**LLAMA, "quantization_config": METHODS["fp8-blocks"][0]})
    wrong = dataclasses.replace(config, float_modules=frozenset({(0, "router")}))
    with pytest.raises(SpecError, match=r"\(0, 'router'\) is not a Linear of this model"):
        dataclasses.replace(spec, quantization=wrong)


def test_layer_desc_quantized_fields_are_checked() -> None:
    with pytest.raises(SpecError, match=r"quantized_params 20"):
        LayerDesc("x", "block", 10, quantized_params=20, quantized_bytes=5)
    with pytest.raises(SpecError, match=r"both be 0 or both positive"):
        LayerDesc("x", "block", 10, quantized_params=5)
    layer = LayerDesc("x", "block", 10, quantized_params=8, quantized_bytes=5)
    assert footprints([layer], Workload())[0].weight_bytes == 2 * 2 + 5


# ----- against the real modules -----------------------------------------------------------------

def test_fp8_against_transformers_fp8linear_and_a_converted_llama() -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from transformers import FineGrainedFP8Config, LlamaConfig, LlamaForCausalLM
    from transformers.integrations.finegrained_fp8 import FP8Linear
    from transformers.quantizers.auto import AutoHfQuantizer

    for i, o in ((320, 200), (4096, 1024), (100, 30)):
        for block, fmt, scheme in (((128, 128), "float", "dynamic"), (None, "float", "static"),
                                   ((64, 96), "ue8m0", "dynamic")):
            module = FP8Linear(i, o, block_size=block, scale_fmt=fmt, activation_scheme=scheme,
                               has_bias=True)
            real = sum(t.numel() * t.element_size() for k, t in module.state_dict().items()
                       if k != "bias")
            ours = QuantConfig("fp8", 8, fp8_block=block, fp8_scale_bytes=1 if fmt == "ue8m0" else 4,
                               static_activation=scheme == "static")
            assert linear_bytes(ours, i, o) == real
    # A whole model converted as transformers loads an fp8 checkpoint (on the meta device):
    # which modules it converts and what they hold, against the spec's total.
    arch = dict(hidden_size=320, intermediate_size=640, num_hidden_layers=2, num_attention_heads=5,
                num_key_value_heads=1, vocab_size=1000, tie_word_embeddings=False)
    for settings in ({}, {"modules_to_not_convert": ["mlp.down_proj"]}):
        qc = FineGrainedFP8Config(**settings)
        with torch.device("meta"):
            model = LlamaForCausalLM(LlamaConfig(**arch)).to(torch.bfloat16)
        AutoHfQuantizer.from_config(qc, pre_quantized=True).preprocess_model(model, dtype=torch.bfloat16)
        real = sum(t.numel() * t.element_size() for t in model.state_dict().values())
        config = {"model_type": "llama", **arch,
                  "quantization_config": json.loads(json.dumps(qc.to_dict(), default=str))}
        layers = spec_from_hf_config(config)[1].layer_descs()
        assert sum(f.weight_bytes for f in footprints(layers, Workload())) == real


def test_bitsandbytes_against_its_modules() -> None:
    torch = pytest.importorskip("torch")
    bnb = pytest.importorskip("bitsandbytes")
    for i, o in ((320, 96), (256, 1000)):
        module = bnb.nn.Linear8bitLt(i, o, bias=True, has_fp16_weights=False)
        module.weight = bnb.nn.Int8Params(torch.randn(o, i, dtype=torch.float16),
                                          requires_grad=False, has_fp16_weights=False)
        state = module.to("cpu").state_dict()
        real = sum(t.numel() * t.element_size() for k, t in state.items() if k != "bias")
        assert linear_bytes(QuantConfig("bitsandbytes", 8), i, o) == real
        for quant_type in ("nf4", "fp4"):
            for nested in (False, True):
                module = bnb.nn.Linear4bit(i, o, bias=True, quant_type=quant_type,
                                           compress_statistics=nested)
                module.weight = bnb.nn.Params4bit(torch.randn(o, i, dtype=torch.bfloat16),
                                                  requires_grad=False, quant_type=quant_type,
                                                  compress_statistics=nested)
                state = module.to("cpu").state_dict()
                sizes = {k: t.numel() * t.element_size() for k, t in state.items() if k != "bias"}
                blob = sizes.pop(f"weight.quant_state.bitsandbytes__{quant_type}")
                ours = linear_bytes(QuantConfig("bitsandbytes", 4, bnb_quant_type=quant_type,
                                                double_quant=nested), i, o)
                # every tensor exact; the JSON of the quant state at most its longest form
                assert sum(sizes.values()) == bnb4_tensors(i, o, nested)
                assert ours == bnb4(i, o, quant_type, nested)
                assert blob <= bnb4_blob(i, o, quant_type, nested) <= blob + 24
