"""torch reference implementations of the zoo's decoders, one module per layer of the chain.

The runner builds a pipeline stage from a plan's layer names, so every layer of
``TransformerSpec.layer_descs()`` is a self-contained ``nn.Module`` here:

- ``embed``: token ids (batch, seq) int64 -> hidden states (plus learned positions, GPT-2);
- ``block{i}``: hidden -> hidden; rotary tables and the causal mask are recomputed inside
  every block, so only the hidden state crosses a stage boundary;
- ``block{i}.attn_norm`` .. ``block{i}.mlp`` at op granularity: a norm passes
  ``(normed, residual)`` on, the next op adds its output back into the residual;
- ``head``: final norm and LM head (a tied head owns no parameters: it keeps its own copy of
  the embedding matrix as a buffer, drawn from the embedding's generator, so it is identical).

Families: llama / mistral (RMSNorm, rotary, grouped-query attention, SwiGLU), mixtral (top-k
routed experts), gpt2 (learned positions, LayerNorm, GELU MLP, biases, tied head); parallel
blocks (one norm) and sandwich norms (four) follow the spec's ``norms_per_layer``.

Weights are synthetic and deterministic: each layer is built on the meta device, then only it
is materialised and filled from a CPU generator seeded by (seed, layer name), so any rank that
builds a layer gets exactly the weights the single-process reference gets, whatever the device.
A user's ``nn.Module`` (``file.py:factory``) is split the same way at its chain's qualified
names (models/torch_modules.py). torch is imported here at module level: import this module
only where torch is needed.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .errors import SpecError
from .transformer import TransformerSpec

__all__ = [
    "DEFAULT_ROPE_THETA",
    "Chain",
    "build_chain",
    "build_layer",
    "layer_generator",
    "layer_names",
    "load_safetensors",
]

DEFAULT_ROPE_THETA = 10000.0
_NORM_EPS = 1e-5


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


@torch.no_grad()
def _materialise(module: nn.Module, name: str, seed: int, device: torch.device | str,
                 dtype: torch.dtype) -> nn.Module:
    """Allocate a meta-built module on ``device`` and fill it from the layer's generator.

    Parameters are drawn in registration order, on the CPU in float32 and then cast, so the
    values do not depend on the device or on which other layers the process builds.
    """
    if dtype.is_floating_point:
        module.to(dtype)  # floating tensors only: a batch norm's counter stays an integer
    module.to_empty(device=device)
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
    module.eval()
    module.requires_grad_(False)
    return module


# ----- building blocks ----------------------------------------------------------------------
class RMSNorm(nn.Module):
    def __init__(self, hidden: int, eps: float = _NORM_EPS) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(hidden))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # normalise in float32: bf16 squares lose too much
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (xf * self.weight.float()).to(x.dtype)


def _norm(spec: TransformerSpec) -> nn.Module:
    if spec.norm == "layernorm":
        return nn.LayerNorm(spec.hidden, eps=_NORM_EPS)
    return RMSNorm(spec.hidden)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _rotary(seq: int, dim: int, theta: float, device: torch.device,
            dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables (seq, dim), rebuilt per call: nothing but hidden states crosses a
    stage boundary, and a table this size costs far less than the attention it feeds."""
    inv = 1.0 / theta ** (torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim)
    freqs = torch.outer(torch.arange(seq, device=device, dtype=torch.float32), inv)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


class Attention(nn.Module):
    """Multi-head attention with grouped KV heads; rotary when the spec has no learned
    positions; always causal (decoders)."""

    def __init__(self, spec: TransformerSpec, rope_theta: float) -> None:
        super().__init__()
        h, q, kv = spec.hidden, spec.heads * spec.dh, spec.kvh * spec.dh
        qkv_bias = spec.attn_bias or spec.qkv_bias
        self.q_proj = nn.Linear(h, q, bias=qkv_bias)
        self.k_proj = nn.Linear(h, kv, bias=qkv_bias)
        self.v_proj = nn.Linear(h, kv, bias=qkv_bias)
        self.o_proj = nn.Linear(q, h, bias=spec.attn_bias)
        self.heads, self.kv_heads, self.head_dim = spec.heads, spec.kvh, spec.dh
        self.rotary = spec.positions == 0
        self.rope_theta = rope_theta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        q = self.q_proj(x).view(b, s, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, s, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, s, self.kv_heads, self.head_dim).transpose(1, 2)
        if self.rotary:
            cos, sin = _rotary(s, self.head_dim, self.rope_theta, x.device, q.dtype)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
        if self.kv_heads != self.heads:
            group = self.heads // self.kv_heads
            k = k.repeat_interleave(group, dim=1)
            v = v.repeat_interleave(group, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o_proj(out.transpose(1, 2).reshape(b, s, self.heads * self.head_dim))


class MLP(nn.Module):
    """SwiGLU (gated) or GELU (plain, GPT-2's tanh approximation)."""

    def __init__(self, spec: TransformerSpec) -> None:
        super().__init__()
        h, f, bias = spec.hidden, spec.ffn, spec.mlp_bias
        self.gated = spec.mlp == "gated"
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
            return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
        return self.proj(F.gelu(self.fc(x), approximate="tanh"))


class MoE(nn.Module):
    """Top-k routed experts (Mixtral): softmax over the chosen experts' router logits."""

    def __init__(self, spec: TransformerSpec) -> None:
        super().__init__()
        self.router = nn.Linear(spec.hidden, spec.experts, bias=False)
        self.experts = nn.ModuleList(MLP(spec) for _ in range(spec.experts))
        self.top_k = spec.experts_per_token

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        logits = self.router(flat)
        weights, chosen = torch.topk(logits.float(), self.top_k, dim=-1)
        weights = torch.softmax(weights, dim=-1).to(x.dtype)
        out = torch.zeros_like(flat)
        # experts in a fixed order, each token's rows independent of the batch it is in:
        # a micro-batch gives the same sums as the whole batch
        for e, expert in enumerate(self.experts):
            rows, slot = torch.nonzero(chosen == e, as_tuple=True)
            if rows.numel():
                out.index_add_(0, rows, expert(flat[rows]) * weights[rows, slot, None])
        return out.reshape(shape)


def _ffn(spec: TransformerSpec) -> nn.Module:
    return MoE(spec) if spec.experts else MLP(spec)


class Block(nn.Module):
    """One decoder block: pre-norm (2 norms), parallel (1) or sandwich (4)."""

    def __init__(self, spec: TransformerSpec, rope_theta: float) -> None:
        super().__init__()
        self.norms = spec.norms_per_layer
        self.attn_norm = _norm(spec)
        self.attn = Attention(spec, rope_theta)
        if self.norms == 4:
            self.post_attn_norm = _norm(spec)
        if self.norms >= 2:
            self.mlp_norm = _norm(spec)
        self.mlp = _ffn(spec)
        if self.norms == 4:
            self.post_mlp_norm = _norm(spec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norms == 1:
            n = self.attn_norm(x)
            return x + self.attn(n) + self.mlp(n)
        a = self.attn(self.attn_norm(x))
        x = x + (self.post_attn_norm(a) if self.norms == 4 else a)
        m = self.mlp(self.mlp_norm(x))
        return x + (self.post_mlp_norm(m) if self.norms == 4 else m)


class NormOp(nn.Module):
    """Op granularity: a pre-norm passes (normed, residual); a post-norm closes the residual."""

    def __init__(self, spec: TransformerSpec, post: bool) -> None:
        super().__init__()
        self.norm = _norm(spec)
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
    parallel: (normed, residual + f(normed)) for the block's other branch (attention of a
    parallel block), or residual + f(normed) when it is the last (its MLP)."""

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


class Embed(nn.Module):
    def __init__(self, spec: TransformerSpec) -> None:
        super().__init__()
        # tok first: a tied head redraws this matrix as the first tensor of the generator
        self.tok = nn.Embedding(spec.vocab, spec.hidden)
        self.pos = nn.Embedding(spec.positions, spec.hidden) if spec.positions else None
        self.types = nn.Embedding(spec.token_types, spec.hidden) if spec.token_types else None
        self.norm = _norm(spec) if spec.embed_norm else None

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.tok(ids)
        if self.pos is not None:
            x = x + self.pos(torch.arange(ids.shape[1], device=ids.device))[None]
        if self.types is not None:  # a decoder has one segment: type 0 everywhere
            x = x + self.types.weight[0]
        return x if self.norm is None else self.norm(x)


class Head(nn.Module):
    """Final norm plus the LM head; a tied head's matrix is a buffer, not a parameter."""

    def __init__(self, spec: TransformerSpec) -> None:
        super().__init__()
        self.norm = _norm(spec) if spec.final_norm else None
        self.tied = spec.tied_embeddings
        self.shape = (spec.vocab, spec.hidden)
        self.lm_head: nn.Linear | None = None
        if spec.lm_head and spec.vocab:
            if self.tied:
                self.register_buffer("tied_weight", torch.empty(self.shape), persistent=False)
            else:
                self.lm_head = nn.Linear(spec.hidden, spec.vocab, bias=False)

    def fill_buffers(self, seed: int, device: torch.device | str, dtype: torch.dtype) -> None:
        if self.tied and hasattr(self, "tied_weight"):
            # the embedding's generator, first draw: exactly the embedding's token matrix
            weight = _draw(layer_generator(seed, "embed"), self.shape, "tok.weight")
            self.tied_weight = weight.to(device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm is not None:
            x = self.norm(x)
        if self.lm_head is not None:
            return self.lm_head(x)
        if self.tied and hasattr(self, "tied_weight"):
            return F.linear(x, self.tied_weight)
        return x


# ----- layers by name -----------------------------------------------------------------------
def _check_spec(spec: Any) -> TransformerSpec:
    if not isinstance(spec, TransformerSpec):
        raise SpecError(f"torch reference: expected a TransformerSpec, got {type(spec).__name__}")
    if spec.kind != "decoder":
        raise SpecError(f"torch reference: kind {spec.kind!r} is not supported (decoders only)")
    return spec


def layer_names(spec: TransformerSpec, granularity: str = "block") -> list[str]:
    """The chain's layer names, in order (``embed``, ``block0`` .., ``head``)."""
    return [d.name for d in spec.layer_descs(granularity)]  # type: ignore[arg-type]


def _op_module(spec: TransformerSpec, op: str, rope_theta: float) -> nn.Module:
    npl = spec.norms_per_layer
    if op in ("attn_norm", "mlp_norm"):
        return NormOp(spec, post=False)
    if op in ("post_attn_norm", "post_mlp_norm"):
        return NormOp(spec, post=True)
    if op == "attn":
        mode = "defer" if npl == 4 else "keep" if npl == 1 else "add"
        return SubOp(Attention(spec, rope_theta), mode)
    if op in ("mlp", "moe"):
        return SubOp(_ffn(spec), "defer" if npl == 4 else "add")
    raise SpecError(f"torch reference: unknown op {op!r}")


def _meta_layer(spec: TransformerSpec, name: str, rope_theta: float) -> nn.Module:
    known = {d.name for d in spec.layer_descs("block")} | {d.name for d in spec.layer_descs("op")}
    if name not in known:
        raise SpecError(f"torch reference: no layer {name!r} in this model "
                        f"(layers: {', '.join(layer_names(spec))})")
    with torch.device("meta"):
        if name == "embed":
            return Embed(spec)
        if name == "head":
            return Head(spec)
        op = name.partition(".")[2]
        return _op_module(spec, op, rope_theta) if op else Block(spec, rope_theta)


def build_layer(spec: TransformerSpec, name: str, *, device: torch.device | str = "cpu",
                dtype: torch.dtype = torch.float32, seed: int = 0,
                rope_theta: float = DEFAULT_ROPE_THETA) -> nn.Module:
    """The layer ``name`` of ``spec`` (block or op granularity), in eval mode, on ``device``.

    Built on the meta device and then materialised alone, with weights drawn from
    ``layer_generator(seed, name)``: the same values in every process.
    """
    spec = _check_spec(spec)
    return _materialise(_meta_layer(spec, name, rope_theta), name, seed, device, dtype)


class Chain(nn.Module):
    """Layers called in order; a tuple output is spread over the next layer's arguments.

    The layers live in a ModuleList (chain names such as ``layers.3`` hold dots, which
    ModuleDict keys may not); ``names`` keeps them.
    """

    def __init__(self, names: Iterable[str], layers: Iterable[nn.Module]) -> None:
        super().__init__()
        self.names = list(names)
        self.layers = nn.ModuleList(layers)

    def forward(self, *args: Any) -> Any:
        x: Any = args
        for layer in self.layers:
            x = layer(*x) if isinstance(x, tuple) else layer(x)
        return x


def build_chain(spec: TransformerSpec, names: Sequence[str] | None = None, *,
                device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                seed: int = 0, rope_theta: float = DEFAULT_ROPE_THETA) -> Chain:
    """The layers ``names`` (default: the whole block-granularity model) as one Chain."""
    names = list(names) if names is not None else layer_names(spec)
    return Chain(names, (build_layer(spec, n, device=device, dtype=dtype, seed=seed,
                                     rope_theta=rope_theta) for n in names))


# ----- checkpoints --------------------------------------------------------------------------
def load_safetensors(layer: nn.Module, path: str | Path, prefix: str = "") -> list[str]:
    """Copy tensors named ``prefix + parameter name`` from a local safetensors file into
    ``layer``; returns the parameter names that were not in the file.

    Needs the optional ``safetensors`` package. Names follow this module's layout (``q_proj``,
    ``gate_proj``, ...), which matches Hugging Face's llama layout below the block prefix.
    """
    try:
        from safetensors import safe_open
    except ImportError as exc:
        raise SpecError(f"loading a checkpoint needs safetensors ({exc}): pip install "
                        "safetensors") from exc
    missing = []
    with safe_open(str(path), framework="pt", device="cpu") as f, torch.no_grad():
        keys = set(f.keys())
        for pname, p in layer.named_parameters():
            key = prefix + pname
            if key not in keys:
                missing.append(pname)
                continue
            tensor = f.get_tensor(key)
            if tuple(tensor.shape) != tuple(p.shape):
                raise SpecError(f"{path}: {key}: shape {tuple(tensor.shape)} does not match "
                                f"the layer's {tuple(p.shape)}")
            p.copy_(tensor.to(dtype=p.dtype))
    return missing
