"""The layer chain of a user's ``torch.nn.Module``, traced on the meta device.

One forward pass runs on a meta copy of the module: shapes and dtypes propagate, no kernel runs
and no parameter memory is allocated, so a model far larger than RAM (built under
``with torch.device("meta"):``) imports in milliseconds. Forward hooks on the chain's modules
record what each layer outputs; hooks on the Linear / Conv / MultiheadAttention modules inside
them add up an estimate of the FLOPs; a torch function mode watches the tensors each layer
creates, for its workspace (``buffer_elems``).

Which modules are the chain's layers (block granularity). A *stack* is a non-empty
``nn.ModuleList``, ``nn.ModuleDict`` or ``nn.Sequential``; its entries are the *blocks*.
Starting at the root, each child is

- a stack: replaced by its blocks, named by qualified name (``model.layers.3``);
- a module that holds a stack anywhere below it (a wrapper such as a transformers
  ``LlamaModel`` inside ``LlamaForCausalLM``, ``GPT2Model``'s ``transformer``, BERT's
  ``encoder``): opened, the same rule applied to its children;
- anything else: one layer, whole (an embedding, a final norm, a head).

A root that is itself a stack is its blocks; a module without children is one layer named
``(root)``. Every child that holds a stack is opened, not only the one holding the largest:
an encoder-decoder's two stacks and a ResNet's four stages all become blocks, and a head that
happens to hold a small ``nn.Sequential`` is opened too, which only adds cut points (the totals
do not change). A block is never opened at block granularity, so the experts ``ModuleList``
inside a mixture-of-experts block stays inside its block. At op granularity each block is
replaced by its direct children (``model.layers.3.self_attn``, ``model.layers.3.mlp``; a child
that is a stack gives its entries), a block without children stays whole, and the layers that
are not blocks stay as they are.

Order: the layers are listed in the order the forward first calls them, not in registration
order. A chain is a pipeline, so a stage boundary must fall where the forward is; transformers'
``LlamaModel`` registers ``rotary_emb`` after ``norm`` but calls it before the first block, and
the registration order would put it (and its output) after the last block. A layer the forward
never calls keeps its place after the layer registered before it.

torch is imported inside the functions only: the rest of the package (and this module's import)
works without it, and calling in without torch raises SpecError with the install hint.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import importlib
import importlib.util
import math
import re
import sys
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import SpecError
from .layers import LayerDesc, Unit
from .transformer import Granularity

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


def _kids(module: nn.Module) -> list[tuple[str, nn.Module]]:
    # _modules, not named_children(): the latter drops a module registered twice, but
    # nn.Sequential(block, block) calls it twice and the chain has two layers
    return [(n, m) for n, m in module._modules.items() if m is not None]


def _is_stack(module: nn.Module, nn: Any) -> bool:
    return isinstance(module, nn.Sequential | nn.ModuleList | nn.ModuleDict) and bool(_kids(module))


def _entries(root: nn.Module, nn: Any) -> list[tuple[str, nn.Module, bool]]:
    """(qualified name, module, is a block) of the block-granularity chain, registration order."""
    if not _kids(root):
        return [(ROOT, root, False)]
    if _is_stack(root, nn):
        return [(n, m, True) for n, m in _kids(root)]

    def open_up(module: nn.Module, prefix: str) -> list[tuple[str, nn.Module, bool]]:
        out: list[tuple[str, nn.Module, bool]] = []
        for name, child in _kids(module):
            qual = f"{prefix}{name}"
            if _is_stack(child, nn):
                out.extend((f"{qual}.{k}", b, True) for k, b in _kids(child))
            elif any(_is_stack(sub, nn) for sub in child.modules()):
                out.extend(open_up(child, f"{qual}."))
            else:
                out.append((qual, child, False))
        return out

    return open_up(root, "")


def _ops(name: str, block: nn.Module, nn: Any) -> list[tuple[str, nn.Module]]:
    """A block's direct children (a stack child gives its entries); [] without children."""
    out: list[tuple[str, nn.Module]] = []
    for k, child in _kids(block):
        if _is_stack(child, nn):
            out.extend((f"{name}.{k}.{j}", e) for j, e in _kids(child))
        else:
            out.append((f"{name}.{k}", child))
    return out


def _check_granularity(granularity: Any) -> None:
    if granularity not in ("block", "op"):
        raise SpecError(f"granularity: expected 'block' or 'op', got {granularity!r}")


def _chain(root: nn.Module, nn: Any, granularity: Granularity = "block") -> list[tuple[str, nn.Module]]:
    """The chain's (qualified name, module) pairs in registration order (module_layers puts
    them in call order); the rule is in the module docstring."""
    _check_granularity(granularity)
    chain: list[tuple[str, nn.Module]] = []
    for name, module, block in _entries(root, nn):
        ops = _ops(name, module, nn) if block and granularity == "op" else []
        chain.extend(ops or [(name, module)])
    return chain


def _op_blocks(root: nn.Module, nn: Any) -> dict[str, str]:
    """Each op-granularity layer that is part of a block -> the block's name."""
    return {op: name for name, module, block in _entries(root, nn) if block
            for op, _ in _ops(name, module, nn)}


def _call_order(first_call: list[int | None]) -> list[int]:
    """Positions sorted by first call; an uncalled one right after its registration
    predecessor."""
    order = [i for _, i in sorted((c, i) for i, c in enumerate(first_call) if c is not None)]
    for i, c in enumerate(first_call):
        if c is None:
            order.insert(order.index(i - 1) + 1 if i else 0, i)
    return order


class _Workspace:
    """The tensors a chain layer's call creates and how many elements of them are alive at
    once (the call's workspace peak).

    Counted: every tensor a torch function returns while the call runs (``F.linear``,
    ``torch.matmul``, ``x * y``, ``torch.arange``...) that is larger than the call's largest
    output tensor and that Python frees before the call returns, from its creation to its free.
    Not counted:

    - tensors no larger than the output: a norm's output, the residual sum, an attention's
      queries or its output before the projection are the size of the activation the plan
      already charges for every layer (the zoo models leave them out of a block's buffer too),
      and this keeps a block whose only temporaries are hidden-sized at zero;
    - views (they share their base's memory), and tensors that existed before the call (its
      inputs, the parameters and buffers; an op that returns its input, such as an in-place
      ReLU or ``x.to(x.dtype)``, creates nothing);
    - what a fused kernel allocates inside itself (``scaled_dot_product_attention`` counts its
      output only; eager attention counts its scores);
    - what outlives the call: its outputs (its activation) and state it keeps (a KV cache a
      transformers layer fills).
    """

    def __init__(self, known: set[int]) -> None:
        self.known = known
        self.live: dict[int, int] = {}  # id(tensor) -> key, while the tensor is alive
        self.refs: dict[int, Any] = {}  # key -> weakref (its callback records the free)
        self.owner: dict[int, int] = {}  # key -> the call that created it, while it runs
        self.sizes: dict[int, int] = {}  # key -> elements, while its call runs
        self.events: dict[int, list[tuple[int, int]]] = {}  # call -> [(key, +/- elements)]
        self.running: list[int] = []
        self.next_key = 0

    def created(self, tensor: Any) -> None:
        tid = id(tensor)
        if tid in self.live or tid in self.known or tensor._base is not None:
            return
        key = self.next_key
        self.next_key += 1
        self.live[tid] = key
        self.refs[key] = weakref.ref(tensor, functools.partial(self._freed, tid, key))
        if self.running:
            call = self.running[-1]
            self.owner[key] = call
            self.sizes[key] = tensor.numel()
            self.events[call].append((key, self.sizes[key]))

    def _freed(self, tid: int, key: int, _ref: Any) -> None:
        if self.live.get(tid) == key:
            del self.live[tid]
        self.refs.pop(key, None)
        call = self.owner.pop(key, None)
        size = self.sizes.pop(key, 0)
        if call is not None and call in self.events:
            self.events[call].append((key, -size))

    def begin(self, call: int) -> None:
        self.events[call] = []
        self.running.append(call)

    def end(self, call: int, outputs: list[Any]) -> int:
        """The peak, in elements, of the call's counted tensors (see the class docstring)."""
        self.running.pop()
        events = self.events.pop(call)
        floor = max((t.numel() for t in outputs), default=0)
        freed = {key for key, n in events if n < 0}
        live = peak = 0
        for key, n in events:
            if n > 0:  # frees after the call are not its business
                self.owner.pop(key, None)
                self.sizes.pop(key, None)
            if key in freed and abs(n) > floor:
                live += n
                peak = max(peak, live)
        return peak

    def close(self) -> None:
        self.refs.clear()  # the weakrefs die with their callbacks: nothing fires later


def _watch(torch: Any, created: Callable[[Any], None]) -> Any:
    """A torch function mode handing ``created`` every tensor a torch function returns."""
    from torch.overrides import TorchFunctionMode

    def each(obj: Any) -> None:
        for t in _tensors(obj, torch):
            created(t)

    class Watch(TorchFunctionMode):
        def __torch_function__(self, func: Any, types: Any, args: Any = (),
                               kwargs: Any = None) -> Any:
            out = func(*args, **(kwargs or {}))
            each(out)
            return out

    return Watch()


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


def _is_hf_conv1d(mod: nn.Module) -> bool:
    """transformers' ``Conv1D`` (GPT-2's projections): a Linear with its weight transposed.
    Told by name and shape, so transformers need not be importable."""
    weight = getattr(mod, "weight", None)
    return type(mod).__name__ == "Conv1D" and hasattr(mod, "nf") and getattr(weight, "ndim", 0) == 2


def _flops(mod: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any, nn: Any) -> int:
    """Forward FLOPs (2 per multiply-add, biases ignored) of one call of a counted module."""
    if isinstance(mod, nn.Linear):
        return 2 * mod.in_features * output.numel()
    if _is_hf_conv1d(mod):
        weight: Any = mod.weight  # (in, out)
        return 2 * weight.shape[0] * output.numel()
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
    granularity: Granularity = "block",
) -> list[LayerDesc]:
    """The layer chain of ``module``, from one forward pass on the meta device.

    The chain's layers and their order follow the module docstring: stacks (ModuleList,
    ModuleDict, Sequential) are replaced by their blocks, wrappers holding a stack are opened,
    everything else is one layer; ``granularity="op"`` splits each block into its direct
    children. Layers are named by qualified name (``model.layers.3``) and listed in the order
    the forward first calls them.

    The forward runs on a meta copy (the user's module is left as it is, wherever it lives),
    in eval mode, under ``torch.no_grad()`` and ``torch.device("meta")`` (so tensors the forward
    creates, such as position ids, are meta too), with one meta input tensor of ``input_shape``
    and ``input_dtype`` (default float32; an embedding needs an integer dtype such as torch.long).

    Per layer: ``params`` counts each parameter once, in the first layer holding it (a tied head
    owns none; its ``stored_params`` is the full count). Parameters outside every chain layer
    (registered on the root itself, or on a wrapper or stack that was opened) are attached to
    the **first layer** (``extra["root_params"]``), so the chain's total equals
    ``sum(p.numel() for p in module.parameters())``. ``out_elems``, ``buffer_elems`` and
    ``flops`` are per unit: per sample (divided by ``input_shape[0]``) or per token (by
    ``input_shape[0] * input_shape[1]``), rounded up. Tuple / list / dict outputs sum their
    tensors' elements; a layer called several times keeps its last output, sums its FLOPs and
    keeps its largest workspace. ``buffer_elems`` is the most elements the layer's intermediate
    tensors hold at any one moment of its call (what ``_Workspace`` counts: new, non-view
    tensors larger than the layer's output that its code creates and frees again; hidden-sized
    temporaries, its inputs, outputs, parameters and kept state left out), so a gated MLP
    ``down(act(gate(x)) * up(x))`` holds 3 x its intermediate size at the product; it is
    priced at the workload's activation dtype, and a term that grows with the sequence (eager
    attention scores) is right per token at the traced sequence length only. FLOPs are 2 per
    multiply-add of the nn.Linear, nn.Conv{1,2,3}d, nn.ConvTranspose{1,2,3}d, transformers
    Conv1D and nn.MultiheadAttention (projections only) modules inside the layer; everything
    else counts 0. ``dtype`` is the layer's parameter dtype (the one holding most elements),
    ``kind`` the class name lower-cased. ``extra`` holds ``out_shapes``, ``out_dtypes``,
    ``calls`` (forward calls seen; 0 for a layer the forward never reached) and ``buffers``
    (buffer elements, if any).

    Raises SpecError when torch is missing, for a bad ``input_shape`` / ``input_dtype`` /
    ``unit`` / ``granularity``, or when the forward fails on meta (naming the innermost chain
    layer running).
    """
    torch = _import_torch()
    tnn = torch.nn  # not `nn`: that name is the type-checking import used in annotations
    if not isinstance(module, tnn.Module):
        raise SpecError(f"module: expected a torch.nn.Module, got {type(module).__name__}")
    shape = _check_shape(input_shape, unit)
    dtype = _resolve_dtype(torch, input_dtype)
    _check_granularity(granularity)
    units = shape[0] if unit == "sample" else shape[0] * shape[1]

    traced = _meta_copy(torch, module)
    chain = _chain(traced, tnn, granularity)
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
    first_call: list[int | None] = [None] * n
    running: list[tuple[int, int]] = []  # (chain position, call number), innermost last
    outputs: list[list[Any]] = [[] for _ in range(n)]
    flops = [0] * n
    workspace = [0] * n
    x = torch.empty(shape, dtype=dtype, device="meta")
    known = {id(t) for t in (*traced.parameters(), *traced.buffers())} | {id(x)}
    tracker = _Workspace(known)
    started = 0

    def pre_hook(mod: nn.Module, args: Any) -> None:
        nonlocal started
        pos = positions[id(mod)]
        k = seen_calls.get(id(mod), 0)
        seen_calls[id(mod)] = k + 1
        i = pos[min(k, len(pos) - 1)]
        calls[i] += 1
        if first_call[i] is None:
            first_call[i] = started
        running.append((i, started))
        tracker.begin(started)
        started += 1

    def post_hook(mod: nn.Module, args: Any, output: Any) -> None:
        i, call = running.pop()
        outputs[i] = list(_tensors(output, torch))
        workspace[i] = max(workspace[i], tracker.end(call, outputs[i]))

    def flops_hook(mod: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
        i = running[-1][0] if running else owner.get(id(mod))
        if i is not None:
            flops[i] += _flops(mod, args, kwargs, output, tnn)

    counted = (tnn.Linear, tnn.modules.conv._ConvNd, tnn.MultiheadAttention)
    handles = []
    for sub in traced.modules():
        if isinstance(sub, counted) or _is_hf_conv1d(sub):
            # prepend: runs before the chain's post hook pops the layer a Linear itself may be
            handles.append(sub.register_forward_hook(flops_hook, with_kwargs=True, prepend=True))
    for m in {id(m): m for _, m in chain}.values():  # once per module, not per position
        handles.append(m.register_forward_pre_hook(pre_hook))
        handles.append(m.register_forward_hook(post_hook))

    try:
        with torch.no_grad(), torch.device("meta"), _watch(torch, tracker.created):
            traced(x)
    except Exception as exc:
        where = chain[running[-1][0]][0] if running else ROOT
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
        tracker.close()

    uninit = tnn.parameter.UninitializedTensorMixin
    seen: set[int] = set()
    descs: list[dict[str, Any]] = []
    for i in _call_order(first_call):
        name, m = chain[i]
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
            "buffer_elems": _ceil_div(workspace[i], units),
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
