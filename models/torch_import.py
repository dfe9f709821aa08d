"""The layer chain of a user's ``torch.nn.Module``, traced on the meta device.

One forward pass runs on a meta copy of the module: shapes and dtypes propagate, no kernel runs
and no parameter memory is allocated, so a model far larger than RAM (built under
``with torch.device("meta"):``) imports in milliseconds. Forward hooks on the chain's modules
record what each layer outputs; hooks on the Linear / Conv / MultiheadAttention modules inside
them add up an estimate of the FLOPs.

torch is imported inside the functions only: the rest of the package (and this module's import)
works without it, and calling in without torch raises SpecError with the install hint.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import importlib.util
import math
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import SpecError
from .layers import LayerDesc, Unit

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["ROOT", "load_module_from_path", "module_layers"]

ROOT = "(root)"
"""Name of the single layer of a module without children, and of a forward failure that
happened in the root's own code (between the chain's layers)."""


def _import_torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise SpecError(
            f"importing a torch module needs PyTorch ({exc}): pip install torch "
            "(or the extra: pip install 'cachepart[torch]')"
        ) from exc
    return torch


def _one_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (SpecError messages are one line)."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _check_shape(input_shape: Any, unit: str) -> tuple[int, ...]:
    if unit not in ("token", "sample"):
        raise SpecError(f"unit: expected 'token' or 'sample', got {unit!r}")
    if not isinstance(input_shape, tuple | list) or not input_shape:
        raise SpecError(f"input_shape: expected a non-empty tuple of positive ints, got {input_shape!r}")
    for d in input_shape:
        # bool is an int subclass; (True, 4) is almost certainly a mistake
        if isinstance(d, bool) or not isinstance(d, int) or d <= 0:
            raise SpecError(f"input_shape: every dimension must be a positive int, got {input_shape!r}")
    if unit == "token" and len(input_shape) < 2:
        raise SpecError(f"input_shape: unit 'token' needs (batch, seq, ...), got {tuple(input_shape)!r}")
    return tuple(input_shape)


def _resolve_dtype(torch: Any, input_dtype: Any) -> torch.dtype:
    if input_dtype is None:
        return torch.float32
    if isinstance(input_dtype, torch.dtype):
        return input_dtype
    if isinstance(input_dtype, str):
        found = getattr(torch, input_dtype.removeprefix("torch."), None)
        if isinstance(found, torch.dtype):
            return found
    raise SpecError(f"input_dtype: expected a torch.dtype such as torch.long, got {input_dtype!r}")


def _meta_copy(torch: Any, module: nn.Module) -> nn.Module:
    """A copy of ``module`` whose parameters and buffers live on the meta device.

    The memo hands deepcopy a fresh meta tensor for every parameter and buffer, so real weights
    are never duplicated (``module.to("meta")`` on a plain deepcopy would first copy them all,
    and on the original would move the user's weights away) and tied parameters stay tied (one
    memo entry per tensor object). The user's module is not
    touched: no device move, no mode change, no hooks left behind.
    """
    uninit = torch.nn.parameter.UninitializedTensorMixin
    memo: dict[int, Any] = {}
    try:
        for sub in module.modules():
            for store, is_param in ((sub._parameters, True), (sub._buffers, False)):
                for t in store.values():
                    if t is None or id(t) in memo:
                        continue
                    if isinstance(t, uninit):
                        # a lazy module's placeholder: keep it lazy (materialized by the forward,
                        # on meta); module.to("meta") would turn it into an empty Parameter
                        meta = type(t)(requires_grad=t.requires_grad, device="meta", dtype=t.dtype)
                    elif is_param:
                        meta = torch.nn.Parameter(torch.empty_like(t, device="meta"), t.requires_grad)
                    else:
                        meta = torch.empty_like(t, device="meta")
                    memo[id(t)] = meta
        clone = copy.deepcopy(module, memo)
    except Exception as exc:
        raise SpecError(
            f"module: cannot copy {type(module).__name__} to the meta device: {_one_line(exc)}"
        ) from exc
    # eval: dropout is the identity, batch norm does not insist on batch > 1
    clone.eval()
    return clone


def _chain(root: nn.Module, nn: Any) -> list[tuple[str, nn.Module]]:
    """The chain's (qualified name, module) pairs; see module_layers."""
    # _modules, not named_children(): the latter drops a module registered twice, but
    # nn.Sequential(block, block) calls it twice and the chain has two layers
    children = [(n, m) for n, m in root._modules.items() if m is not None]
    if not children:
        return [(ROOT, root)]
    if isinstance(root, nn.Sequential):
        return children
    if sum(isinstance(m, nn.ModuleList) for _, m in children) != 1:
        return children
    chain: list[tuple[str, nn.Module]] = []
    for name, m in children:
        if isinstance(m, nn.ModuleList):
            chain.extend((f"{name}.{k}", b) for k, b in m._modules.items() if b is not None)
        else:
            chain.append((name, m))
    return chain


def _tensors(obj: Any, torch: Any) -> Iterator[torch.Tensor]:
    """Every tensor in a (nested) tuple / list / dict output (HF ModelOutput is a dict)."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, tuple | list):
        for o in obj:
            yield from _tensors(o, torch)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _tensors(o, torch)


def _flops(mod: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any, nn: Any) -> int:
    """Forward FLOPs (2 per multiply-add, biases ignored) of one call of a counted module."""
    if isinstance(mod, nn.Linear):
        return 2 * mod.in_features * output.numel()
    if isinstance(mod, nn.modules.conv._ConvTransposeNd):
        # each input element scatters into kernel * out_channels/groups outputs
        return 2 * math.prod(mod.kernel_size) * (mod.out_channels // mod.groups) * args[0].numel()
    if isinstance(mod, nn.modules.conv._ConvNd):
        return 2 * math.prod(mod.kernel_size) * (mod.in_channels // mod.groups) * _first(output).numel()
    if isinstance(mod, nn.MultiheadAttention):
        # MultiheadAttention uses in_proj / out_proj weights through F.multi_head_attention_forward,
        # never calling out_proj as a module: count the four projections here (not the scores,
        # which LayerDesc.flops excludes)
        names = ("query", "key", "value")
        q, k, v = (args[i] if len(args) > i else kwargs.get(n) for i, n in enumerate(names))
        e = mod.embed_dim
        total = 0
        if q is not None:
            total += 2 * 2 * e * q.numel()  # Q projection and output projection, E x E each
        if k is not None:
            total += 2 * e * k.numel()  # kdim -> E per key token: kdim * E MACs = E * numel
        if v is not None:
            total += 2 * e * v.numel()
        return total
    return 0


def _first(output: Any) -> Any:
    return output[0] if isinstance(output, tuple | list) else output


def _param_dtype(params: list[torch.nn.Parameter]) -> str | None:
    """The dtype holding most of the parameters' elements, e.g. "bfloat16"; None without any."""
    by_dtype: dict[str, int] = {}
    for p in params:
        name = str(p.dtype).removeprefix("torch.")
        by_dtype[name] = by_dtype.get(name, 0) + p.numel()
    return max(by_dtype, key=lambda d: by_dtype[d]) if by_dtype else None


def _numel(p: torch.nn.Parameter, layer: str, uninit: type) -> int:
    if isinstance(p, uninit):
        raise SpecError(f"layer {layer!r}: a lazy parameter was not materialized by the forward pass")
    return p.numel()


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def module_layers(
    module: nn.Module,
    input_shape: tuple[int, ...],
    *,
    input_dtype: torch.dtype | str | None = None,
    unit: Unit = "sample",
) -> list[LayerDesc]:
    """The layer chain of ``module``, from one forward pass on the meta device.

    The chain: an ``nn.Sequential``'s children in order; else, when the module has exactly one
    ``nn.ModuleList`` child (a stack of blocks), its children in registration order with the list
    expanded into its blocks (named ``layers.3``); else its direct children in order. A module
    without children is one layer, named ``(root)``. Layers are named by qualified name and
    kept in registration order (not the order the forward calls them in).

    The forward runs on a meta copy (the user's module is left as it is, wherever it lives),
    in eval mode, under ``torch.no_grad()`` and ``torch.device("meta")`` (so tensors the forward
    creates, such as position ids, are meta too), with one meta input tensor of ``input_shape``
    and ``input_dtype`` (default float32; an embedding needs an integer dtype such as torch.long).

    Per layer: ``params`` counts each parameter once, in the first layer holding it (a tied head
    owns none; its ``stored_params`` is the full count). Parameters outside every chain layer
    (registered on the root itself, or on the expanded ModuleList) are attached to the **first
    layer** (``extra["root_params"]``), so the chain's total equals
    ``sum(p.numel() for p in module.parameters())``. ``out_elems`` and ``flops`` are per unit:
    per sample (divided by ``input_shape[0]``) or per token (by ``input_shape[0] *
    input_shape[1]``), rounded up. Tuple / list / dict outputs sum their tensors' elements; a
    layer called several times keeps its last output and sums its FLOPs. FLOPs are 2 per
    multiply-add of the nn.Linear, nn.Conv{1,2,3}d, nn.ConvTranspose{1,2,3}d and
    nn.MultiheadAttention (projections only) modules inside the layer; everything else counts 0.
    ``dtype`` is the layer's parameter dtype (the one holding most elements), ``kind`` the class
    name lower-cased. ``extra`` holds ``out_shapes``, ``out_dtypes``, ``calls`` (forward calls
    seen; 0 for a layer the forward never reached) and ``buffers`` (buffer elements, if any).

    Raises SpecError when torch is missing, for a bad ``input_shape`` / ``input_dtype`` /
    ``unit``, or when the forward fails on meta (naming the innermost chain layer running).
    """
    torch = _import_torch()
    tnn = torch.nn  # not `nn`: that name is the type-checking import used in annotations
    if not isinstance(module, tnn.Module):
        raise SpecError(f"module: expected a torch.nn.Module, got {type(module).__name__}")
    shape = _check_shape(input_shape, unit)
    dtype = _resolve_dtype(torch, input_dtype)
    units = shape[0] if unit == "sample" else shape[0] * shape[1]

    traced = _meta_copy(torch, module)
    chain = _chain(traced, tnn)
    n = len(chain)

    # a module may appear at several chain positions (nn.Sequential(block, block)): its k-th
    # call belongs to its k-th position (calls beyond the last position go to the last)
    positions: dict[int, list[int]] = {}
    for i, (_, m) in enumerate(chain):
        positions.setdefault(id(m), []).append(i)
    # for FLOPs counted outside any running chain layer (the root calling a grandchild)
    owner: dict[int, int] = {}
    for i, (_, m) in enumerate(chain):
        for sub in m.modules():
            owner.setdefault(id(sub), i)

    seen_calls: dict[int, int] = {}
    calls = [0] * n
    running: list[int] = []  # chain positions whose forward is in progress, innermost last
    outputs: list[list[Any]] = [[] for _ in range(n)]
    flops = [0] * n

    def pre_hook(mod: nn.Module, args: Any) -> None:
        pos = positions[id(mod)]
        k = seen_calls.get(id(mod), 0)
        seen_calls[id(mod)] = k + 1
        i = pos[min(k, len(pos) - 1)]
        calls[i] += 1
        running.append(i)

    def post_hook(mod: nn.Module, args: Any, output: Any) -> None:
        i = running.pop()
        outputs[i] = list(_tensors(output, torch))

    def flops_hook(mod: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
        i = running[-1] if running else owner.get(id(mod))
        if i is not None:
            flops[i] += _flops(mod, args, kwargs, output, tnn)

    counted = (tnn.Linear, tnn.modules.conv._ConvNd, tnn.MultiheadAttention)
    handles = []
    for sub in traced.modules():
        if isinstance(sub, counted):
            # prepend: runs before the chain's post hook pops the layer a Linear itself may be
            handles.append(sub.register_forward_hook(flops_hook, with_kwargs=True, prepend=True))
    for m in {id(m): m for _, m in chain}.values():  # once per module, not per position
        handles.append(m.register_forward_pre_hook(pre_hook))
        handles.append(m.register_forward_hook(post_hook))

    x = torch.empty(shape, dtype=dtype, device="meta")
    try:
        with torch.no_grad(), torch.device("meta"):
            traced(x)
    except Exception as exc:
        where = chain[running[-1]][0] if running else ROOT
        hint = ""
        if dtype.is_floating_point and any(isinstance(s, tnn.Embedding) for s in traced.modules()):
            hint = " (an embedding needs integer input: pass input_dtype=torch.long)"
        raise SpecError(
            f"layer {where!r}: forward of {type(module).__name__} failed on the meta device: "
            f"{_one_line(exc)}{hint}"
        ) from exc
    finally:
        for h in handles:
            h.remove()

    uninit = tnn.parameter.UninitializedTensorMixin
    seen: set[int] = set()
    descs: list[dict[str, Any]] = []
    for i, (name, m) in enumerate(chain):
        params = list(m.parameters())
        full = own = 0
        for p in params:
            size = _numel(p, name, uninit)
            full += size
            if id(p) not in seen:
                seen.add(id(p))
                own += size
        outs = outputs[i]
        extra: dict[str, object] = {
            "out_shapes": [tuple(t.shape) for t in outs],
            "out_dtypes": [str(t.dtype).removeprefix("torch.") for t in outs],
            "calls": calls[i],
        }
        buffers = sum(b.numel() for b in m.buffers())
        if buffers:
            extra["buffers"] = buffers
        descs.append({
            "name": name,
            "kind": type(m).__name__.lower(),
            "params": own,
            "stored_params": full if full != own else None,
            "unit": unit,
            "out_elems": _ceil_div(sum(t.numel() for t in outs), units),
            "flops": _ceil_div(flops[i], units),
            "dtype": _param_dtype(params),
            "extra": extra,
        })

    leftover = sum(_numel(p, ROOT, uninit) for p in traced.parameters() if id(p) not in seen)
    if leftover and descs:
        first = descs[0]
        first["params"] += leftover
        if first["stored_params"] is not None:
            first["stored_params"] += leftover
        first["extra"]["root_params"] = leftover
    return [LayerDesc(**d) for d in descs]


def _import_file(spec: str, path: Path) -> Any:
    if not path.is_file():
        raise SpecError(f"module spec {spec!r}: no such file {str(path)!r}")
    resolved = path.resolve()
    # a stable private name: re-importing the same file replaces the previous copy
    stem = re.sub(r"\W", "_", resolved.stem)
    name = f"_cachepart_user_{stem}_{hashlib.sha1(str(resolved).encode()).hexdigest()[:10]}"
    loader_spec = importlib.util.spec_from_file_location(name, resolved)
    if loader_spec is None or loader_spec.loader is None:
        raise SpecError(f"module spec {spec!r}: cannot load {str(path)!r} as Python")
    mod = importlib.util.module_from_spec(loader_spec)
    # registered before exec (dataclasses and pickling look modules up by name); the file's
    # folder on sys.path while it runs, so it can import its sibling files
    sys.modules[name] = mod
    folder = str(resolved.parent)
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)
    try:
        loader_spec.loader.exec_module(mod)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise SpecError(f"module spec {spec!r}: importing {str(path)!r} failed: {_one_line(exc)}") from exc
    finally:
        if added and folder in sys.path:
            sys.path.remove(folder)
    return mod


def load_module_from_path(spec: str) -> nn.Module:
    """The module built by ``path/to/file.py:factory`` or ``package.module:factory``.

    ``factory`` (a dotted attribute such as ``Model.from_config`` works too) is called with no
    arguments under ``with torch.device("meta"):``, so construction allocates no parameter
    memory however big the model. Raises SpecError naming ``spec`` when torch is missing, the
    spec is malformed, the import or the call fails, or the result is not a torch.nn.Module.
    """
    torch = _import_torch()
    target, sep, attr = spec.rpartition(":")  # rpartition: a Windows path has a colon too
    if not sep or not target or not attr:
        raise SpecError(
            f"module spec {spec!r}: expected path/to/file.py:factory or package.module:factory"
        )
    if target.endswith(".py") or "/" in target or "\\" in target:
        mod = _import_file(spec, Path(target))
    else:
        try:
            mod = importlib.import_module(target)
        except Exception as exc:
            raise SpecError(f"module spec {spec!r}: cannot import {target!r}: {_one_line(exc)}") from exc
    factory: Any = mod
    for part in attr.split("."):
        if not hasattr(factory, part):
            raise SpecError(f"module spec {spec!r}: {target!r} has no attribute {attr!r}")
        factory = getattr(factory, part)
    if not callable(factory):
        raise SpecError(f"module spec {spec!r}: {attr!r} is not callable")
    try:
        with torch.device("meta"):
            built = factory()
    except Exception as exc:
        raise SpecError(f"module spec {spec!r}: {attr}() failed: {_one_line(exc)}") from exc
    if not isinstance(built, torch.nn.Module):
        raise SpecError(
            f"module spec {spec!r}: {attr}() returned {type(built).__name__}, not a torch.nn.Module"
        )
    return built
