"""How a transformer family computes, beyond the sizes a TransformerSpec holds.

TransformerSpec says how big every tensor is (what planning needs). Running a checkpoint needs
more: the norms' epsilon and form, the activation, the rotary base and scaling, the attention
scale, soft-capping, sliding windows, the block's wiring. ``Numerics`` holds those facts and
``numerics_from_hf_config`` reads them from a Hugging Face config the way the transformers
modeling code uses them (its config classes' defaults where a field is absent). A setting the
runner does not reproduce (ALiBi, dynamic or YaRN rotary scaling, ...) is refused with
SpecError naming the field, never approximated. No torch here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .errors import SpecError
from .transformer import TransformerSpec

__all__ = ["ACTIVATIONS", "BlockStyle", "Numerics", "Rope", "numerics_from_hf_config"]

BlockStyle = Literal["pre", "parallel", "parallel2", "sandwich", "post"]
"""pre: x + attn(n1 x), then + mlp(n2 x); parallel: one norm n, x + attn(n) + mlp(n);
parallel2: x + attn(n1 x) + mlp(n2 x); sandwich: pre with a norm after each branch (Gemma-2);
post: n1(x + attn x), then n2(x + mlp x) (BERT, OPT without do_layer_norm_before)."""

ACTIVATIONS: dict[str, str] = {
    # transformers' ACT2FN names -> the function the runner applies
    "silu": "silu", "swish": "silu", "gelu": "gelu", "gelu_python": "gelu",
    "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu_fast": "gelu_tanh",
    "relu": "relu", "quick_gelu": "quick_gelu",
}

_ROPE_TYPES = ("default", "linear", "llama3")


@dataclass(frozen=True)
class Rope:
    """Rotary embedding: base, and the scaling of its frequencies (default, linear, llama3)."""

    theta: float = 10000.0
    kind: str = "default"
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_positions: int = 8192


@dataclass(frozen=True)
class Numerics:
    """The computation of one model, layer by layer. The defaults are the zoo decoders' (the
    synthetic-weight runs): RMSNorm or LayerNorm with eps 1e-5, rotary base 10,000, SiLU for a
    gated MLP and tanh-GELU for a plain one, the block wired by its number of norms."""

    family: str = "zoo"
    norm_eps: float = 1e-5
    rms_offset: bool = False
    """Gemma: RMSNorm scales by (1 + weight), in float32 before the cast."""
    activation: str | None = None
    """silu, gelu, gelu_tanh, relu or quick_gelu; None: silu for a gated MLP, gelu_tanh else."""
    rope: Rope | None = None
    """None: rotary at base 10,000 where the model has no learned positions."""
    attn_scale: float | None = None
    """Multiplies q.k; None: head_dim ** -0.5."""
    scale_by_inverse_layer: bool = False
    """GPT-2's scale_attn_by_inverse_layer_idx: the scale is also divided by layer index + 1."""
    attn_softcap: float | None = None
    final_softcap: float | None = None
    embed_scale: float | None = None
    """Gemma: token embeddings times sqrt(hidden), in the weights' dtype."""
    position_offset: int = 0
    """OPT: learned position p is row p + 2."""
    windows: tuple[int | None, ...] = ()
    """Sliding-window size per block (None: full attention); empty: every block full."""
    block: BlockStyle | None = None
    """None: from the spec's norms per layer (1 parallel, 2 pre, 4 sandwich)."""
    causal: bool = True

    def __post_init__(self) -> None:
        if self.activation is not None and self.activation not in set(ACTIVATIONS.values()):
            raise SpecError(f"activation: {self.activation!r} is not one of "
                            f"{', '.join(sorted(set(ACTIVATIONS.values())))}")
        if not self.norm_eps > 0:
            raise SpecError(f"norm_eps: must be > 0, got {self.norm_eps!r}")
        for w in self.windows:
            if w is not None and w < 1:
                raise SpecError(f"sliding window: must be >= 1, got {w!r}")

    def block_style(self, spec: TransformerSpec) -> BlockStyle:
        if self.block is not None:
            return self.block
        return {1: "parallel", 4: "sandwich"}.get(spec.norms_per_layer, "pre")  # type: ignore[return-value]

    def act(self, spec: TransformerSpec) -> str:
        if self.activation is not None:
            return self.activation
        return "silu" if spec.mlp == "gated" else "gelu_tanh"

    def window(self, block: int) -> int | None:
        return self.windows[block] if block < len(self.windows) else None

    def scale(self, head_dim: int, block: int) -> float:
        base = head_dim ** -0.5 if self.attn_scale is None else self.attn_scale
        return base / (block + 1) if self.scale_by_inverse_layer else base

    def rotary(self) -> Rope:
        return self.rope if self.rope is not None else Rope()


# ----- Hugging Face configs ------------------------------------------------------------------
class _Fields:
    """Typed reads of one config dict; errors name the source and the field."""

    def __init__(self, config: Mapping[str, Any], source: str) -> None:
        self.config, self.source = config, source

    def fail(self, field: str, value: object, why: str) -> SpecError:
        return SpecError(f"{self.source}: {field} {value!r} is not supported by the runner ({why})")

    def number(self, name: str, default: float | None) -> float | None:
        value = self.config.get(name, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise SpecError(f"{self.source}: {name}: expected a number, got {value!r}")
        return float(value)

    def positive(self, name: str, default: float) -> float:
        value = self.number(name, default)
        if value is None or value <= 0:
            raise SpecError(f"{self.source}: {name}: must be > 0, got {value!r}")
        return value

    def flag(self, name: str, default: bool) -> bool:
        value = self.config.get(name, default)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise SpecError(f"{self.source}: {name}: must be true or false, got {value!r}")
        return value

    def activation(self, name: str, default: str) -> str:
        value = self.config.get(name) or default
        if value not in ACTIVATIONS:
            raise self.fail(name, value, f"activations run: {', '.join(ACTIVATIONS)}")
        return ACTIVATIONS[value]

    def window(self, default: int | None) -> int | None:
        """sliding_window: absent -> the config class's default; null -> none."""
        value = self.config.get("sliding_window", default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SpecError(f"{self.source}: sliding_window: must be a whole number >= 1, "
                            f"got {value!r}")
        return value

    def layer_windows(self, layers: int, window: int | None,
                      default_types: list[str]) -> tuple[int | None, ...]:
        types = self.config.get("layer_types") or default_types
        if not isinstance(types, list) or len(types) != layers:
            raise SpecError(f"{self.source}: layer_types: expected {layers} entries, got "
                            f"{types!r:.80}")
        out: list[int | None] = []
        for t in types:
            if t not in ("full_attention", "sliding_attention"):
                raise self.fail("layer_types", t, "full_attention and sliding_attention run")
            out.append(window if t == "sliding_attention" else None)
        return tuple(out)

    def rope(self, default_theta: float) -> Rope:
        params = self.config.get("rope_parameters") or self.config.get("rope_scaling") or {}
        if not isinstance(params, dict):
            raise SpecError(f"{self.source}: rope_parameters: expected an object, got {params!r:.60}")
        theta = params.get("rope_theta", self.config.get("rope_theta", default_theta))
        kind = params.get("rope_type", params.get("type", "default"))
        if kind not in _ROPE_TYPES:
            raise self.fail("rope_parameters.rope_type", kind,
                            f"rotary scalings run: {', '.join(_ROPE_TYPES)}")
        partial = params.get("partial_rotary_factor", self.config.get("partial_rotary_factor", 1.0))
        if partial not in (None, 1, 1.0):
            raise self.fail("partial_rotary_factor", partial, "the rotary covers whole heads")
        if isinstance(theta, bool) or not isinstance(theta, int | float) or not theta > 0:
            raise SpecError(f"{self.source}: rope_theta: must be > 0, got {theta!r}")
        if kind == "default":
            return Rope(float(theta))
        try:
            factor = float(params["factor"])
            if kind == "linear":
                return Rope(float(theta), kind, factor)
            original: Any = params.get("original_max_position_embeddings",
                                       self.config.get("max_position_embeddings"))
            return Rope(float(theta), kind, factor, float(params["low_freq_factor"]),
                        float(params["high_freq_factor"]), int(original))
        except (KeyError, TypeError, ValueError) as exc:
            raise SpecError(f"{self.source}: rope_parameters: {kind} scaling needs {exc}") from None


def _llama_like(f: _Fields, family: str, spec: TransformerSpec) -> Numerics:
    eps = f.positive("rms_norm_eps", 1e-5 if family == "mixtral" else 1e-6)
    window = f.window(None if family == "mixtral" else 4096)
    windows: tuple[int | None, ...] = ()
    if family == "mistral" and "layer_types" in f.config:
        # transformers 5 reads a mistral config with layer_types as Ministral: a window on the
        # layers marked sliding only
        default = ["sliding_attention" if window is not None else "full_attention"] * spec.layers
        windows = f.layer_windows(spec.layers, window, default)
    elif family in ("mistral", "mixtral"):
        windows = (window,) * spec.layers
    elif family == "qwen2":
        if not f.flag("use_sliding_window", False):
            window = None
        first = int(f.number("max_window_layers", 28) or 0)
        default = ["sliding_attention" if window is not None and i >= first else "full_attention"
                   for i in range(spec.layers)]
        windows = f.layer_windows(spec.layers, window, default)
    theta = 1e6 if family == "mixtral" else 10000.0
    return Numerics(family, eps, activation=f.activation("hidden_act", "silu"),
                    rope=f.rope(theta), windows=windows)


def _gemma2(f: _Fields, spec: TransformerSpec) -> Numerics:
    if f.flag("use_bidirectional_attention", False):
        raise f.fail("use_bidirectional_attention", True, "Gemma-2 runs causal")
    default = ["sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(spec.layers)]
    windows = f.layer_windows(spec.layers, f.window(4096), default)
    return Numerics("gemma2", f.positive("rms_norm_eps", 1e-6), rms_offset=True,
                    activation=f.activation("hidden_activation", "gelu_pytorch_tanh"),
                    rope=f.rope(10000.0),
                    attn_scale=f.positive("query_pre_attn_scalar", 256) ** -0.5,
                    attn_softcap=f.number("attn_logit_softcapping", 50.0),
                    final_softcap=f.number("final_logit_softcapping", 30.0),
                    embed_scale=spec.hidden ** 0.5, windows=windows, block="sandwich")


def _gpt2(f: _Fields, spec: TransformerSpec) -> Numerics:
    # reorder_and_upcast_attn changes transformers' eager attention only (float32 scores),
    # not its default; the runner's fp32 runs compute the same scores either way
    scale = None if f.flag("scale_attn_weights", True) else 1.0
    return Numerics("gpt2", f.positive("layer_norm_epsilon", 1e-5),
                    activation=f.activation("activation_function", "gelu_new"), attn_scale=scale,
                    scale_by_inverse_layer=f.flag("scale_attn_by_inverse_layer_idx", False),
                    block="pre")


def _opt(f: _Fields, spec: TransformerSpec) -> Numerics:
    pre = f.flag("do_layer_norm_before", True)
    # OPT's LayerNorms take torch's default eps (1e-5); the config has no field for it
    return Numerics("opt", 1e-5, activation=f.activation("activation_function", "relu"),
                    position_offset=2, block="pre" if pre else "post")


def _falcon(f: _Fields, spec: TransformerSpec, legacy_new_arch: bool | None) -> Numerics:
    if f.flag("alibi", False):
        raise f.fail("alibi", True, "Falcon runs with rotary positions")
    new_arch = f.flag("new_decoder_architecture", bool(legacy_new_arch))
    parallel = f.flag("parallel_attn", True)
    if new_arch and not parallel:
        raise f.fail("parallel_attn", False, "the new decoder architecture runs parallel blocks")
    if not parallel:
        block: BlockStyle = "pre"
    else:
        block = "parallel2" if spec.norms_per_layer == 2 else "parallel"
    return Numerics("falcon", f.positive("layer_norm_epsilon", 1e-5),
                    activation=f.activation("activation", "gelu"), rope=f.rope(10000.0),
                    block=block)


def _bert(f: _Fields, spec: TransformerSpec) -> Numerics:
    if f.flag("is_decoder", False):
        raise f.fail("is_decoder", True, "BERT runs as an encoder")
    return Numerics("bert", f.positive("layer_norm_eps", 1e-12),
                    activation=f.activation("hidden_act", "gelu"), block="post", causal=False)


def numerics_from_hf_config(config: Mapping[str, Any], spec: TransformerSpec,
                            source: str = "config.json") -> Numerics:
    """The numerics of a Hugging Face config whose sizes gave ``spec`` (models/hf.py)."""
    f = _Fields(config, source)
    model_type = config.get("model_type")
    if model_type in ("llama", "mistral", "mixtral", "qwen2"):
        return _llama_like(f, str(model_type), spec)
    if model_type == "gemma2":
        return _gemma2(f, spec)
    if model_type == "gpt2":
        return _gpt2(f, spec)
    if model_type == "opt":
        return _opt(f, spec)
    if model_type in ("falcon", "RefinedWeb", "RefinedWebModel"):
        return _falcon(f, spec, {"RefinedWeb": True, "RefinedWebModel": False}.get(str(model_type)))
    if model_type == "bert":
        return _bert(f, spec)
    raise SpecError(f"{source}: model_type {model_type!r}: the runner has no numerics for it")
