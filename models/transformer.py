"""Transformer architectures (decoders, encoders, ViT) and their layer chains.

Parameter counts follow the Hugging Face module layouts: embeddings, every block, the final
norm, and an untied LM head where the model has one. A decoder read from a quantized checkpoint
also says which of its Linear weights are stored packed, and in how many bytes (models/quant.py).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from .errors import SpecError
from .layers import AttentionShape, LayerDesc
from .quant import QuantConfig, Role, linear_bytes
from .textio import shorten

__all__ = ["ATTENTION_ROLES", "Granularity", "TransformerSpec"]

Granularity = Literal["block", "op"]

ATTENTION_ROLES: frozenset[str] = frozenset({"q", "k", "v", "qkv", "o"})
"""Block Linear roles that belong to the attention (the rest are the MLP's or the MoE's)."""


@dataclass(frozen=True)
class TransformerSpec:
    """A transformer described by its dimensions and the layout facts its family implies."""

    hidden: int
    layers: int
    heads: int
    ffn: int
    kv_heads: int | None = None
    head_dim: int | None = None
    vocab: int = 0
    """0: no token embedding and no LM head (a bare stack of blocks)."""
    kind: Literal["decoder", "encoder", "vit"] = "decoder"
    mlp: Literal["gated", "plain"] = "gated"
    norm: Literal["rmsnorm", "layernorm"] = "rmsnorm"
    norms_per_layer: int = 2
    """2 (pre-attention, pre-MLP); 1 for a parallel block; 4 for Gemma-2's sandwich norms."""
    attn_bias: bool = False
    """Biases on Q, K, V and the output projection."""
    qkv_bias: bool = False
    """Biases on Q, K, V only (Qwen2)."""
    mlp_bias: bool = False
    lm_head: bool = True
    tied_embeddings: bool = False
    positions: int = 0
    """Learned position embeddings (0: rotary or none)."""
    context: int = 0
    """The longest sequence the model is made for (a rotary model's max_position_embeddings);
    0: not stated. Learned positions bound it as well."""
    token_types: int = 0
    embed_norm: bool = False
    final_norm: bool = True
    pooler: bool = False
    experts: int = 0
    """Mixture of experts: experts per layer (0: dense MLP)."""
    experts_per_token: int = 0
    classes: int = 0
    """ViT: classifier outputs."""
    image: int = 0
    patch: int = 0
    channels: int = 3
    fused_qkv: bool = False
    """Q, K and V in one Linear (Falcon's query_key_value): the same parameters, but a quantized
    checkpoint packs and scales each Linear on its own."""
    quantization: QuantConfig | None = None
    """The quantized checkpoint's format and which Linear weights it packs (decoders only);
    None: every parameter is stored in the workload's weight dtype."""

    def __post_init__(self) -> None:
        choices = {"kind": ("decoder", "encoder", "vit"), "mlp": ("gated", "plain"),
                   "norm": ("rmsnorm", "layernorm")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise SpecError(f"{name}: expected one of {', '.join(allowed)}, "
                                f"got {shorten(getattr(self, name))}")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type in ("bool",) and not isinstance(value, bool):
                raise SpecError(f"{f.name}: expected true or false, got {shorten(value)}")
            if f.type in ("int", "int | None") and value is not None and \
                    (isinstance(value, bool) or not isinstance(value, int)):
                raise SpecError(f"{f.name}: expected a whole number, got {shorten(value)}")
        for name in ("head_dim", "kv_heads"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise SpecError(f"{name}: must be a positive whole number, got {shorten(value)}")
        if self.channels <= 0:
            raise SpecError(f"channels: must be a positive whole number, got {shorten(self.channels)}")
        if self.norms_per_layer not in (1, 2, 4):
            raise SpecError(f"norms_per_layer: expected 1, 2 or 4, got {shorten(self.norms_per_layer)}")
        for name in ("hidden", "layers", "heads", "ffn"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise SpecError(f"{name}: must be a positive whole number, got {shorten(value)}")
        for name in ("vocab", "positions", "context", "token_types", "experts", "experts_per_token",
                     "classes", "image", "patch"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise SpecError(f"{name}: must be a whole number >= 0, got {shorten(value)}")
        if self.kv_heads is not None and (self.kv_heads <= 0 or self.heads % self.kv_heads):
            raise SpecError(f"kv_heads: must divide heads ({self.heads}), got {shorten(self.kv_heads)}")
        if self.head_dim is None and self.hidden % self.heads:
            raise SpecError(f"heads: {self.heads} does not divide hidden {self.hidden}; "
                            "give head_dim")
        if self.experts and not 0 < self.experts_per_token <= self.experts:
            raise SpecError(f"experts_per_token: must be in 1..{self.experts}, "
                            f"got {shorten(self.experts_per_token)}")
        if self.kind == "vit" and (self.image <= 0 or self.patch <= 0 or self.image % self.patch):
            raise SpecError(f"patch: must divide image ({self.image}), got {self.patch!r}")
        if self.quantization is not None:
            self._check_quantization(self.quantization)

    def _check_quantization(self, q: object) -> None:
        if not isinstance(q, QuantConfig):
            raise SpecError(f"quantization: expected a QuantConfig (a Hugging Face config.json's "
                            f"quantization_config, as models.hf reads it), got {q!r:.60}")
        if self.kind != "decoder":
            raise SpecError(f"quantization: modelled for decoders, not kind {self.kind!r}")
        roles = {role for role, *_ in self.block_linears()}
        for index, role in sorted(q.float_modules):
            if index >= self.layers or role not in roles:
                raise SpecError(f"quantization.float_modules: ({index}, {role!r}) is not a Linear "
                                f"of this model (blocks 0..{self.layers - 1}, roles "
                                f"{', '.join(sorted(roles))})")
        if q.head and (self.tied_embeddings or not self.lm_head or not self.vocab):
            raise SpecError("quantization.head: true, but this model has no untied LM head")
        shapes: list[tuple[str, int, int]] = [(r, i, o) for r, i, o, _ in self._packed_linears(q)]
        if q.head:
            shapes.append(("lm_head", self.hidden, self.vocab))
        for name, i, o in shapes:
            try:  # refuse a shape the format cannot pack before anything is counted
                linear_bytes(q, i, o)
            except SpecError as exc:
                raise SpecError(f"{exc} (the {name} Linear, {i} -> {o} features)") from None

    # ----- dimensions -------------------------------------------------------------------
    @property
    def dh(self) -> int:
        return self.head_dim if self.head_dim is not None else self.hidden // self.heads

    @property
    def kvh(self) -> int:
        return self.kv_heads if self.kv_heads is not None else self.heads

    @property
    def norm_params(self) -> int:
        return self.hidden * (2 if self.norm == "layernorm" else 1)

    @property
    def tokens_per_sample(self) -> int | None:
        if self.kind == "vit":
            return (self.image // self.patch) ** 2 + 1
        return None

    def attention_params(self) -> int:
        h, q, kv = self.hidden, self.heads * self.dh, self.kvh * self.dh
        weights = h * q + 2 * h * kv + q * h
        if self.attn_bias:
            return weights + q + 2 * kv + h
        if self.qkv_bias:
            return weights + q + 2 * kv
        return weights

    def expert_params(self) -> int:
        matrices = 3 if self.mlp == "gated" else 2
        weights = matrices * self.hidden * self.ffn
        if self.mlp_bias:
            weights += (matrices - 1) * self.ffn + self.hidden
        return weights

    def block_linears(self) -> list[tuple[Role, int, int, int]]:
        """(role, in_features, out_features, copies) of each Linear weight of a block, copies
        being one per expert: the block's parameters less its norms and biases."""
        h, q, kv, f = self.hidden, self.heads * self.dh, self.kvh * self.dh, self.ffn
        out: list[tuple[Role, int, int, int]] = (
            [("qkv", h, q + 2 * kv, 1)] if self.fused_qkv
            else [("q", h, q, 1), ("k", h, kv, 1), ("v", h, kv, 1)])
        out.append(("o", q, h, 1))
        if self.experts:
            e = self.experts
            out.append(("router", h, e, 1))
            if self.mlp == "gated":
                out.append(("expert_gate", h, f, e))
            out += [("expert_up", h, f, e), ("expert_down", f, h, e)]
        else:
            if self.mlp == "gated":
                out.append(("gate", h, f, 1))
            out += [("up", h, f, 1), ("down", f, h, 1)]
        return out

    def _packed_linears(self, q: QuantConfig) -> list[tuple[Role, int, int, int]]:
        """block_linears() less the roles that no block quantizes."""
        return [linear for linear in self.block_linears()
                if any(q.quantizes(b, linear[0]) for b in range(self.layers))]

    def _quantized_blocks(self) -> list[tuple[tuple[int, int], tuple[int, int]]]:
        """Per block, (params, bytes) stored quantized in its attention and in its MLP/MoE."""
        q = self.quantization
        if q is None:
            return [((0, 0), (0, 0))] * self.layers
        shapes = [(role, count * i * o, count * linear_bytes(q, i, o))
                  for role, i, o, count in self._packed_linears(q)]
        out = []
        for b in range(self.layers):
            parts = [[0, 0], [0, 0]]  # attention, mlp
            for role, params, nbytes in shapes:
                if q.quantizes(b, role):
                    part = parts[0 if role in ATTENTION_ROLES else 1]
                    part[0] += params
                    part[1] += nbytes
            out.append(((parts[0][0], parts[0][1]), (parts[1][0], parts[1][1])))
        return out

    def mlp_params(self) -> tuple[int, int]:
        """(stored, read per token) parameters of one block's MLP or MoE."""
        if not self.experts:
            p = self.expert_params()
            return p, p
        router = self.hidden * self.experts
        return (self.experts * self.expert_params() + router,
                self.experts_per_token * self.expert_params() + router)

    # ----- training stash ------------------------------------------------------------------
    # What a layer saves for its backward pass, in elements per token (LayerDesc.stash_elems),
    # after Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer
    # Models", Section 4.1, generalised to GQA, gated MLPs and mixtures of experts. No dropout:
    # the zoo's decoders train without it, so no masks are counted (their 34 sbh of a GPT block
    # less the 2 sbh of the two 1-byte masks is the 16 h elements = 32 sbh bytes counted here).
    # The attention score matrix (heads x seq x seq per sample) is not here: it grows with the
    # sequence, and the training footprint adds it when the attention runs eager.
    def attention_stash(self) -> int:
        """The attention's saved tensors per token: the QKV projection input (h), Q, K and V,
        and the attention output, which is the output projection's input."""
        q, kv = self.heads * self.dh, self.kvh * self.dh
        return self.hidden + q + 2 * kv + q

    def mlp_stash(self) -> int:
        """The MLP's (or MoE's) saved tensors per token: its input (h) and the intermediates,
        gated: the gate and up outputs and the down projection's input (3 f); plain: the
        activation's input and the down projection's input (2 f). A mixture of experts saves
        that once per routed expert (each expert keeps its copy of the dispatched token) plus
        the router's input."""
        per_expert = self.hidden + (3 if self.mlp == "gated" else 2) * self.ffn
        if not self.experts:
            return per_expert
        return self.experts_per_token * per_expert + self.hidden

    def block_stash(self) -> int:
        """A block's saved tensors per token: each norm's input (h), the attention's and the
        MLP's; the sum of the op-granularity layers' stash."""
        return self.norms_per_layer * self.hidden + self.attention_stash() + self.mlp_stash()

    def head_stash(self) -> int:
        """The head's saved tensors per token: the final norm's input, the output layer's input,
        and its output where a loss follows (the logits for the cross-entropy, counted at the
        activation dtype though frameworks often upcast them to fp32 for the loss)."""
        h = self.hidden
        norm = h if self.final_norm else 0
        if self.kind == "decoder" and self.lm_head and self.vocab:
            return norm + h + self.vocab
        if self.kind == "vit":
            return norm + h + self.classes
        if self.kind == "encoder" and self.pooler:
            return norm + 2 * h  # the pooler's input and its tanh output
        return norm

    def embed_params(self) -> int:
        if self.kind == "vit":
            patch = self.channels * self.patch**2 * self.hidden + self.hidden
            return patch + self.hidden + (self.tokens_per_sample or 0) * self.hidden
        p = self.vocab * self.hidden + self.positions * self.hidden
        p += self.token_types * self.hidden
        return p + (self.norm_params if self.embed_norm else 0)

    def head_params(self) -> tuple[int, int]:
        """(owned, stored) parameters of the final norm plus the output layer."""
        norm = self.norm_params if self.final_norm else 0
        if self.kind == "vit":
            p = norm + self.hidden * self.classes + self.classes
            return p, p
        if self.kind == "encoder":
            p = norm + (self.hidden * self.hidden + self.hidden if self.pooler else 0)
            return p, p
        if not self.lm_head or not self.vocab:
            return norm, norm
        matrix = self.vocab * self.hidden
        return (norm, norm + matrix) if self.tied_embeddings else (norm + matrix, norm + matrix)

    def params(self) -> int:
        """Total parameters (a tied head counted once)."""
        return sum(layer.params for layer in self.layer_descs("block"))

    def active_params(self) -> int:
        return sum(layer.read_params if layer.kind != "head" else layer.params
                   for layer in self.layer_descs("block"))

    # ----- the chain ----------------------------------------------------------------------
    def layer_descs(self, granularity: Granularity = "block") -> list[LayerDesc]:
        if granularity not in ("block", "op"):
            raise SpecError(f"granularity: expected 'block' or 'op', got {granularity!r}")
        h = self.hidden
        tps = self.tokens_per_sample
        attn_shape = AttentionShape(self.heads, self.kvh, self.dh, causal=self.kind == "decoder")
        attn_p = self.attention_params()
        mlp_stored, mlp_read = self.mlp_params()
        qkv_elems = (self.heads + 2 * self.kvh) * self.dh
        inter = self.ffn * (2 if self.mlp == "gated" else 1) * max(1, self.experts_per_token)
        norms = self.norms_per_layer * self.norm_params
        attn_stash, mlp_stash = self.attention_stash(), self.mlp_stash()
        block_stash = self.block_stash()

        quantized = self._quantized_blocks()

        out: list[LayerDesc] = []
        embed_p = self.embed_params()
        if embed_p:
            flops = 2 * self.channels * self.patch**2 * h if self.kind == "vit" else 0
            # Token ids (or a ViT's pixels, which the input batch holds) are not stashed; an
            # embedding LayerNorm saves its input.
            out.append(LayerDesc("embed", "embed", embed_p, out_elems=h, flops=flops,
                                 stash_elems=h if self.embed_norm else 0,
                                 tokens_per_sample=tps))
        for i in range(self.layers):
            (attn_qp, attn_qb), (mlp_qp, mlp_qb) = quantized[i]
            if granularity == "block":
                out.append(LayerDesc(
                    f"block{i}", "block", attn_p + mlp_stored + norms, out_elems=h,
                    flops=2 * (attn_p + mlp_read), buffer_elems=max(qkv_elems, inter),
                    stash_elems=block_stash,
                    active_params=(attn_p + mlp_read + norms) if self.experts else None,
                    attention=attn_shape, tokens_per_sample=tps,
                    quantized_params=attn_qp + mlp_qp, quantized_bytes=attn_qb + mlp_qb))
                continue
            # Op granularity: the residual stream travels with a norm's output (2h per token).
            def norm(tag: str, i: int = i) -> LayerDesc:
                return LayerDesc(f"block{i}.{tag}", "norm", self.norm_params, out_elems=2 * h,
                                 stash_elems=h, tokens_per_sample=tps)

            post = self.norms_per_layer == 4
            out.append(norm("attn_norm"))
            out.append(LayerDesc(f"block{i}.attn", "attention", attn_p, out_elems=h,
                                 flops=2 * attn_p, buffer_elems=qkv_elems,
                                 stash_elems=attn_stash, attention=attn_shape,
                                 tokens_per_sample=tps, quantized_params=attn_qp,
                                 quantized_bytes=attn_qb))
            if post:
                out.append(norm("post_attn_norm"))
            if self.norms_per_layer >= 2:
                out.append(norm("mlp_norm"))
            out.append(LayerDesc(
                f"block{i}.{'moe' if self.experts else 'mlp'}", "moe" if self.experts else "mlp",
                mlp_stored, out_elems=h, flops=2 * mlp_read, buffer_elems=inter,
                stash_elems=mlp_stash,
                active_params=mlp_read if self.experts else None, tokens_per_sample=tps,
                quantized_params=mlp_qp, quantized_bytes=mlp_qb))
            if post:
                out.append(norm("post_mlp_norm"))
        owned, stored = self.head_params()
        if owned or stored:
            if self.kind == "decoder" and self.lm_head and self.vocab:
                width, flops = self.vocab, 2 * self.vocab * h
            elif self.kind == "vit":
                width, flops = self.classes, 2 * self.classes * h
            else:
                width, flops = h, 2 * (owned - (self.norm_params if self.final_norm else 0))
            head_qp = head_qb = 0
            if self.quantization is not None and self.quantization.head:
                head_qp, head_qb = self.vocab * h, linear_bytes(self.quantization, h, self.vocab)
            lm = self.kind == "decoder" and bool(self.lm_head and self.vocab)
            out.append(LayerDesc("head", "head", owned, out_elems=width, flops=flops,
                                 stash_elems=self.head_stash(),
                                 stored_params=stored if stored != owned else None,
                                 tokens_per_sample=tps, quantized_params=head_qp,
                                 quantized_bytes=head_qb, last_token=lm))
        return out
