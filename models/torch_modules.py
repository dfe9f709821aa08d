"""A user's ``torch.nn.Module`` (``file.py:factory``) split at its chain's qualified names, each
layer filled with the seeded weights of models/torch_ref.py, for the runner, its reference and
the profiler. torch is imported at module level: import this module only where torch is needed.

Weights are drawn per block-granularity layer (its generator seeded by the layer's name), so a
layer's values are the same whichever granularity splits it: an op-granularity layer
(``model.layers.3.mlp``) is taken from its block, materialised whole.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .errors import SpecError
from .layers import Unit
from .torch_import import ROOT, _chain, _check_granularity, _op_blocks, load_module_from_path, module_layers
from .torch_ref import Chain, _draw, _materialise, layer_generator
from .transformer import Granularity

__all__ = [
    "LayerCalls",
    "build_module_chain",
    "build_module_reference",
    "module_chain_names",
    "module_input",
    "module_layer_calls",
]

INTEGER_DTYPES = {"long": torch.int64, "int64": torch.int64, "int32": torch.int32}


def module_chain_names(source: str, granularity: Granularity = "block") -> list[str]:
    """The chain's qualified names of ``file.py:factory`` in registration order (the names a
    plan of it holds; module_layers lists them in the order the forward calls them)."""
    root = load_module_from_path(source)
    return [name for name, _ in _chain(root, nn, granularity)]


def build_module_chain(source: str, names: Sequence[str], *,
                       device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                       seed: int = 0) -> Chain:
    """The chain layers ``names`` of a user's module factory, each materialised alone.

    The factory runs under ``torch.device("meta")`` (models/torch_import.py), so nothing but
    the named layers is ever allocated (an op-granularity layer allocates its whole block, whose
    generator draws its weights). Only a root whose forward calls its chain in order (an
    nn.Sequential, or a stack of blocks whose only input is the previous block's output)
    splits faithfully; ``--verify`` checks that.
    """
    root = load_module_from_path(source)
    chain = dict(_chain(root, nn))
    if ROOT in chain and len(chain) == 1 and list(names) != [ROOT]:
        raise SpecError(f"module {source!r} has no children: its only layer is {ROOT!r}")
    ops = dict(_chain(root, nn, "op"))
    owners = _op_blocks(root, nn)
    missing = [n for n in names if n not in chain and n not in owners]
    if missing:
        raise SpecError(f"module {source!r}: no chain layer {missing[0]!r} "
                        f"(layers: {', '.join(chain)})")
    done: set[str] = set()
    layers = []
    for name in names:
        block = name if name in chain else owners[name]
        if block not in done:  # a block's op layers share one materialisation
            done.add(block)
            _materialise(chain[block], block, seed, device, dtype)
        layers.append(chain[name] if name in chain else ops[name])
    return Chain(names, layers)


def build_module_reference(source: str, *, device: torch.device | str = "cpu",
                           dtype: torch.dtype = torch.float32, seed: int = 0) -> nn.Module:
    """The whole user module, every chain layer filled as ``build_module_chain`` fills it, run
    through the root's own forward (the single-process reference of a split run)."""
    return _reference(load_module_from_path(source), device, dtype, seed)


def _reference(root: nn.Module, device: torch.device | str, dtype: torch.dtype,
               seed: int) -> nn.Module:
    chain = _chain(root, nn)
    if chain == [(ROOT, root)]:
        return _materialise(root, ROOT, seed, device, dtype)
    if dtype.is_floating_point:
        root.to(dtype)
    root.to_empty(device=device)
    with torch.no_grad():
        # tensors outside every chain layer (on the root itself, or on a wrapper the chain
        # opened): seeded by the root's name
        in_chain = {id(t) for _, m in chain for t in (*m.parameters(), *m.buffers())}
        gen = layer_generator(seed, ROOT)
        for pname, p in root.named_parameters():
            if id(p) not in in_chain:
                p.copy_(_draw(gen, p.shape, pname))
        for b in root.buffers():
            if id(b) not in in_chain:
                b.zero_()
    seen: set[int] = set()
    for name, module in chain:
        if id(module) not in seen:  # a module at two chain positions keeps its first weights
            seen.add(id(module))
            _materialise(module, name, seed, device, dtype)
    root.eval()
    root.requires_grad_(False)
    return root


@dataclass
class LayerCalls:
    """One chain layer, materialised, with the arguments the root's forward called it with."""

    name: str
    module: nn.Module
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = field(default_factory=list)
    """(args, kwargs) of each call, in order; empty for a layer the forward never called."""


def _forward_kwargs(module: nn.Module) -> dict[str, Any]:
    """``use_cache=False`` where the forward takes it (transformers models): a timed layer is
    called again and again with the same arguments, and a KV cache among them would grow on
    every call."""
    try:
        params = inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return {}
    return {"use_cache": False} if "use_cache" in params else {}


def module_input(root: nn.Module, input_shape: Sequence[int], input_dtype: str | None,
                 device: torch.device | str, dtype: torch.dtype, seed: int) -> torch.Tensor:
    """A seeded input for ``root``: token ids below the first nn.Embedding's size (2 without
    one) for an integer ``input_dtype``, else standard normal values in ``dtype``."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    shape = tuple(input_shape)
    if input_dtype in INTEGER_DTYPES:
        vocab = next((m.num_embeddings for m in root.modules() if isinstance(m, nn.Embedding)), 2)
        ids = torch.randint(0, vocab, shape, generator=gen)
        return ids.to(device=device, dtype=INTEGER_DTYPES[input_dtype])
    return torch.randn(shape, generator=gen).to(device=device, dtype=dtype)


def module_layer_calls(source: str, input_shape: Sequence[int], *, input_dtype: str | None = None,
                       granularity: Granularity = "block", device: torch.device | str = "cpu",
                       dtype: torch.dtype = torch.float32, seed: int = 0) -> list[LayerCalls]:
    """Every chain layer of ``file.py:factory`` with the inputs one real forward gave it.

    The names and their order are module_layers' (what ``load_model`` plans with), traced on
    the meta device first, so a shape the module rejects fails before anything is allocated.
    Then the whole module is materialised on ``device`` as ``build_module_reference`` fills it
    and run once on ``module_input`` (with ``use_cache=False`` where the forward takes it);
    a forward pre-hook keeps each chain layer's arguments, so each layer's input is the real
    output of the layer before it, and any side inputs the root passes (masks, rotary tables)
    come with it. Every layer's inputs are held at once: the module and one forward's
    activations must fit on ``device``.
    """
    _check_granularity(granularity)
    unit: Unit = "token" if input_dtype in INTEGER_DTYPES else "sample"
    order = [d.name for d in module_layers(load_module_from_path(source), tuple(input_shape),
                                           input_dtype=input_dtype, unit=unit,
                                           granularity=granularity)]
    root = _reference(load_module_from_path(source), device, dtype, seed)
    chain = _chain(root, nn, granularity)
    layers = {name: LayerCalls(name, module) for name, module in chain}
    positions: dict[int, list[str]] = {}
    for name, module in chain:
        positions.setdefault(id(module), []).append(name)
    seen: dict[int, int] = {}

    def keep(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        # the k-th call of a module at several positions belongs to its k-th position
        names = positions[id(module)]
        k = seen.get(id(module), 0)
        seen[id(module)] = k + 1
        layers[names[min(k, len(names) - 1)]].calls.append((args, dict(kwargs)))

    handles = [m.register_forward_pre_hook(keep, with_kwargs=True)
               for m in {id(m): m for _, m in chain}.values()]
    x = module_input(root, input_shape, input_dtype, device, dtype, seed)
    try:
        with torch.no_grad():
            root(x, **_forward_kwargs(root))
    except Exception as exc:
        lines = str(exc).strip().splitlines()
        raise SpecError(f"module {source!r}: forward failed on {torch.device(device)}: "
                        f"{type(exc).__name__}: {lines[0] if lines else ''}") from exc
    finally:
        for h in handles:
            h.remove()
    return [layers[name] for name in order]
