"""Quantized checkpoints: a Hugging Face ``quantization_config`` as a typed value, and the bytes
a quantized ``nn.Linear`` stores.

Four formats are modelled, each by the buffers of the class that holds one quantized Linear
(``linear_bytes`` cites them):

- ``awq``: AutoAWQ's WQLinear_GEMM / WQLinear_GEMV (4-bit, zero point, group scales);
- ``gptq``: AutoGPTQ's QuantLinear, which GPTQModel and optimum load (2/3/4/8-bit, g_idx);
- ``bitsandbytes``: Linear8bitLt (LLM.int8) and Linear4bit (nf4/fp4, double quantization);
- ``fp8``: transformers' FP8Linear (FineGrainedFP8Config: e4m3 weights, a scale per block).

Any other method, or a setting of these that changes the stored tensors in a way not modelled
(AWQ bits other than 4, GPTQ's marlin format, bitsandbytes' fp16 main weights, FP8 experts in
fp4, ...), raises :class:`SpecError` naming ``quantization_config.<field>`` and the value:
a quantized model is counted exactly or refused, never as if its weights were bf16.

Which Linear layers are quantized is a model's business: the import (models/hf.py) resolves the
config's skip lists against the family's module names with :func:`resolve_modules`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, NoReturn, get_args

from .errors import SpecError

__all__ = [
    "METHODS",
    "ROLES",
    "Method",
    "QuantConfig",
    "Role",
    "linear_bytes",
    "parse_quantization_config",
    "resolve_modules",
]

Method = Literal["awq", "gptq", "bitsandbytes", "fp8"]
METHODS: tuple[str, ...] = get_args(Method)

Role = Literal["q", "k", "v", "qkv", "o", "gate", "up", "down", "router",
               "expert_gate", "expert_up", "expert_down"]
"""A decoder block's Linear layers by what they do (``qkv``: a fused Q/K/V projection)."""
ROLES: tuple[str, ...] = get_args(Role)

_FIELD = "quantization_config"
_GPTQ_BITS = (2, 3, 4, 8)  # AutoGPTQ QuantLinear: "Only 2,3,4,8 bits are supported."
_BNB4_BLOCK = 64  # Params4bit / quantize_4bit default blocksize on CUDA and CPU
_BNB4_NESTED_BLOCK = 256  # quantize_4bit(compress_statistics=True) -> quantize_blockwise(blocksize=256)
_STORAGE_BYTES = {"uint8": 1, "int8": 1, "float16": 2, "bfloat16": 2, "float32": 4}


@dataclass(frozen=True)
class QuantConfig:
    """A checkpoint's quantization, as far as it decides what is stored."""

    method: Method
    bits: int
    """Bits per quantized weight (4 or 8 for bitsandbytes, 8 for fp8)."""
    group_size: int | None = None
    """awq, gptq: input features sharing one scale and zero point; None: the whole input (-1)."""
    awq_version: Literal["gemm", "gemv"] | None = None
    """awq: the packing (``version``/``format``)."""
    desc_act: bool = False
    """gptq: act-order; it changes g_idx's values, not what is stored."""
    bnb_quant_type: Literal["nf4", "fp4"] | None = None
    """bitsandbytes 4-bit: the data type (None for 8-bit)."""
    double_quant: bool = False
    """bitsandbytes 4-bit: absmax quantized again to uint8 (``bnb_4bit_use_double_quant``)."""
    quant_storage: str = "uint8"
    """bitsandbytes 4-bit: the dtype the packed nibbles are stored in."""
    fp8_block: tuple[int, int] | None = None
    """fp8: (output rows, input columns) sharing one scale; None: one scale per tensor."""
    fp8_scale_bytes: int = 4
    """fp8: 4 for float32 scales (``scale_fmt`` float), 1 for ue8m0."""
    static_activation: bool = False
    """fp8: ``activation_scheme`` static stores one float32 activation scale per Linear."""
    skip_modules: tuple[str, ...] | None = None
    """``modules_to_not_convert`` / ``llm_int8_skip_modules`` as given; None when absent, so the
    method's default skips (the LM head) apply."""
    only_modules: tuple[str, ...] | None = None
    """gptq: ``modules_in_block_to_quantize`` flattened; None: every Linear of a block."""
    float_modules: frozenset[tuple[int, Role]] = field(default_factory=frozenset)
    """(block index, role) of the block Linear layers left in the float dtype; filled by
    :func:`resolve_modules`, which knows the family's module names."""
    head: bool = False
    """The (untied) LM head is quantized too: GPTQModel's ``lm_head``, or a bitsandbytes/fp8
    skip list that does not name it."""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise SpecError(f"quantization.method: expected one of {', '.join(METHODS)}, "
                            f"got {self.method!r}")
        allowed = {"awq": (4,), "gptq": _GPTQ_BITS, "bitsandbytes": (4, 8), "fp8": (8,)}[self.method]
        if isinstance(self.bits, bool) or self.bits not in allowed:
            raise SpecError(f"quantization.bits: {self.method} stores "
                            f"{', '.join(map(str, allowed))} bits, got {self.bits!r}")
        gs = self.group_size
        if gs is not None and (isinstance(gs, bool) or not isinstance(gs, int) or gs <= 0):
            raise SpecError(f"quantization.group_size: must be a positive whole number or None, "
                            f"got {gs!r}")
        if self.method == "awq" and self.awq_version not in ("gemm", "gemv"):
            raise SpecError(f"quantization.awq_version: expected gemm or gemv, got {self.awq_version!r}")
        if self.method == "bitsandbytes" and self.bits == 4:
            if self.bnb_quant_type not in ("nf4", "fp4"):
                raise SpecError(f"quantization.bnb_quant_type: expected nf4 or fp4, "
                                f"got {self.bnb_quant_type!r}")
            if self.quant_storage not in _STORAGE_BYTES:
                raise SpecError(f"quantization.quant_storage: expected one of "
                                f"{', '.join(_STORAGE_BYTES)}, got {self.quant_storage!r}")
        block = self.fp8_block
        if block is not None and (not isinstance(block, tuple) or len(block) != 2 or any(
                isinstance(b, bool) or not isinstance(b, int) or b <= 0 for b in block)):
            raise SpecError(f"quantization.fp8_block: expected two positive whole numbers or None, "
                            f"got {block!r}")
        if self.fp8_scale_bytes not in (1, 4):
            raise SpecError(f"quantization.fp8_scale_bytes: expected 1 or 4, got {self.fp8_scale_bytes!r}")
        for index, role in self.float_modules:
            if isinstance(index, bool) or not isinstance(index, int) or index < 0 or role not in ROLES:
                raise SpecError(f"quantization.float_modules: expected (block index, role) pairs "
                                f"with a role of {', '.join(ROLES)}, got {(index, role)!r}")


    def label(self) -> str:
        """One line for people: 'awq 4-bit gemm, groups of 128'."""
        parts = [f"{self.method} {self.bits}-bit"]
        if self.awq_version:
            parts[0] += f" {self.awq_version}"
        if self.bnb_quant_type:
            parts[0] += f" {self.bnb_quant_type}" + (" double-quant" if self.double_quant else "")
        if self.method in ("awq", "gptq"):
            parts.append(f"groups of {self.group_size}" if self.group_size else "one group")
        if self.fp8_block:
            parts.append(f"blocks of {self.fp8_block[0]}x{self.fp8_block[1]}")
        return ", ".join(parts)
    def quantizes(self, block: int, role: Role) -> bool:
        return (block, role) not in self.float_modules


# ----- bytes of one quantized Linear ------------------------------------------------------------

def _shape_error(fld: str, message: str) -> NoReturn:
    raise SpecError(f"{_FIELD}.{fld}: {message}")


def _bnb4_state_blob(config: QuantConfig, i: int, o: int) -> int:
    """Bytes of ``weight.quant_state.bitsandbytes__<type>``: QuantState.as_dict(packed=True)
    stores its non-tensor fields as the uint8 bytes of their JSON (bitsandbytes.utils.
    pack_dict_to_tensor). Two of them vary: the weight dtype's name and, double quantized, the
    float repr of the absmax mean (``nested_offset``). Both are counted at their longest
    ("bfloat16", 24 characters), so this term is an upper bound, a few bytes over at most."""
    doc: dict[str, Any] = {"quant_type": config.bnb_quant_type, "blocksize": _BNB4_BLOCK,
                           "dtype": "bfloat16", "shape": [o, i]}
    if config.double_quant:
        doc.update(nested_blocksize=_BNB4_NESTED_BLOCK, nested_dtype="float32",
                   nested_offset=-2.2250738585072014e-308)
    return len(json.dumps(doc).encode("utf-8"))


def linear_bytes(config: QuantConfig, in_features: int, out_features: int) -> int:
    """Bytes a checkpoint stores for the weight of one quantized ``nn.Linear(in_features,
    out_features)``: every tensor the format keeps for it except the bias, which stays in the
    model's float dtype. Raises SpecError when the format cannot pack that shape."""
    i, o = in_features, out_features
    if config.method == "awq":
        # AutoAWQ awq/modules/linear/gemm.py WQLinear_GEMM: qweight int32 (I, O / 8), qzeros
        # int32 (I / group, O / 8), scales fp16 (I / group, O); group -1 means I.
        # awq/modules/linear/gemv.py WQLinear_GEMV: qweight int32 (O, I / 8), qzeros int32
        # (O, w), scales fp16 (O, 8 w), w = calculate_zeros_width(I, group).
        group = config.group_size or i
        if i % group:
            _shape_error("group_size", f"{group} does not divide in_features {i} "
                                       "(AutoAWQ asserts in_features % group_size == 0)")
        if o % 8:
            _shape_error("quant_method", f"awq packs 8 output features per int32; out_features "
                                         f"{o} is not a multiple of 8")
        if config.awq_version == "gemm":
            return i * (o // 8) * 4 + (i // group) * (o // 8) * 4 + (i // group) * o * 2
        if i % 8:
            _shape_error("version", f"gemv packs 8 input features per int32; in_features {i} "
                                    "is not a multiple of 8")
        multiplier = 1 if group >= 128 else {64: 2, 32: 4}.get(group)
        if multiplier is None:
            _shape_error("group_size", f"{group} is not supported by the gemv packing "
                                       "(calculate_zeros_width takes 32, 64 or >= 128)")
        width = math.ceil(math.ceil((i // group) / 8) / multiplier) * multiplier
        return o * (i // 8) * 4 + o * width * 4 + o * width * 8 * 2
    if config.method == "gptq":
        # AutoGPTQ nn_modules/qlinear/qlinear_cuda_old.py QuantLinear (GPTQModel's
        # TorchQuantLinear has the same buffers): qweight int32 (I / 32 x bits, O), qzeros int32
        # (ceil(I / group), O / 32 x bits), scales fp16 (ceil(I / group), O), g_idx int32 (I).
        bits, group = config.bits, config.group_size or i
        for name, size in (("in_features", i), ("out_features", o)):
            if size % 32:
                _shape_error("bits", f"gptq packs 32 values into {bits} int32 words; {name} "
                                     f"{size} is not a multiple of 32")
        groups = math.ceil(i / group)
        return (i // 32 * bits) * o * 4 + groups * (o // 32 * bits) * 4 + groups * o * 2 + i * 4
    if config.method == "bitsandbytes":
        n = i * o
        if config.bits == 8:
            # bitsandbytes nn/modules.py Linear8bitLt._save_to_state_dict: weight int8 (O, I),
            # SCB float32 (O,) row scales, weight_format uint8 scalar.
            return n + o * 4 + 1
        # functional.py quantize_4bit: packed weight ((n + 1) // (2 s), 1) in the storage dtype
        # of s bytes; absmax float32 (ceil(n / 64),); QuantState.as_dict adds quant_map float32
        # (16,). Double quantized: absmax uint8 (ceil(n / 64),), nested_absmax float32
        # (ceil(blocks / 256),), nested_quant_map float32 (256,).
        s = _STORAGE_BYTES[config.quant_storage]
        blocks = math.ceil(n / _BNB4_BLOCK)
        total = (n + 1) // (2 * s) * s + 16 * 4
        if config.double_quant:
            total += blocks + math.ceil(blocks / _BNB4_NESTED_BLOCK) * 4 + 256 * 4
        else:
            total += blocks * 4
        return total + _bnb4_state_blob(config, i, o)
    # transformers integrations/finegrained_fp8.py FP8Linear: weight float8_e4m3fn (O, I);
    # weight_scale_inv (ceil(O / b0), ceil(I / b1)) in float32 (ue8m0: 1 byte), or one float32
    # without blocks; activation_scale float32 scalar when the activation scheme is static.
    if config.fp8_block is None:
        scales = 4
    else:
        rows, cols = config.fp8_block
        scales = math.ceil(o / rows) * math.ceil(i / cols) * config.fp8_scale_bytes
    return i * o + scales + (4 if config.static_activation else 0)


# ----- reading quantization_config --------------------------------------------------------------

# Settings that decide only how a checkpoint was made or is run (calibration, kernels, fusing),
# not which tensors it stores. Anything neither read nor listed here is refused.
_IGNORED: dict[str, frozenset[str]] = {
    "gptq": frozenset({
        "damp_percent", "damp_auto_increment", "true_sequential", "static_groups", "sym",
        "model_name_or_path", "model_file_base_name", "tokenizer", "dataset", "use_cuda_fp16",
        "use_exllama", "exllama_config", "disable_exllama", "max_input_length",
        "cache_block_outputs", "batch_size", "pad_token_id", "model_seqlen",
        "block_name_to_quantize", "module_name_preceding_first_block", "backend", "meta",
        "act_group_aware", "mse", "v2", "v2_alpha", "quantizer", "hyb_act", "offload_to_disk",
        "offload_to_disk_path", "pack_impl", "mock_quantization", "fail_safe"}),
    "awq": frozenset({
        "backend", "do_fuse", "fuse_max_seq_len", "modules_to_fuse", "exllama_config",
        # AwqConfig subclasses GPTQConfig in transformers 5, so its to_dict writes these too
        "tokenizer", "dataset", "damp_percent", "desc_act", "act_group_aware", "sym",
        "true_sequential", "meta", "model_seqlen", "block_name_to_quantize",
        "module_name_preceding_first_block", "batch_size", "pad_token_id", "max_input_length",
        "cache_block_outputs", "modules_in_block_to_quantize", "use_exllama"}),
    "bitsandbytes": frozenset({"llm_int8_threshold", "bnb_4bit_compute_dtype"}),
    "fp8": frozenset(),
}
_READ: dict[str, frozenset[str]] = {
    "gptq": frozenset({"bits", "group_size", "desc_act", "checkpoint_format", "format",
                       "is_marlin_format", "modules_in_block_to_quantize", "lm_head", "pack_dtype",
                       "dynamic"}),
    "awq": frozenset({"bits", "group_size", "zero_point", "version", "format",
                      "modules_to_not_convert"}),
    "bitsandbytes": frozenset({"load_in_4bit", "load_in_8bit", "_load_in_4bit", "_load_in_8bit",
                               "llm_int8_skip_modules", "llm_int8_has_fp16_weight",
                               "llm_int8_enable_fp32_cpu_offload", "bnb_4bit_quant_type",
                               "bnb_4bit_use_double_quant", "bnb_4bit_quant_storage"}),
    "fp8": frozenset({"activation_scheme", "weight_block_size", "fmt", "dequantize",
                      "modules_to_not_convert", "ignored_layers", "modules_to_convert",
                      "scale_fmt", "expert_dtype"}),
}


class _Reader:
    """Typed access to the quantization_config dict; every error names the field and value."""

    def __init__(self, raw: Mapping[str, Any], method: str) -> None:
        self.raw = raw
        self.method = method

    def fail(self, name: str, message: str) -> NoReturn:
        raise SpecError(f"{_FIELD}.{name}: {message}")

    def reject(self, name: str, value: object, why: str) -> NoReturn:
        self.fail(name, f"{value!r} is not supported for {self.method} ({why})")

    def get(self, name: str, default: Any = None) -> Any:
        value = self.raw.get(name)
        return default if value is None else value

    def flag(self, name: str, default: bool) -> bool:
        value = self.get(name, default)
        if not isinstance(value, bool):
            self.fail(name, f"must be true or false, got {value!r}")
        return value

    def whole(self, name: str, default: int) -> int:
        value = self.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(name, f"must be a whole number, got {value!r}")
        return value

    def choice(self, name: str, default: str, allowed: tuple[str, ...], why: str) -> str:
        value = self.get(name, default)
        if not isinstance(value, str) or value.lower() not in allowed:
            self.reject(name, value, f"{why}; supported: {', '.join(allowed)}")
        return value.lower()

    def names(self, name: str) -> tuple[str, ...] | None:
        value = self.raw.get(name)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.fail(name, f"must be a list of module names, got {value!r:.80}")
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:  # transformers matches each name as a regex too
                self.fail(name, f"{pattern!r} is not a valid pattern ({exc})")
        return tuple(value)

    def group_size(self) -> int | None:
        gs = self.whole("group_size", 128)
        if gs == -1:
            return None
        if gs <= 0:
            self.fail("group_size", f"must be -1 (the whole input) or positive, got {gs!r}")
        return gs

    def check_keys(self) -> None:
        known = _READ[self.method] | _IGNORED[self.method] | {"quant_method"}
        for key, value in self.raw.items():
            if key not in known and value is not None:
                self.fail(key, f"{value!r:.60} is a {self.method} setting this model does not "
                               f"know, refused rather than guessed (read: "
                               f"{', '.join(sorted(_READ[self.method]))})")


def _gptq(r: _Reader) -> QuantConfig:
    if r.raw.get("bits") is None:
        r.fail("bits", f"missing (GPTQ packs {', '.join(map(str, _GPTQ_BITS))} bits)")
    bits = r.whole("bits", 4)
    if bits not in _GPTQ_BITS:
        r.reject("bits", bits, "QuantLinear packs 2, 3, 4 or 8 bits")
    fmt = r.get("checkpoint_format", r.get("format", "gptq"))
    if not isinstance(fmt, str) or fmt.lower() not in ("gptq", "gptq_v2"):
        field_name = "checkpoint_format" if "checkpoint_format" in r.raw else "format"
        r.reject(field_name, fmt, "other packings (marlin, bitblas, ...) store other tensors; "
                                  "supported: gptq, gptq_v2")
    if r.flag("is_marlin_format", False):
        r.reject("is_marlin_format", True, "the marlin packing stores other tensors")
    pack = r.get("pack_dtype", "int32")
    if pack != "int32":
        r.reject("pack_dtype", pack, "supported: int32")
    dynamic = r.raw.get("dynamic")
    if dynamic:
        r.reject("dynamic", dynamic, "per-module bits and group sizes are not modelled")
    only = r.raw.get("modules_in_block_to_quantize")
    flat: tuple[str, ...] | None = None
    if only is not None:
        ok = isinstance(only, list) and all(
            isinstance(g, list) and all(isinstance(n, str) and n for n in g) for g in only)
        if not ok:
            r.fail("modules_in_block_to_quantize", f"must be a list of lists of module names, "
                                                   f"got {only!r:.80}")
        flat = tuple(n for group in only for n in group)
    return QuantConfig("gptq", bits, group_size=r.group_size(), desc_act=r.flag("desc_act", False),
                       only_modules=flat, head=r.flag("lm_head", False))


def _awq(r: _Reader) -> QuantConfig:
    bits = r.whole("bits", 4)
    if bits != 4:
        r.reject("bits", bits, "AutoAWQ's WQLinear packs 4 bits only")
    if not r.flag("zero_point", True):
        r.reject("zero_point", False, "WQLinear always stores zero points; a checkpoint without "
                                      "them is not modelled")
    if r.get("backend") == "llm-awq":
        r.reject("backend", "llm-awq", "the llm-awq packing is not modelled")
    versions = {name: r.raw[name] for name in ("version", "format") if r.raw.get(name) is not None}
    values = {str(v).lower() for v in versions.values()}
    if len(values) > 1:
        r.fail("version", f"{versions.get('version')!r} disagrees with format "
                          f"{versions.get('format')!r}")
    name = "version" if "version" in versions else "format"
    version = r.choice(name, "gemm", ("gemm", "gemv"),
                       "gemv_fast, marlin, exllama and ipex pack differently")
    return QuantConfig("awq", 4, group_size=r.group_size(),
                       awq_version="gemm" if version == "gemm" else "gemv",
                       skip_modules=r.names("modules_to_not_convert"))


def _bitsandbytes(r: _Reader) -> QuantConfig:
    flags = {}
    for size in ("4", "8"):
        public, private = f"load_in_{size}bit", f"_load_in_{size}bit"
        values = {name: r.flag(name, False) for name in (public, private) if name in r.raw}
        if len(set(values.values())) > 1:
            r.fail(public, f"{values[public]!r} disagrees with {private} {values[private]!r}")
        flags[size] = any(values.values())
    if flags["4"] == flags["8"]:
        r.fail("load_in_4bit", f"{flags['4']!r} with load_in_8bit {flags['8']!r}: exactly one must "
                               "be true for a quantized checkpoint")
    if r.flag("llm_int8_has_fp16_weight", False):
        r.reject("llm_int8_has_fp16_weight", True, "the main weights stay in fp16")
    if r.flag("llm_int8_enable_fp32_cpu_offload", False):
        r.reject("llm_int8_enable_fp32_cpu_offload", True,
                 "which modules stay in fp32 depends on the device map")
    skip = r.names("llm_int8_skip_modules")
    if flags["8"]:
        return QuantConfig("bitsandbytes", 8, skip_modules=skip)
    quant_type = r.choice("bnb_4bit_quant_type", "fp4", ("nf4", "fp4"), "Linear4bit's data types")
    storage = r.choice("bnb_4bit_quant_storage", "uint8", tuple(_STORAGE_BYTES),
                       "the dtypes bitsandbytes packs into")
    return QuantConfig("bitsandbytes", 4, bnb_quant_type="nf4" if quant_type == "nf4" else "fp4",
                       double_quant=r.flag("bnb_4bit_use_double_quant", False),
                       quant_storage=storage, skip_modules=skip)


def _fp8(r: _Reader) -> QuantConfig:
    scheme = r.choice("activation_scheme", "dynamic", ("dynamic", "static"),
                      "FineGrainedFP8Config's schemes")
    r.choice("fmt", "e4m3", ("e4m3",), "FP8Linear stores float8_e4m3fn")
    if r.flag("dequantize", False):
        r.reject("dequantize", True, "the weights would be loaded dequantized")
    if r.get("expert_dtype", "fp8") != "fp8":
        r.reject("expert_dtype", r.raw["expert_dtype"], "fp4-packed experts are not modelled")
    if r.raw.get("modules_to_convert"):
        r.reject("modules_to_convert", r.raw["modules_to_convert"],
                 "fp8 embeddings are not modelled")
    scale_fmt = r.choice("scale_fmt", "float", ("float", "ue8m0"), "FP8Linear's scale dtypes")
    block: tuple[int, int] | None = (128, 128)  # FineGrainedFP8Config's default
    if "weight_block_size" in r.raw:
        value = r.raw["weight_block_size"]
        if value is None:
            block = None  # FP8Linear keeps one scale per tensor
        elif (isinstance(value, list) and len(value) == 2
              and all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in value)):
            block = (value[0], value[1])
        else:
            r.fail("weight_block_size", f"must be two positive whole numbers or null, got {value!r}")
    skip_name = "modules_to_not_convert" if r.raw.get("modules_to_not_convert") is not None \
        else "ignored_layers"  # MiniMax's alias, as FineGrainedFP8Config reads it
    return QuantConfig("fp8", 8, fp8_block=block, fp8_scale_bytes=1 if scale_fmt == "ue8m0" else 4,
                       static_activation=scheme == "static", skip_modules=r.names(skip_name))


_PARSERS = {"gptq": _gptq, "awq": _awq, "bitsandbytes": _bitsandbytes, "fp8": _fp8}


def parse_quantization_config(raw: object) -> QuantConfig:
    """The QuantConfig of a config.json's ``quantization_config`` object.

    Raises SpecError naming ``quantization_config.<field>`` and the value for an unsupported
    method, a setting that changes the stored tensors in a way not modelled, or an unknown
    setting with a value (null settings are ignored)."""
    if not isinstance(raw, Mapping):
        raise SpecError(f"{_FIELD}: expected a JSON object, got {type(raw).__name__}")
    method = raw.get("quant_method")
    if method is None and (raw.get("load_in_4bit") or raw.get("load_in_8bit")):
        method = "bitsandbytes"  # configs from before quant_method, as transformers reads them
    if method is None:
        raise SpecError(f"{_FIELD}.quant_method: missing (supported: {', '.join(METHODS)})")
    if not isinstance(method, str) or method not in _PARSERS:
        raise SpecError(f"{_FIELD}.quant_method {method!r} is not supported "
                        f"(supported: {', '.join(METHODS)})")
    reader = _Reader(raw, method)
    reader.check_keys()
    return _PARSERS[method](reader)


# ----- which modules are quantized --------------------------------------------------------------

def _skipped(patterns: tuple[str, ...], name: str) -> bool:
    """transformers' should_convert_module (quantizers/quantizers_utils.py), negated: a pattern
    matches from the start up to a module boundary (also as a regex), or as a suffix."""
    boundary = r"(?:(?<=\.)|(?=\.|$))"
    return any(re.match(rf"(?:{p}){boundary}", name) or name.endswith(p) for p in patterns)


def _quantized(config: QuantConfig, names: tuple[str, ...]) -> bool:
    """Whether a module known by ``names`` (its checkpoint name first, then what transformers 5
    calls it) is quantized under the config's lists."""
    if config.only_modules is not None:
        # optimum's GPTQQuantizer.convert_model keeps a Linear when its name ends with an entry
        return any(n.endswith(entry) for n in names for entry in config.only_modules)
    return not any(_skipped(config.skip_modules or (), n) for n in names)


def resolve_modules(config: QuantConfig, *, layers: int, names: Mapping[Role, tuple[str, ...]],
                    block_prefix: str, experts: int = 0, head_name: str = "lm_head",
                    tied_head: bool = False) -> QuantConfig:
    """``config`` with ``float_modules`` and ``head`` resolved for one model.

    ``names`` gives each of a block's Linear roles its module names relative to the block
    (checkpoint name first, then aliases), with ``{e}`` standing for an expert's index;
    ``block_prefix`` contains ``{i}`` for the block's. Raises SpecError when the experts of one
    block would be treated differently (not modelled) or when a tied LM head would be
    quantized."""
    skip_field = {"awq": "modules_to_not_convert", "fp8": "modules_to_not_convert",
                  "bitsandbytes": "llm_int8_skip_modules",
                  "gptq": "modules_in_block_to_quantize"}[config.method]
    floating: set[tuple[int, Role]] = set()
    for i in range(layers):
        prefix = block_prefix.format(i=i)
        for role, aliases in names.items():
            indices = range(experts) if any("{e}" in a for a in aliases) else range(1)
            verdicts = {_quantized(config, tuple(prefix + a.format(e=e) for a in aliases))
                        for e in indices}
            if len(verdicts) > 1:
                raise SpecError(f"{_FIELD}.{skip_field}: quantizes some experts of block {i} "
                                f"({prefix + aliases[0]}) but not others; not modelled")
            if verdicts == {False}:
                floating.add((i, role))
    head = config.head
    if config.method in ("bitsandbytes", "fp8") and config.skip_modules is not None:
        # an explicit skip list replaces transformers' default one (get_modules_to_not_convert),
        # so the LM head is converted unless the list names it
        head = not _skipped(config.skip_modules, head_name)
    if head and tied_head:
        field_name = "lm_head" if config.method == "gptq" else skip_field
        raise SpecError(f"{_FIELD}.{field_name}: the LM head would be quantized, but this model "
                        "ties it to the embedding (not modelled)")
    return replace(config, float_modules=frozenset(floating), head=head)
