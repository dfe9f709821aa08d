"""torch implementations of the zoo's and the Hugging Face families' transformers, one module
per layer of the chain.

The runner builds a pipeline stage from a plan's layer names, so every layer of
``TransformerSpec.layer_descs()`` is a self-contained ``nn.Module`` here:

- ``embed``: token ids (batch, seq) int64 -> hidden states (learned positions, token types,
  an embedding norm or scale where the family has them);
- ``block{i}``: hidden -> hidden; rotary tables and masks are computed inside every block from
  the positions, so only the hidden state crosses a stage boundary;
- ``block{i}.attn_norm`` .. ``block{i}.mlp`` at op granularity: a norm passes
  ``(normed, residual)`` on, the next op adds its output back into the residual;
- ``head``: final norm and LM head (soft-capped for Gemma-2), or an encoder's pooler, which
  returns ``(last hidden state, pooled)``. A tied head owns no parameters: it keeps its own copy
  of the embedding matrix as a buffer.

How a layer computes (norm eps and form, activation, rotary base and scaling, attention scale,
soft-capping, sliding windows, the block's wiring) comes from ``models.numerics.Numerics``:
the zoo's defaults, or what a Hugging Face config says (llama, mistral, mixtral, qwen2, gemma2,
gpt2, opt, falcon, bert), so a checkpoint's weights give transformers' outputs.

Weights: synthetic and deterministic (each layer built on the meta device, then filled from a
CPU generator seeded by (seed, layer name), so every rank draws what the single-process
reference draws), or a checkpoint's, read tensor by tensor for the layers asked for
(models/checkpoint.py).

Decoding: the layers of a stage share a ``StageState``; while it caches, every attention layer
keeps its keys and values per micro-batch and positions continue from what the micro-batch has
seen, so a stage runs prefill and then one token at a time. torch is imported here at module
level: import this module only where torch is needed.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from .errors import SpecError
from .numerics import Numerics, Rope
from .transformer import TransformerSpec

if TYPE_CHECKING:
    from .checkpoint import Checkpoint

__all__ = [
    "DEFAULT_ROPE_THETA",
    "Chain",
    "Generation",
    "StageState",
    "build_chain",
    "build_layer",
    "greedy_generate",
    "layer_generator",
    "layer_names",
    "output_arity",
]

DEFAULT_ROPE_THETA = 10000.0
_ZOO = Numerics()


# ----- deterministic weights ----------------------------------------------------------------
def layer_generator(seed: int, name: str) -> torch.Generator:
    """A CPU generator seeded by (seed, layer name): the same stream on every rank."""
    digest = hashlib.sha256(f"{seed}/{name}".encode()).digest()
    gen = torch.Generator(device="cpu")
    gen.manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
    return gen


def _draw(gen: torch.Generator, shape: Sequence[int], pname: str) -> torch.Tensor:
    """One tensor by shape and name: matrices scaled by 1/sqrt(fan-in) (well-conditioned
    activations through many layers), norm scales near 1, biases small."""
    x = torch.randn(tuple(shape), generator=gen, dtype=torch.float32)
    if len(shape) >= 2:
        fan_in = math.prod(shape[1:])
        return x / math.sqrt(fan_in)
    if pname.rsplit(".", 1)[-1] == "weight":
        return 1.0 + 0.1 * x
    return 0.02 * x


def _allocate(module: nn.Module, device: torch.device | str, dtype: torch.dtype) -> None:
    if dtype.is_floating_point:
        module.to(dtype)  # floating tensors only: a batch norm's counter stays an integer
    module.to_empty(device=device)


def _finish(module: nn.Module) -> nn.Module:
    module.eval()
    module.requires_grad_(False)
    return module


@torch.no_grad()
def _materialise(module: nn.Module, name: str, seed: int, device: torch.device | str,
                 dtype: torch.dtype) -> nn.Module:
    """Allocate a meta-built module on ``device`` and fill it from the layer's generator.

    Parameters are drawn in registration order, on the CPU in float32 and then cast, so the
    values do not depend on the device or on which other layers the process builds.
    """
    _allocate(module, device, dtype)
    gen = layer_generator(seed, name)
    for pname, p in module.named_parameters():
        p.copy_(_draw(gen, p.shape, pname))
    for b in module.buffers():
        # to_empty leaves garbage; a buffer's real value is lost with the meta build (noted in
        # the module docstring), zero is at least the same in every process
        b.zero_()
    for sub in module.modules():
        if isinstance(sub, Head):
            sub.fill_buffers(seed, device, dtype)
        elif isinstance(sub, nn.modules.batchnorm._NormBase):  # mean 0, variance 1
            sub.reset_running_stats()
    return _finish(module)


# ----- decoding state -----------------------------------------------------------------------
class StageState:
    """What a stage's layers share while they decode: which micro-batch runs, how many
    positions each micro-batch has seen, and every attention layer's keys and values.

    Micro-batches run in order 0 .. M-1 at every step (GPipe), so the stage advances the slot
    after each forward. Off (the default), layers compute a whole sequence from position 0
    and keep nothing.
    """

    def __init__(self) -> None:
        self.caching = False
        self.microbatches = 1
        self.slot = 0
        self.seen: dict[int, int] = {}
        self.kv: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def start(self, microbatches: int) -> None:
        """Begin a generation: empty caches, micro-batch 0 next."""
        self.caching, self.microbatches, self.slot = True, microbatches, 0
        self.seen, self.kv = {}, {}

    def stop(self) -> None:
        self.caching, self.slot, self.seen, self.kv = False, 0, {}, {}

    @property
    def offset(self) -> int:
        return self.seen.get(self.slot, 0) if self.caching else 0

    def advance(self, tokens: int) -> None:
        if self.caching:
            self.seen[self.slot] = self.offset + tokens
            self.slot = (self.slot + 1) % self.microbatches


class _Stateful(nn.Module):
    """A layer that reads the stage's decoding state (set by ``Chain.attach``)."""

    state: StageState | None = None

    def offset(self) -> int:
        return self.state.offset if self.state is not None else 0


# ----- building blocks ----------------------------------------------------------------------
class RMSNorm(nn.Module):
    """llama's form (the weight times the normalised input cast back), or Gemma's (times
    1 + weight, in float32, then cast)."""

    def __init__(self, hidden: int, eps: float, offset: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(hidden))
        self.eps = eps
        self.offset = offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.offset:
            return (xf * (1.0 + self.weight.float())).type_as(x)
        return self.weight * xf.to(x.dtype)


def _norm(spec: TransformerSpec, nx: Numerics) -> nn.Module:
    if spec.norm == "layernorm":
        return nn.LayerNorm(spec.hidden, eps=nx.norm_eps)
    return RMSNorm(spec.hidden, nx.norm_eps, nx.rms_offset)


def _activate(name: str, x: torch.Tensor) -> torch.Tensor:
    if name == "silu":
        return F.silu(x)
    if name == "gelu":
        return F.gelu(x)
    if name == "gelu_tanh":
        return F.gelu(x, approximate="tanh")
    if name == "relu":
        return F.relu(x)
    return x * torch.sigmoid(1.702 * x)  # quick_gelu (Numerics admits no other name)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _inverse_frequencies(rope: Rope, dim: int, device: torch.device) -> torch.Tensor:
    """transformers' formulas, in float32 as it computes them."""
    inv = 1.0 / (rope.theta ** (torch.arange(0, dim, 2, device=device).float() / dim))
    if rope.kind == "linear":
        return inv / rope.factor
    if rope.kind == "llama3":
        low_wavelen = rope.original_max_positions / rope.low_freq_factor
        high_wavelen = rope.original_max_positions / rope.high_freq_factor
        wavelen = 2 * math.pi / inv
        scaled = torch.where(wavelen > low_wavelen, inv / rope.factor, inv)
        smooth = (rope.original_max_positions / wavelen - rope.low_freq_factor) / \
            (rope.high_freq_factor - rope.low_freq_factor)
        smoothed = (1 - smooth) * scaled / rope.factor + smooth * scaled
        medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
        return torch.where(medium, smoothed, scaled)
    return inv


def _rotary(positions: torch.Tensor, dim: int, rope: Rope,
            dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables (seq, dim) at ``positions``, rebuilt per call: only hidden states
    cross a stage boundary, and a table this size costs far less than the attention it feeds."""
    freqs = positions.float()[:, None] * _inverse_frequencies(rope, dim, positions.device)[None]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


class Attention(_Stateful):
    """Multi-head attention with grouped KV heads: rotary where the model has no learned
    positions, causal for decoders, a sliding window and soft-capped scores where the family
    has them, keys and values cached per micro-batch while the stage decodes."""

    def __init__(self, spec: TransformerSpec, nx: Numerics, block: int) -> None:
        super().__init__()
        h, q, kv = spec.hidden, spec.heads * spec.dh, spec.kvh * spec.dh
        qkv_bias = spec.attn_bias or spec.qkv_bias
        self.q_proj = nn.Linear(h, q, bias=qkv_bias)
        self.k_proj = nn.Linear(h, kv, bias=qkv_bias)
        self.v_proj = nn.Linear(h, kv, bias=qkv_bias)
        self.o_proj = nn.Linear(q, h, bias=spec.attn_bias)
        self.heads, self.kv_heads, self.head_dim = spec.heads, spec.kvh, spec.dh
        self.rope = nx.rotary() if spec.positions == 0 else None
        self.scale = nx.scale(spec.dh, block)
        self.softcap = nx.attn_softcap
        self.window = nx.window(block)
        self.causal = nx.causal
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        q = self.q_proj(x).view(b, s, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, s, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, s, self.kv_heads, self.head_dim).transpose(1, 2)
        offset = self.offset()
        if self.rope is not None:
            positions = torch.arange(offset, offset + s, device=x.device)
            cos, sin = _rotary(positions, self.head_dim, self.rope, q.dtype)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
        state = self.state
        if state is not None and state.caching:
            key = (self.block, state.slot)
            if key in state.kv:
                past_k, past_v = state.kv[key]
                k, v = torch.cat((past_k, k), dim=2), torch.cat((past_v, v), dim=2)
            state.kv[key] = (k, v)
        if self.kv_heads != self.heads:
            group = self.heads // self.kv_heads
            k = k.repeat_interleave(group, dim=1)
            v = v.repeat_interleave(group, dim=1)
        out = self._attend(q, k, v, offset)
        return self.o_proj(out.transpose(1, 2).reshape(b, s, self.heads * self.head_dim))

    def _mask(self, s: int, total: int, offset: int, device: torch.device) -> torch.Tensor | None:
        """Which keys each query sees (True: attend), or None for every key."""
        if not self.causal:
            return None
        if self.window is None and s == 1:
            return None  # one new token sees everything cached
        query = torch.arange(offset, offset + s, device=device)[:, None]
        keys = torch.arange(total, device=device)[None, :]
        allowed = keys <= query
        if self.window is not None:
            allowed &= keys > query - self.window
        return allowed

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                offset: int) -> torch.Tensor:
        s, total = q.shape[2], k.shape[2]
        plain_causal = self.causal and self.window is None and offset == 0 and s == total
        if self.softcap is None:
            if plain_causal:
                return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
            mask = self._mask(s, total, offset, q.device)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)
        # soft-capped scores (Gemma-2): tanh(scores / cap) * cap before the mask
        scores = torch.matmul(q, k.transpose(-1, -2)) * self.scale
        scores = torch.tanh(scores / self.softcap) * self.softcap
        mask = self._mask(s, total, offset, q.device)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        return torch.matmul(probs, v)


class MLP(nn.Module):
    """Gated (down(act(gate x) * up x)) or plain (proj(act(fc x)))."""

    def __init__(self, spec: TransformerSpec, nx: Numerics) -> None:
        super().__init__()
        h, f, bias = spec.hidden, spec.ffn, spec.mlp_bias
        self.gated = spec.mlp == "gated"
        self.act = nx.act(spec)
        if self.gated:
            self.gate_proj = nn.Linear(h, f, bias=bias)
            self.up_proj = nn.Linear(h, f, bias=bias)
            # LayerDesc counts (matrices - 1) * ffn + hidden bias elements: gate, up and down
            self.down_proj = nn.Linear(f, h, bias=bias)
        else:
            self.fc = nn.Linear(h, f, bias=bias)
            self.proj = nn.Linear(f, h, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gated:
            return self.down_proj(_activate(self.act, self.gate_proj(x)) * self.up_proj(x))
        return self.proj(_activate(self.act, self.fc(x)))


class MoE(nn.Module):
    """Top-k routed experts (Mixtral): softmax over all experts' router logits in float32, the
    top k renormalised to sum to one."""

    def __init__(self, spec: TransformerSpec, nx: Numerics) -> None:
        super().__init__()
        self.router = nn.Linear(spec.hidden, spec.experts, bias=False)
        self.experts = nn.ModuleList(MLP(spec, nx) for _ in range(spec.experts))
        self.top_k = spec.experts_per_token

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        probs = torch.softmax(self.router(flat).float(), dim=-1)
        weights, chosen = torch.topk(probs, self.top_k, dim=-1)
        weights = weights / weights.sum(dim=-1, keepdim=True)
        out = torch.zeros_like(flat)
        # experts in a fixed order, each token's rows independent of the batch it is in:
        # a micro-batch gives the same sums as the whole batch
        for e, expert in enumerate(self.experts):
            rows, slot = torch.nonzero(chosen == e, as_tuple=True)
            if rows.numel():
                out.index_add_(0, rows, (expert(flat[rows]) * weights[rows, slot, None]).to(x.dtype))
        return out.reshape(shape)


def _ffn(spec: TransformerSpec, nx: Numerics) -> nn.Module:
    return MoE(spec, nx) if spec.experts else MLP(spec, nx)


_NORMS = {"parallel": 1, "sandwich": 4}


def _style(spec: TransformerSpec, nx: Numerics) -> str:
    style = nx.block_style(spec)
    if _NORMS.get(style, 2) != spec.norms_per_layer:
        raise SpecError(f"torch reference: a {style} block has {_NORMS.get(style, 2)} norms, "
                        f"the spec {spec.norms_per_layer}")
    return style


class Block(nn.Module):
    """One transformer block, wired as Numerics.block_style says."""

    def __init__(self, spec: TransformerSpec, nx: Numerics, index: int) -> None:
        super().__init__()
        self.style = _style(spec, nx)
        self.attn_norm = _norm(spec, nx)
        self.attn = Attention(spec, nx, index)
        if self.style == "sandwich":
            self.post_attn_norm = _norm(spec, nx)
        if self.style != "parallel":
            self.mlp_norm = _norm(spec, nx)
        self.mlp = _ffn(spec, nx)
        if self.style == "sandwich":
            self.post_mlp_norm = _norm(spec, nx)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.style == "parallel":
            n = self.attn_norm(x)
            return x + self.attn(n) + self.mlp(n)
        if self.style == "parallel2":
            return x + self.attn(self.attn_norm(x)) + self.mlp(self.mlp_norm(x))
        if self.style == "post":
            x = self.attn_norm(x + self.attn(x))
            return self.mlp_norm(x + self.mlp(x))
        a = self.attn(self.attn_norm(x))
        x = x + (self.post_attn_norm(a) if self.style == "sandwich" else a)
        m = self.mlp(self.mlp_norm(x))
        return x + (self.post_mlp_norm(m) if self.style == "sandwich" else m)


class NormOp(nn.Module):
    """Op granularity: a pre-norm passes (normed, residual); a post-norm closes the residual."""

    def __init__(self, spec: TransformerSpec, nx: Numerics, post: bool) -> None:
        super().__init__()
        self.norm = _norm(spec, nx)
        self.post = post

    def forward(self, *xs: torch.Tensor) -> Any:
        if self.post:
            out, residual = xs
            return residual + self.norm(out)
        (x,) = xs
        return self.norm(x), x


class SubOp(nn.Module):
    """Op granularity: attention or MLP on (normed, residual).

    ``mode`` add: residual + f(normed); defer: (f(normed), residual) for a post-norm to close;
    keep: (normed, residual + f(normed)) for the block's other branch (attention of a
    parallel block)."""

    def __init__(self, inner: nn.Module, mode: str) -> None:
        super().__init__()
        self.inner = inner
        self.mode = mode

    def forward(self, normed: torch.Tensor, residual: torch.Tensor) -> Any:
        out = self.inner(normed)
        if self.mode == "defer":
            return out, residual
        if self.mode == "keep":
            return normed, residual + out
        return residual + out


class Embed(_Stateful):
    def __init__(self, spec: TransformerSpec, nx: Numerics) -> None:
        super().__init__()
        # tok first: a tied head redraws this matrix as the first tensor of the generator
        self.tok = nn.Embedding(spec.vocab, spec.hidden)
        self.pos = nn.Embedding(spec.positions, spec.hidden) if spec.positions else None
        self.types = nn.Embedding(spec.token_types, spec.hidden) if spec.token_types else None
        self.norm = _norm(spec, nx) if spec.embed_norm else None
        self.scale = nx.embed_scale
        self.position_offset = nx.position_offset

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.tok(ids)
        if self.scale is not None:  # Gemma: the scale rounded to the weights' dtype first
            x = x * torch.tensor(self.scale, dtype=torch.float32).to(x.dtype)
        if self.types is not None:  # one segment: type 0 everywhere
            x = x + self.types.weight[0]
        if self.pos is not None:
            start = self.offset() + self.position_offset
            if start + ids.shape[1] > self.pos.num_embeddings:
                raise SpecError(f"position {start + ids.shape[1] - 1 - self.position_offset} is "
                                f"past the model's {self.pos.num_embeddings - self.position_offset}"
                                " learned positions")
            positions = torch.arange(start, start + ids.shape[1], device=ids.device)
            x = x + self.pos(positions)[None]
        return x if self.norm is None else self.norm(x)


class Head(nn.Module):
    """Final norm plus the LM head (soft-capped where the family caps it); a tied head's matrix
    is a buffer, not a parameter. An encoder's head is its pooler: (hidden, tanh(W h[:, 0]))."""

    def __init__(self, spec: TransformerSpec, nx: Numerics) -> None:
        super().__init__()
        self.norm = _norm(spec, nx) if spec.final_norm else None
        self.tied = spec.tied_embeddings
        self.shape = (spec.vocab, spec.hidden)
        self.softcap = nx.final_softcap
        self.lm_head: nn.Linear | None = None
        self.pooler: nn.Linear | None = None
        if spec.kind == "encoder":
            if spec.pooler:
                self.pooler = nn.Linear(spec.hidden, spec.hidden)
        elif spec.lm_head and spec.vocab:
            if self.tied:
                self.register_buffer("tied_weight", torch.empty(self.shape), persistent=False)
            else:
                self.lm_head = nn.Linear(spec.hidden, spec.vocab, bias=False)

    def fill_buffers(self, seed: int, device: torch.device | str, dtype: torch.dtype) -> None:
        if self.tied and hasattr(self, "tied_weight"):
            # the embedding's generator, first draw: exactly the embedding's token matrix
            weight = _draw(layer_generator(seed, "embed"), self.shape, "tok.weight")
            self.tied_weight = weight.to(device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> Any:
        if self.norm is not None:
            x = self.norm(x)
        if self.pooler is not None:
            return x, torch.tanh(self.pooler(x[:, 0]))
        if self.lm_head is not None:
            logits = self.lm_head(x)
        elif self.tied and hasattr(self, "tied_weight"):
            logits = F.linear(x, self.tied_weight)
        else:
            return x
        if self.softcap is not None:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits


# ----- layers by name -----------------------------------------------------------------------
def _check_spec(spec: Any) -> TransformerSpec:
    if not isinstance(spec, TransformerSpec):
        raise SpecError(f"torch reference: expected a TransformerSpec, got {type(spec).__name__}")
    if spec.kind not in ("decoder", "encoder"):
        raise SpecError(f"torch reference: kind {spec.kind!r} is not supported (decoders and "
                        "encoders)")
    return spec


def layer_names(spec: TransformerSpec, granularity: str = "block") -> list[str]:
    """The chain's layer names, in order (``embed``, ``block0`` .., ``head``)."""
    return [d.name for d in spec.layer_descs(granularity)]  # type: ignore[arg-type]


_OP_STYLES = ("pre", "sandwich", "parallel")


def _op_module(spec: TransformerSpec, nx: Numerics, name: str) -> nn.Module:
    block, _, op = name.partition(".")
    style = _style(spec, nx)
    if style not in _OP_STYLES:
        raise SpecError(f"layer {name!r}: a {style} block runs at block granularity only "
                        f"(op granularity runs {', '.join(_OP_STYLES)} blocks)")
    if op in ("attn_norm", "mlp_norm"):
        return NormOp(spec, nx, post=False)
    if op in ("post_attn_norm", "post_mlp_norm"):
        return NormOp(spec, nx, post=True)
    if op == "attn":
        mode = {"sandwich": "defer", "parallel": "keep"}.get(style, "add")
        return SubOp(Attention(spec, nx, int(block.removeprefix("block"))), mode)
    if op in ("mlp", "moe"):
        return SubOp(_ffn(spec, nx), "defer" if style == "sandwich" else "add")
    raise SpecError(f"torch reference: unknown op {op!r}")


def output_arity(spec: TransformerSpec, name: str, numerics: Numerics | None = None) -> int:
    """How many tensors layer ``name`` outputs: 2 for a pre-norm op (normed, residual) and the
    ops that pass both on, 2 for an encoder head with a pooler, else 1."""
    nx = numerics or _ZOO
    if name == "head":
        return 2 if spec.kind == "encoder" and spec.pooler else 1
    op = name.partition(".")[2]
    if op in ("attn_norm", "mlp_norm"):
        return 2
    if op == "attn":
        return 2 if _style(spec, nx) in ("sandwich", "parallel") else 1
    if op in ("mlp", "moe"):
        return 2 if _style(spec, nx) == "sandwich" else 1
    return 1


def _meta_layer(spec: TransformerSpec, name: str, nx: Numerics) -> nn.Module:
    known = {d.name for d in spec.layer_descs("block")} | {d.name for d in spec.layer_descs("op")}
    if name not in known:
        raise SpecError(f"torch reference: no layer {name!r} in this model "
                        f"(layers: {', '.join(layer_names(spec))})")
    with torch.device("meta"):
        if name == "embed":
            return Embed(spec, nx)
        if name == "head":
            return Head(spec, nx)
        if "." in name:
            return _op_module(spec, nx, name)
        return Block(spec, nx, int(name.removeprefix("block")))


def build_layer(spec: TransformerSpec, name: str, *, device: torch.device | str = "cpu",
                dtype: torch.dtype = torch.float32, seed: int = 0,
                numerics: Numerics | None = None,
                weights: Checkpoint | None = None) -> nn.Module:
    """The layer ``name`` of ``spec`` (block or op granularity), in eval mode, on ``device``.

    Built on the meta device and then materialised alone: with ``weights``, its tensors read
    from the checkpoint (nothing else of it); else drawn from ``layer_generator(seed, name)``,
    the same values in every process.
    """
    spec = _check_spec(spec)
    module = _meta_layer(spec, name, numerics or _ZOO)
    if weights is None:
        return _materialise(module, name, seed, device, dtype)
    _allocate(module, device, dtype)
    weights.load_layer(module, name)
    return _finish(module)


class Chain(nn.Module):
    """Layers called in order; a tuple output is spread over the next layer's arguments.

    The layers live in a ModuleList (chain names such as ``layers.3`` hold dots, which
    ModuleDict keys may not); ``names`` keeps them. ``state`` is shared by the layers that
    decode (attach); after each forward it moves on to the next micro-batch.
    """

    def __init__(self, names: Iterable[str], layers: Iterable[nn.Module]) -> None:
        super().__init__()
        self.names = list(names)
        self.layers = nn.ModuleList(layers)
        self.state = StageState()
        for sub in self.modules():
            if isinstance(sub, _Stateful):
                sub.state = self.state

    def forward(self, *args: Any) -> Any:
        x: Any = args
        tokens = args[0].shape[1] if args and args[0].dim() >= 2 else 0
        for layer in self.layers:
            x = layer(*x) if isinstance(x, tuple) else layer(x)
        self.state.advance(tokens)
        return x


def build_chain(spec: TransformerSpec, names: Sequence[str] | None = None, *,
                device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                seed: int = 0, numerics: Numerics | None = None,
                weights: Checkpoint | None = None) -> Chain:
    """The layers ``names`` (default: the whole block-granularity model) as one Chain."""
    names = list(names) if names is not None else layer_names(spec)
    return Chain(names, (build_layer(spec, n, device=device, dtype=dtype, seed=seed,
                                     numerics=numerics, weights=weights) for n in names))


@dataclass(frozen=True)
class Generation:
    """A greedy generation in one process."""

    tokens: torch.Tensor
    """The new ids (batch, new_tokens)."""
    prefill: Any
    """The prefill's output (logits over the prompt)."""
    logits: list[torch.Tensor]
    """The last position's logits (batch, vocab) that picked each new token."""


@torch.no_grad()
def greedy_generate(stages: Sequence[Chain], ids: torch.Tensor, new_tokens: int, *,
                    microbatches: int = 1) -> Generation:
    """Prefill ``ids`` (batch, seq) through ``stages`` in order, then ``new_tokens - 1`` greedy
    decode steps, each stage keeping its layers' keys and values per micro-batch: what the
    pipeline does, in one process. No stop at an end-of-sequence token: every sequence gets
    ``new_tokens``."""
    if new_tokens < 1:
        raise SpecError(f"new_tokens: must be >= 1, got {new_tokens}")
    if ids.shape[0] % microbatches:
        raise SpecError(f"microbatches: {microbatches} does not divide the batch of {ids.shape[0]}")
    for stage in stages:
        stage.state.start(microbatches)
    try:
        def step(x: torch.Tensor) -> Any:
            outs = []
            for chunk in x.chunk(microbatches):
                y: Any = chunk
                for stage in stages:
                    y = stage(*y) if isinstance(y, tuple) else stage(y)
                outs.append(y)
            return torch.cat(outs)

        prefill = step(ids)
        logits = [prefill[:, -1]]
        tokens = [logits[-1].argmax(-1, keepdim=True)]
        for _ in range(new_tokens - 1):
            logits.append(step(tokens[-1])[:, -1])
            tokens.append(logits[-1].argmax(-1, keepdim=True))
    finally:
        for stage in stages:
            stage.state.stop()
    return Generation(torch.cat(tokens, dim=1), prefill, logits)
