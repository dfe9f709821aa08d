"""A user's ``torch.nn.Module`` (``file.py:factory``) split at its chain's qualified names, each
layer filled with the seeded weights of models/torch_ref.py, for the runner and its reference.
torch is imported at module level: import this module only where torch is needed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .errors import SpecError
from .torch_import import ROOT, _chain, load_module_from_path
from .torch_ref import Chain, _draw, _materialise, layer_generator

__all__ = ["build_module_chain", "build_module_reference", "module_chain_names"]


def module_chain_names(source: str) -> list[str]:
    """The chain's qualified names of ``file.py:factory`` (the names a plan of it holds)."""
    root = load_module_from_path(source)
    return [name for name, _ in _chain(root, nn)]


def build_module_chain(source: str, names: Sequence[str], *,
                       device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                       seed: int = 0) -> Chain:
    """The chain layers ``names`` of a user's module factory, each materialised alone.

    The factory runs under ``torch.device("meta")`` (models/torch_import.py), so nothing but
    the named layers is ever allocated. Only a root whose forward calls its chain in order
    (an nn.Sequential, or a stack of blocks) splits faithfully; ``--verify`` checks that.
    """
    root = load_module_from_path(source)
    chain = dict(_chain(root, nn))
    if ROOT in chain and len(chain) == 1 and list(names) != [ROOT]:
        raise SpecError(f"module {source!r} has no children: its only layer is {ROOT!r}")
    missing = [n for n in names if n not in chain]
    if missing:
        raise SpecError(f"module {source!r}: no chain layer {missing[0]!r} "
                        f"(layers: {', '.join(chain)})")
    layers = [_materialise(chain[n], n, seed, device, dtype) for n in names]
    return Chain(names, layers)


def build_module_reference(source: str, *, device: torch.device | str = "cpu",
                           dtype: torch.dtype = torch.float32, seed: int = 0) -> nn.Module:
    """The whole user module, every chain layer filled as ``build_module_chain`` fills it, run
    through the root's own forward (the single-process reference of a split run)."""
    root = load_module_from_path(source)
    chain = _chain(root, nn)
    if chain == [(ROOT, root)]:
        return _materialise(root, ROOT, seed, device, dtype)
    if dtype.is_floating_point:
        root.to(dtype)
    root.to_empty(device=device)
    with torch.no_grad():
        # tensors outside every chain layer (on the root itself): seeded by the root's name
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
