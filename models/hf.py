"""Import a local Hugging Face ``config.json`` into a :class:`TransformerSpec`.

Nothing is fetched: the file is read as JSON and each supported family's layout is rebuilt from
what the transformers modeling code does with its config fields (aliases, defaults and biases
that only the code implies). ``params()`` of the result equals the parameter count of the
transformers module (``*ForCausalLM`` for decoders with a tied head counted once, ``BertModel``
with its pooler for BERT).

Policy for absent fields:

- Sizes that shape weight matrices (hidden size, layers, heads, MLP width, vocabulary, learned
  position tables, experts) are required; an absent one is an error, not a guess.
- Sizes the modeling code derives from others follow that rule: ``n_inner`` / ``ffn_hidden_size``
  absent or null -> 4 x hidden; ``head_dim`` absent -> hidden / heads (not Gemma-2, which has no
  such rule); ``num_key_value_heads`` null -> heads, and absent -> heads for llama only. Mistral,
  Mixtral, Qwen2 and Gemma-2 configs give a fixed class default here that differs between
  transformers versions, so for them an absent value is an error.
- Flags (biases, tying, Falcon's architecture switches) take the config class's default.

Unsupported layouts raise :class:`SpecError` rather than a wrong count: OPT with
``word_embed_proj_dim != hidden_size`` (OPT-350m's project_in/project_out), OPT LayerNorms
without affine weights, BERT with relative position embeddings, GPT-2/BERT with cross-attention.

A ``quantization_config`` (awq, gptq, bitsandbytes, fp8; models/quant.py) makes the spec count
the block Linear weights the checkpoint packs at the bytes it stores for them. Its skip lists
are matched the way transformers 5 matches them, against each block module's checkpoint name
(and, for Mixtral, transformers 5's renamed router ``mlp.gate`` and fused ``mlp.experts``).
Not mapped, and refused: quantized GPT-2 (Conv1D projections) and BERT (an encoder whose pooler
transformers would quantize too); Falcon and Mixtral with bitsandbytes or fp8, whose
FalconLinear layers, router and experts transformers 4 converted and transformers 5 does not,
so the stored tensors depend on the version that wrote the checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn

from .errors import SpecError
from .quant import QuantConfig, Role, parse_quantization_config, resolve_modules
from .textio import JSONSyntaxError, display_path, load_json, shorten
from .transformer import TransformerSpec

__all__ = ["SUPPORTED_MODEL_TYPES", "load_hf_config", "spec_from_hf_config"]

SUPPORTED_MODEL_TYPES: tuple[str, ...] = (
    "llama", "mistral", "mixtral", "qwen2", "gemma2", "gpt2", "opt", "falcon", "bert",
)

# Falcon checkpoints from before its transformers port (remote code) name the model type so;
# "RefinedWeb" (falcon-40b) is the new decoder architecture.
_FALCON_LEGACY_TYPES = {"RefinedWebModel": False, "RefinedWeb": True}

_MISSING = object()

# Each family's block Linear layers by role, as a checkpoint names them relative to a block
# (what skip lists match), then transformers 5's name where it differs; {e}: an expert's index.
_ATTENTION: dict[Role, tuple[str, ...]] = {
    "q": ("self_attn.q_proj",), "k": ("self_attn.k_proj",), "v": ("self_attn.v_proj",)}
_LLAMA_LINEARS: dict[Role, tuple[str, ...]] = {
    **_ATTENTION, "o": ("self_attn.o_proj",), "gate": ("mlp.gate_proj",),
    "up": ("mlp.up_proj",), "down": ("mlp.down_proj",)}
_MIXTRAL_LINEARS: dict[Role, tuple[str, ...]] = {
    **_ATTENTION, "o": ("self_attn.o_proj",), "router": ("block_sparse_moe.gate", "mlp.gate"),
    "expert_gate": ("block_sparse_moe.experts.{e}.w1", "mlp.experts"),
    "expert_up": ("block_sparse_moe.experts.{e}.w3", "mlp.experts"),
    "expert_down": ("block_sparse_moe.experts.{e}.w2", "mlp.experts")}
_OPT_LINEARS: dict[Role, tuple[str, ...]] = {
    **_ATTENTION, "o": ("self_attn.out_proj",), "up": ("fc1",), "down": ("fc2",)}
_FALCON_LINEARS: dict[Role, tuple[str, ...]] = {
    "qkv": ("self_attention.query_key_value",), "o": ("self_attention.dense",),
    "up": ("mlp.dense_h_to_4h",), "down": ("mlp.dense_4h_to_h",)}
_QUANT_LAYOUTS: dict[str, tuple[str, dict[Role, tuple[str, ...]]]] = {
    "llama": ("model.layers.{i}.", _LLAMA_LINEARS), "mistral": ("model.layers.{i}.", _LLAMA_LINEARS),
    "qwen2": ("model.layers.{i}.", _LLAMA_LINEARS), "gemma2": ("model.layers.{i}.", _LLAMA_LINEARS),
    "mixtral": ("model.layers.{i}.", _MIXTRAL_LINEARS),
    "opt": ("model.decoder.layers.{i}.", _OPT_LINEARS), "falcon": ("transformer.h.{i}.", _FALCON_LINEARS),
}
_VERSION_DEPENDENT = {("falcon", "bitsandbytes"), ("falcon", "fp8"),
                      ("mixtral", "bitsandbytes"), ("mixtral", "fp8")}


class _Config:
    """Typed access to one config dict; every error names the source and the field."""

    def __init__(self, config: Mapping[str, Any], source: str) -> None:
        self.config = config
        self.source = source

    def fail(self, message: str) -> NoReturn:
        raise SpecError(f"{self.source}: {message}")

    def _lookup(self, names: tuple[str, ...]) -> tuple[str, Any]:
        """(name found, value) of the first alias present and not null."""
        for name in names:
            value = self.config.get(name)
            if value is not None:
                return name, value
        return names[0], _MISSING

    def _missing(self, names: tuple[str, ...]) -> NoReturn:
        also = f" (also looked for {', '.join(names[1:])})" if len(names) > 1 else ""
        self.fail(f"{names[0]}: missing{also}")

    def size(self, *names: str, default: int | None = None, minimum: int = 1) -> int:
        """A whole number >= minimum under the first present alias (default when absent)."""
        name, value = self._lookup(names)
        if value is _MISSING:
            if default is None:
                self._missing(names)
            return default
        if not isinstance(value, int) or isinstance(value, bool):
            self.fail(f"{name}: must be a whole number, got {shorten(value)}")
        if value < minimum:
            self.fail(f"{name}: must be >= {minimum}, got {shorten(value)}")
        return value

    def optional_size(self, *names: str) -> int | None:
        name, value = self._lookup(names)
        return None if value is _MISSING else self.size(name)

    def flag(self, name: str, default: bool) -> bool:
        value = self.config.get(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.fail(f"{name}: must be true or false, got {shorten(value)}")
        return value

    def kv_heads(self, heads: int, *names: str, absent_means_heads: bool) -> int:
        """KV heads under the transformers rule: null -> heads; absent -> heads or an error."""
        present = any(name in self.config for name in names)
        if not present and not absent_means_heads:
            self._missing(names)
        kv = self.size(*names, default=heads)
        if heads % kv:
            self.fail(f"{self._lookup(names)[0]}: {kv} does not divide the {heads} attention heads")
        return kv

    def check_divides(self, hidden: int, heads: int, hidden_name: str, heads_name: str) -> None:
        if hidden % heads:
            self.fail(f"{heads_name}: {heads} does not divide {hidden_name} {hidden}")

    def reject(self, name: str, value: object, why: str) -> NoReturn:
        self.fail(f"{name} {shorten(value)} is not supported ({why})")


# ----- families ------------------------------------------------------------------------------
# Each returns TransformerSpec keyword arguments.

def _llama_like(c: _Config, family: str) -> dict[str, Any]:
    """llama, mistral, mixtral, qwen2: pre-norm RMSNorm decoders with a gated (SwiGLU) MLP."""
    hidden = c.size("hidden_size")
    heads = c.size("num_attention_heads")
    head_dim = c.optional_size("head_dim")
    if head_dim is None:
        c.check_divides(hidden, heads, "hidden_size", "num_attention_heads")
    spec: dict[str, Any] = dict(
        hidden=hidden,
        layers=c.size("num_hidden_layers"),
        heads=heads,
        kv_heads=c.kv_heads(heads, "num_key_value_heads", absent_means_heads=family == "llama"),
        head_dim=head_dim,
        ffn=c.size("intermediate_size"),
        vocab=c.size("vocab_size"),
        mlp="gated",
        norm="rmsnorm",
        norms_per_layer=2,
        tied_embeddings=c.flag("tie_word_embeddings", False),
        context=c.optional_size("max_position_embeddings") or 0,
    )
    if family == "llama":
        # Llama's only bias switches; Mistral, Mixtral and Qwen2 hard-code theirs.
        spec["attn_bias"] = c.flag("attention_bias", False)
        spec["mlp_bias"] = c.flag("mlp_bias", False)
    elif family == "qwen2":
        spec["qkv_bias"] = True  # q/k/v_proj have bias=True in the modeling code, o_proj not
    elif family == "mixtral":
        spec["experts"] = c.size("num_local_experts")
        spec["experts_per_token"] = c.size("num_experts_per_tok")
        if spec["experts_per_token"] > spec["experts"]:
            c.fail(f"num_experts_per_tok: must be <= num_local_experts ({spec['experts']}), "
                   f"got {spec['experts_per_token']}")
    return spec


def _llama(c: _Config) -> dict[str, Any]:
    return _llama_like(c, "llama")


def _mistral(c: _Config) -> dict[str, Any]:
    return _llama_like(c, "mistral")


def _mixtral(c: _Config) -> dict[str, Any]:
    return _llama_like(c, "mixtral")


def _qwen2(c: _Config) -> dict[str, Any]:
    return _llama_like(c, "qwen2")


def _gemma2(c: _Config) -> dict[str, Any]:
    """Gemma-2: head_dim independent of hidden/heads, sandwich norms (4 per layer), GeGLU."""
    heads = c.size("num_attention_heads")
    return dict(
        hidden=c.size("hidden_size"),
        layers=c.size("num_hidden_layers"),
        heads=heads,
        kv_heads=c.kv_heads(heads, "num_key_value_heads", absent_means_heads=False),
        head_dim=c.size("head_dim"),
        ffn=c.size("intermediate_size"),
        vocab=c.size("vocab_size"),
        mlp="gated",
        norm="rmsnorm",  # Gemma's RMSNorm scales by (1 + weight): still one vector of hidden
        norms_per_layer=4,
        attn_bias=c.flag("attention_bias", False),
        tied_embeddings=c.flag("tie_word_embeddings", True),
        context=c.optional_size("max_position_embeddings") or 0,
    )


def _gpt2(c: _Config) -> dict[str, Any]:
    """GPT-2: learned positions, LayerNorm, biases on every Linear (Conv1D), plain MLP."""
    if c.flag("add_cross_attention", False):
        c.reject("add_cross_attention", True, "cross-attention layers are not modelled")
    hidden = c.size("n_embd", "hidden_size")
    heads = c.size("n_head", "num_attention_heads")
    c.check_divides(hidden, heads, "n_embd", "n_head")
    return dict(
        hidden=hidden,
        layers=c.size("n_layer", "num_hidden_layers"),
        heads=heads,
        ffn=c.size("n_inner", default=4 * hidden),
        vocab=c.size("vocab_size"),
        positions=c.size("n_positions", "max_position_embeddings"),
        mlp="plain",
        norm="layernorm",
        attn_bias=True,
        mlp_bias=True,
        tied_embeddings=c.flag("tie_word_embeddings", True),
    )


def _opt(c: _Config) -> dict[str, Any]:
    """OPT: learned positions offset by 2, LayerNorm, enable_bias on every Linear."""
    hidden = c.size("hidden_size")
    heads = c.size("num_attention_heads")
    c.check_divides(hidden, heads, "hidden_size", "num_attention_heads")
    proj = c.size("word_embed_proj_dim", default=hidden)
    if proj != hidden:
        # OPT-350m: embeddings of width word_embed_proj_dim plus project_in/project_out, which
        # TransformerSpec cannot express; refuse rather than miscount.
        c.reject("word_embed_proj_dim", proj,
                 f"differs from hidden_size {hidden}: project_in/project_out are not modelled")
    if not c.flag("layer_norm_elementwise_affine", True):
        c.reject("layer_norm_elementwise_affine", False, "LayerNorms without weights are not modelled")
    bias = c.flag("enable_bias", True)
    # OPTDecoder keeps final_layer_norm only for pre-norm checkpoints.
    final_norm = c.flag("do_layer_norm_before", True) and not c.flag("_remove_final_layer_norm", False)
    return dict(
        hidden=hidden,
        layers=c.size("num_hidden_layers"),
        heads=heads,
        ffn=c.size("ffn_dim"),
        vocab=c.size("vocab_size"),
        # OPTLearnedPositionalEmbedding allocates max_position_embeddings + 2 rows.
        positions=c.size("max_position_embeddings") + 2,
        mlp="plain",
        norm="layernorm",
        attn_bias=bias,
        mlp_bias=bias,
        final_norm=final_norm,
        tied_embeddings=c.flag("tie_word_embeddings", True),
    )


def _falcon(c: _Config, legacy_new_arch: bool | None = None) -> dict[str, Any]:
    """Falcon: fused QKV (MQA, GQA or MHA), plain 4x MLP, LayerNorm, parallel blocks."""
    hidden = c.size("hidden_size", "n_embed")
    heads = c.size("num_attention_heads", "n_head")
    c.check_divides(hidden, heads, "hidden_size", "num_attention_heads")
    new_arch = c.flag("new_decoder_architecture",
                      False if legacy_new_arch is None else legacy_new_arch)
    multi_query = c.flag("multi_query", True)
    parallel = c.flag("parallel_attn", True)
    # FalconAttention: query_key_value is (heads + 2 kv) x head_dim wide for the new
    # architecture, hidden + 2 head_dim for multi-query, else 3 x hidden.
    if new_arch:
        kv_heads = c.kv_heads(heads, "num_kv_heads", "n_head_kv", absent_means_heads=True)
    elif multi_query:
        kv_heads = 1
    else:
        kv_heads = heads
    # FalconDecoderLayer: two norms unless parallel with a single shared one (falcon-7b).
    ln_parallel = c.size("num_ln_in_parallel_attn", default=2 if new_arch else 1)
    norms = 2 if not parallel or ln_parallel == 2 else 1
    bias = c.flag("bias", False)
    return dict(
        hidden=hidden,
        layers=c.size("num_hidden_layers", "n_layer"),
        heads=heads,
        kv_heads=kv_heads,
        ffn=c.size("ffn_hidden_size", default=4 * hidden),
        vocab=c.size("vocab_size"),
        mlp="plain",
        norm="layernorm",
        norms_per_layer=norms,
        attn_bias=bias,
        mlp_bias=bias,
        tied_embeddings=c.flag("tie_word_embeddings", True),
        fused_qkv=True,
        context=c.optional_size("max_position_embeddings") or 0,  # absent from old configs
    )


def _bert(c: _Config) -> dict[str, Any]:
    """BertModel: post-norm encoder, embedding LayerNorm, biases everywhere, a pooler."""
    if c.flag("add_cross_attention", False):
        c.reject("add_cross_attention", True, "cross-attention layers are not modelled")
    position_type = c.config.get("position_embedding_type", "absolute")
    if position_type not in (None, "absolute"):
        c.reject("position_embedding_type", position_type,
                 "relative position embeddings are not modelled; only 'absolute'")
    hidden = c.size("hidden_size")
    heads = c.size("num_attention_heads")
    c.check_divides(hidden, heads, "hidden_size", "num_attention_heads")
    return dict(
        hidden=hidden,
        layers=c.size("num_hidden_layers"),
        heads=heads,
        ffn=c.size("intermediate_size"),
        vocab=c.size("vocab_size"),
        positions=c.size("max_position_embeddings"),
        token_types=c.size("type_vocab_size", minimum=0),
        kind="encoder",
        mlp="plain",
        norm="layernorm",
        attn_bias=True,
        mlp_bias=True,
        embed_norm=True,
        final_norm=False,
        lm_head=False,
        pooler=True,
    )


_FAMILIES: dict[str, Callable[[_Config], dict[str, Any]]] = {
    "llama": _llama, "mistral": _mistral, "mixtral": _mixtral, "qwen2": _qwen2,
    "gemma2": _gemma2, "gpt2": _gpt2, "opt": _opt, "falcon": _falcon, "bert": _bert,
}


def _quantization(c: _Config, family: str, spec: dict[str, Any]) -> QuantConfig | None:
    """The resolved quantization of a config with a ``quantization_config``, else None."""
    raw = c.config.get("quantization_config")
    if raw is None:
        return None
    try:
        config = parse_quantization_config(raw)
        if family not in _QUANT_LAYOUTS:
            raise SpecError(f"quantization_config: quantized {family} checkpoints are not "
                            f"modelled (quantized: {', '.join(_QUANT_LAYOUTS)})")
        if (family, config.method) in _VERSION_DEPENDENT:
            raise SpecError(f"quantization_config.quant_method {shorten(config.method)} is not modelled "
                            f"for {family}: transformers 4 quantized its "
                            f"{'FalconLinear layers' if family == 'falcon' else 'router and experts'}"
                            " and transformers 5 does not, so the checkpoint's tensors depend on "
                            "the version that wrote it (supported for it: awq, gptq)")
        prefix, names = _QUANT_LAYOUTS[family]
        return resolve_modules(config, layers=spec["layers"], names=names, block_prefix=prefix,
                               experts=spec.get("experts", 0),
                               tied_head=spec.get("tied_embeddings", False))
    except SpecError as exc:
        c.fail(str(exc))


def _model_name(config: Mapping[str, Any], source: str, model_type: str) -> str:
    name = config.get("_name_or_path")
    if isinstance(name, str) and name.strip():
        return name.strip()
    stem = Path(source).stem
    # A bare "config" stem says nothing about the model.
    return stem if stem and stem != "config" else model_type


def spec_from_hf_config(config: dict[str, Any], source: str = "config.json"
                        ) -> tuple[str, TransformerSpec]:
    """(model name, spec) of a parsed Hugging Face config.

    ``source`` names the config in error messages and supplies the model name (its file stem)
    when the config has no ``_name_or_path``. Raises :class:`SpecError` naming the source, the
    field and the value for an unsupported ``model_type`` or layout, for a missing or invalid
    size, and for a ``quantization_config`` that is not modelled.
    """
    c = _Config(config, source) if isinstance(config, Mapping) else None
    if c is None:
        raise SpecError(f"{source}: expected a JSON object, got {type(config).__name__}")
    model_type = config.get("model_type")
    if model_type is None:
        c.fail(f"model_type: missing (supported: {', '.join(SUPPORTED_MODEL_TYPES)})")
    if isinstance(model_type, str) and model_type in _FALCON_LEGACY_TYPES:
        family = "falcon"
        kwargs = _falcon(c, legacy_new_arch=_FALCON_LEGACY_TYPES[model_type])
    elif isinstance(model_type, str) and model_type in _FAMILIES:
        family = model_type
        kwargs = _FAMILIES[model_type](c)
    else:
        c.fail(f"model_type {shorten(model_type)} is not supported "
               f"(supported: {', '.join(SUPPORTED_MODEL_TYPES)})")
    quantization = _quantization(c, family, kwargs)
    if quantization is not None:
        kwargs["quantization"] = quantization
    try:
        spec = TransformerSpec(**kwargs)
    except SpecError as exc:  # a combination the per-field checks above did not catch
        raise SpecError(f"{source}: {exc}") from None
    return _model_name(config, source, str(model_type)), spec


def load_hf_config(path: str | Path) -> tuple[str, TransformerSpec]:
    """(model name, spec) of a local ``config.json``; never downloads anything.

    Raises :class:`SpecError` naming the path when the file cannot be read, is not valid JSON,
    or describes an unsupported model.
    """
    source = display_path(path)
    try:
        config = load_json(path)
    except JSONSyntaxError as exc:  # this reader's own wording, kept for its callers
        raise SpecError(f"{source}: invalid JSON: {exc.problem} at line {exc.line} "
                        f"column {exc.column}") from None
    return spec_from_hf_config(config, source)
