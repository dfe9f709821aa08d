"""A Hugging Face checkpoint directory: config.json plus safetensors files, read layer by layer.

``Checkpoint.open(DIR)`` reads the config into a TransformerSpec (models/hf.py) and its
Numerics (models/numerics.py), and the safetensors headers into a tensor index; nothing else
is read until a layer asks for its tensors. ``load_layer`` fills one chain layer (``embed``,
``block3``, ``block3.attn``, ``head``...) built by models/torch_ref.py from the checkpoint's own
tensor names: each family's layout maps the layer's parameters to the checkpoint's names,
slicing fused tensors (GPT-2's and Falcon's QKV, Mixtral's stacked experts) and transposing
GPT-2's Conv1D matrices. ``check_tensors`` checks every tensor a chain needs exists with the
shape it needs, from the headers alone, before any process starts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import SpecError
from .hf import spec_from_hf_config
from .numerics import Numerics, numerics_from_hf_config
from .safetensors_io import TensorIndex
from .textio import load_json
from .transformer import TransformerSpec

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["CONFIG_FILE", "Checkpoint", "Source", "is_checkpoint_dir", "read_config"]

CONFIG_FILE = "config.json"


def is_checkpoint_dir(path: str | Path) -> bool:
    p = Path(path)
    return p.is_dir() and (p / CONFIG_FILE).is_file()


def read_config(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / CONFIG_FILE
    doc = load_json(path)  # not UTF-8, too large, too deep: SpecError, one line
    if not isinstance(doc, dict):
        raise SpecError(f"{path}: expected a JSON object, got {type(doc).__name__}")
    return doc


@dataclass(frozen=True)
class Source:
    """Where one parameter comes from: a checkpoint tensor, optionally one entry of its leading
    dimension (stacked experts), transposed (Conv1D), then a subset of its rows (fused QKV)."""

    name: str
    index: int | None = None
    transpose: bool = False
    rows: tuple[int, ...] | None = None
    whole: tuple[int, ...] | None = None
    """The shape the checkpoint's tensor must have when it holds more than this parameter (a
    fused QKV, stacked experts): a wider one belongs to another model."""


def _span(start: int, stop: int) -> tuple[int, ...]:
    return tuple(range(start, stop))


# ----- family layouts ------------------------------------------------------------------------
# Each maps a parameter of our layer (canonical block names: attn_norm.weight, attn.q_proj.bias,
# mlp.gate_proj.weight, mlp.experts.3.up_proj.weight ...) to its Source, given the prefix of the
# model's base module in this checkpoint.
Layout = Callable[["Checkpoint", str, int | None, str], Source]


def _llama_like(ck: Checkpoint, layer: str, block: int | None, param: str) -> Source:
    p = ck.prefix
    if layer == "embed":
        return Source(f"{p}embed_tokens.weight")
    if layer == "head":
        return _head(ck, param, f"{p}norm.", f"{p}embed_tokens.weight")
    b = f"{p}layers.{block}."
    norms = {"attn_norm": "input_layernorm", "mlp_norm": "post_attention_layernorm"}
    if ck.spec.norms_per_layer == 4:  # Gemma-2's sandwich
        norms = {"attn_norm": "input_layernorm", "post_attn_norm": "post_attention_layernorm",
                 "mlp_norm": "pre_feedforward_layernorm",
                 "post_mlp_norm": "post_feedforward_layernorm"}
    head, _, rest = param.partition(".")
    if head in norms:
        return Source(f"{b}{norms[head]}.{rest}")
    if head == "attn":
        return Source(f"{b}self_attn.{rest}")
    if ck.spec.experts:
        return _expert(ck, b, rest)
    return Source(f"{b}mlp.{rest}")


def _expert(ck: Checkpoint, b: str, rest: str) -> Source:
    """Mixtral: block_sparse_moe.{gate, experts.E.w1/w2/w3} as published, or transformers 5's
    stacked mlp.{gate, experts.gate_up_proj [E, 2F, H], experts.down_proj [E, H, F]}."""
    legacy = f"{b}block_sparse_moe.gate.weight" in ck.tensors
    if rest == "router.weight":
        return Source(f"{b}block_sparse_moe.gate.weight" if legacy else f"{b}mlp.gate.weight")
    _, e, proj, _ = rest.split(".")  # experts.E.gate_proj.weight
    if legacy:
        name = {"gate_proj": "w1", "up_proj": "w3", "down_proj": "w2"}[proj]
        return Source(f"{b}block_sparse_moe.experts.{e}.{name}.weight")
    f, h, experts = ck.spec.ffn, ck.spec.hidden, ck.spec.experts
    if proj == "down_proj":
        return Source(f"{b}mlp.experts.down_proj", index=int(e), whole=(experts, h, f))
    rows = _span(0, f) if proj == "gate_proj" else _span(f, 2 * f)
    return Source(f"{b}mlp.experts.gate_up_proj", index=int(e), rows=rows,
                  whole=(experts, 2 * f, h))


def _head(ck: Checkpoint, param: str, norm_prefix: str, embed: str) -> Source:
    if param.startswith("norm."):
        return Source(norm_prefix + param.removeprefix("norm."))
    if param == "tied_weight" and "lm_head.weight" not in ck.tensors:
        return Source(embed)
    # a tied config whose checkpoint stores its own head anyway: transformers 5 keeps the
    # stored matrix when it differs from the embedding, and so does the runner
    return Source("lm_head.weight")


def _gpt2(ck: Checkpoint, layer: str, block: int | None, param: str) -> Source:
    p, h = ck.prefix, ck.spec.hidden
    if layer == "embed":
        return Source(f"{p}wte.weight" if param == "tok.weight" else f"{p}wpe.weight")
    if layer == "head":
        return _head(ck, param, f"{p}ln_f.", f"{p}wte.weight")
    b = f"{p}h.{block}."
    head, _, rest = param.partition(".")
    if head in ("attn_norm", "mlp_norm"):
        return Source(f"{b}{'ln_1' if head == 'attn_norm' else 'ln_2'}.{rest}")
    proj, _, kind = rest.partition(".")
    if head == "attn" and proj in ("q_proj", "k_proj", "v_proj"):
        # c_attn is a Conv1D [hidden, 3 hidden]: transposed, its rows are q, then k, then v
        part = ("q_proj", "k_proj", "v_proj").index(proj)
        return Source(f"{b}attn.c_attn.{kind}", transpose=kind == "weight",
                      rows=_span(part * h, (part + 1) * h),
                      whole=(h, 3 * h) if kind == "weight" else (3 * h,))
    if head == "attn":
        return Source(f"{b}attn.c_proj.{kind}", transpose=kind == "weight")
    name = {"fc": "c_fc", "proj": "c_proj"}[proj]
    return Source(f"{b}mlp.{name}.{kind}", transpose=kind == "weight")


def _opt(ck: Checkpoint, layer: str, block: int | None, param: str) -> Source:
    p = ck.prefix
    if layer == "embed":
        return Source(f"{p}embed_tokens.weight" if param == "tok.weight"
                      else f"{p}embed_positions.weight")
    if layer == "head":
        return _head(ck, param, f"{p}final_layer_norm.", f"{p}embed_tokens.weight")
    b = f"{p}layers.{block}."
    head, _, rest = param.partition(".")
    if head in ("attn_norm", "mlp_norm"):
        name = "self_attn_layer_norm" if head == "attn_norm" else "final_layer_norm"
        return Source(f"{b}{name}.{rest}")
    if head == "attn":
        return Source(f"{b}self_attn.{rest.replace('o_proj', 'out_proj')}")
    proj, _, kind = rest.partition(".")
    return Source(f"{b}{'fc1' if proj == 'fc' else 'fc2'}.{kind}")


def _falcon_rows(ck: Checkpoint, proj: str) -> tuple[int, ...]:
    """Rows of query_key_value for q, k or v. New architecture: per KV group, its query heads
    then one key and one value head; multi-query: all queries, one key, one value; else per
    head, its query, key and value."""
    s = ck.spec
    d, heads, kvh = s.dh, s.heads, s.kvh
    part = ("q_proj", "k_proj", "v_proj").index(proj)
    if ck.config.get("new_decoder_architecture") or ck.config.get("model_type") == "RefinedWeb":
        g = heads // kvh
        rows: list[int] = []
        for j in range(kvh):
            start = j * (g + 2) * d
            if part == 0:
                rows += range(start, start + g * d)
            else:
                rows += range(start + (g + part - 1) * d, start + (g + part) * d)
        return tuple(rows)
    if kvh == 1:  # multi-query
        return (_span(0, heads * d), _span(heads * d, heads * d + d),
                _span(heads * d + d, heads * d + 2 * d))[part]
    return tuple(r for h in range(heads) for r in range((3 * h + part) * d, (3 * h + part + 1) * d))


def _falcon(ck: Checkpoint, layer: str, block: int | None, param: str) -> Source:
    p = ck.prefix
    if layer == "embed":
        return Source(f"{p}word_embeddings.weight")
    if layer == "head":
        return _head(ck, param, f"{p}ln_f.", f"{p}word_embeddings.weight")
    b = f"{p}h.{block}."
    head, _, rest = param.partition(".")
    if head in ("attn_norm", "mlp_norm"):
        if ck.spec.norms_per_layer == 1:
            name = "input_layernorm"
        elif ck.numerics.block == "parallel2":
            name = "ln_attn" if head == "attn_norm" else "ln_mlp"
        else:
            name = "input_layernorm" if head == "attn_norm" else "post_attention_layernorm"
        return Source(f"{b}{name}.{rest}")
    proj, _, kind = rest.partition(".")
    if head == "attn" and proj != "o_proj":
        width = (ck.spec.heads + 2 * ck.spec.kvh) * ck.spec.dh
        whole = (width, ck.spec.hidden) if kind == "weight" else (width,)
        return Source(f"{b}self_attention.query_key_value.{kind}", rows=_falcon_rows(ck, proj),
                      whole=whole)
    if head == "attn":
        return Source(f"{b}self_attention.dense.{kind}")
    return Source(f"{b}mlp.{'dense_h_to_4h' if proj == 'fc' else 'dense_4h_to_h'}.{kind}")


def _bert(ck: Checkpoint, layer: str, block: int | None, param: str) -> Source:
    p = ck.prefix
    if layer == "embed":
        name = {"tok": "word_embeddings", "pos": "position_embeddings",
                "types": "token_type_embeddings", "norm": "LayerNorm"}[param.split(".")[0]]
        return Source(f"{p}embeddings.{name}.{param.split('.')[-1]}")
    if layer == "head":
        return Source(f"{p}pooler.dense.{param.split('.')[-1]}")
    b = f"{p}encoder.layer.{block}."
    head, _, rest = param.partition(".")
    if head == "attn_norm":
        return Source(f"{b}attention.output.LayerNorm.{rest}")
    if head == "mlp_norm":
        return Source(f"{b}output.LayerNorm.{rest}")
    proj, _, kind = rest.partition(".")
    if head == "attn":
        name = {"q_proj": "attention.self.query", "k_proj": "attention.self.key",
                "v_proj": "attention.self.value", "o_proj": "attention.output.dense"}[proj]
        return Source(f"{b}{name}.{kind}")
    return Source(f"{b}{'intermediate.dense' if proj == 'fc' else 'output.dense'}.{kind}")


_LAYOUTS: dict[str, tuple[Layout, tuple[str, ...], str]] = {
    # family: (layout, base-module prefixes to try, the embedding tensor that finds the prefix)
    "llama": (_llama_like, ("model.", ""), "embed_tokens.weight"),
    "mistral": (_llama_like, ("model.", ""), "embed_tokens.weight"),
    "mixtral": (_llama_like, ("model.", ""), "embed_tokens.weight"),
    "qwen2": (_llama_like, ("model.", ""), "embed_tokens.weight"),
    "gemma2": (_llama_like, ("model.", ""), "embed_tokens.weight"),
    "gpt2": (_gpt2, ("transformer.", ""), "wte.weight"),
    "opt": (_opt, ("model.decoder.", "decoder."), "embed_tokens.weight"),
    "falcon": (_falcon, ("transformer.", ""), "word_embeddings.weight"),
    "bert": (_bert, ("", "bert."), "embeddings.word_embeddings.weight"),
}


# ----- the checkpoint ------------------------------------------------------------------------
def _canonical(layer: str, param: str) -> tuple[str, int | None, str]:
    """(layer kind, block index, the parameter's name within a whole block) for a parameter of
    chain layer ``layer``: op layers hold their part of a block under ``norm.`` or ``inner.``."""
    if layer in ("embed", "head"):
        return layer, None, param
    block, _, op = layer.partition(".")
    index = int(block.removeprefix("block"))
    if not op:
        return "block", index, param
    if op.endswith("norm"):
        return "block", index, f"{op}.{param.removeprefix('norm.')}"
    inner = param.removeprefix("inner.")
    return "block", index, f"{'attn' if op == 'attn' else 'mlp'}.{inner}"


class Checkpoint:
    """One checkpoint directory, its model, and its tensors by name."""

    def __init__(self, directory: Path, config: dict[str, Any], name: str,
                 spec: TransformerSpec, numerics: Numerics, tensors: TensorIndex) -> None:
        self.directory = directory
        self.config = config
        self.name = name
        self.spec = spec
        self.numerics = numerics
        self.tensors = tensors
        family = str(config.get("model_type"))
        family = "falcon" if family in ("RefinedWeb", "RefinedWebModel") else family
        if family not in _LAYOUTS:
            raise SpecError(f"{directory}: model_type {family!r} has no checkpoint layout")
        self.layout, prefixes, probe = _LAYOUTS[family]
        found = [p for p in prefixes if p + probe in tensors]
        if not found:
            raise SpecError(f"{directory}: no {prefixes[0]}{probe}: the safetensors files do not "
                            f"hold a {family} model's weights")
        self.prefix = found[0]

    @classmethod
    def open(cls, directory: str | Path) -> Checkpoint:
        """Read config.json and the safetensors headers; SpecError names what is wrong."""
        path = Path(directory)
        if not path.is_dir():
            raise SpecError(f"{path}: not a directory")
        config = read_config(path)
        source = str(path / CONFIG_FILE)
        name, spec = spec_from_hf_config(config, source)
        quant = config.get("quantization_config")
        if quant:
            method = quant.get("quant_method") if isinstance(quant, dict) else quant
            raise SpecError(f"{source}: quantization_config ({method}): a quantized checkpoint "
                            "is planned, not run (the runner computes in fp32, bf16 or fp16)")
        numerics = numerics_from_hf_config(config, spec, source)
        return cls(path, config, name, spec, numerics, TensorIndex(path))

    def source(self, layer: str, param: str) -> Source:
        kind, block, canonical = _canonical(layer, param)
        try:
            src = self.layout(self, kind, block, canonical)
        except (KeyError, ValueError, IndexError):
            raise SpecError(f"{self.directory}: layer {layer!r}: no checkpoint tensor for "
                            f"{param!r}") from None
        if src.name not in self.tensors and ".LayerNorm." in src.name:
            # BERT's original conversions name a LayerNorm's scale and shift gamma and beta
            legacy = src.name.replace(".weight", ".gamma").replace(".bias", ".beta")
            if legacy in self.tensors:
                return Source(legacy)
        return src

    def _targets(self, module: nn.Module) -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = list(module.named_parameters())
        out += [(n, b) for n, b in module.named_buffers() if n.endswith("tied_weight")]
        return out

    def check_tensors(self, layers: Iterable[str]) -> int:
        """Every tensor ``layers`` need exists with a shape that gives theirs; the bytes they
        hold in the checkpoint. Headers only: nothing is read."""
        from .torch_ref import _meta_layer

        needed: dict[str, tuple[int, ...]] = {}
        for layer in layers:
            module = _meta_layer(self.spec, layer, self.numerics)
            for param, tensor in self._targets(module):
                src = self.source(layer, param)
                entry = self.tensors.entry(src.name)
                if src.whole is not None and entry.shape != src.whole:
                    raise SpecError(f"{entry.path.name}: {src.name}: shape {entry.shape}, but "
                                    f"this model's is {src.whole}")
                shape = self._shape(entry.shape, src)
                if shape != tuple(tensor.shape):
                    raise SpecError(f"{entry.path.name}: {src.name}: shape {entry.shape} does "
                                    f"not give layer {layer!r}'s {param} {tuple(tensor.shape)}")
                needed[src.name] = entry.shape
        return sum(self.tensors.entry(n).nbytes for n in needed)

    @staticmethod
    def _shape(shape: tuple[int, ...], src: Source) -> tuple[int, ...] | None:
        if src.index is not None:
            if not shape or src.index >= shape[0]:
                return None
            shape = shape[1:]
        if src.transpose:
            if len(shape) != 2:
                return None
            shape = (shape[1], shape[0])
        if src.rows is not None:
            if not shape or (src.rows and max(src.rows) >= shape[0]):
                return None
            shape = (len(src.rows), *shape[1:])
        return shape

    def load_layer(self, module: nn.Module, layer: str) -> None:
        """Fill ``module`` (chain layer ``layer``, allocated on its device) from the checkpoint:
        each source tensor read once, sliced, cast and copied in."""
        from collections import Counter

        import torch

        plan = [(param, target, self.source(layer, param))
                for param, target in self._targets(module)]
        # a fused tensor (q, k and v in one) is read once and dropped after its last part
        uses = Counter(src.name for _, _, src in plan)
        cache: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for param, target, src in plan:
                plain = src.index is None and not src.transpose and src.rows is None
                if plain and uses[src.name] == 1 and self.tensors.read_into(src.name, target):
                    uses[src.name] = 0  # read in place: the common case costs no buffer
                    continue
                if src.name not in cache:
                    cache[src.name] = self.tensors.read(src.name)
                    if src.whole is not None and tuple(cache[src.name].shape) != src.whole:
                        raise SpecError(f"{self.directory}: {src.name}: shape "
                                        f"{tuple(cache[src.name].shape)}, but this model's is "
                                        f"{src.whole}")
                value = cache[src.name]
                if src.index is not None:
                    value = value[src.index]
                if src.transpose:
                    value = value.t()
                if src.rows is not None:
                    value = value[torch.tensor(src.rows, dtype=torch.long)]
                if tuple(value.shape) != tuple(target.shape):
                    raise SpecError(f"{self.directory}: {src.name}: shape {tuple(value.shape)} "
                                    f"does not match layer {layer!r}'s {param} "
                                    f"{tuple(target.shape)}")
                target.copy_(value.to(dtype=target.dtype))
                uses[src.name] -= 1
                if not uses[src.name]:
                    del cache[src.name]
