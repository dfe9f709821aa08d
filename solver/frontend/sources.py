"""Turn a MODEL argument into a footprint-annotated LayerGraph.

MODEL is a zoo name, a spec YAML, a Hugging Face config.json or checkpoint directory (config.json
and safetensors files), a chain JSON, or a torch module factory (``file.py:factory`` or
``package.module:factory``, built on the meta device).
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from models.errors import SpecError
from models.layers import LayerDesc
from models.spec import ModelSpec, load_spec
from models.transformer import Granularity
from models.zoo import load_zoo_model, zoo_names

from ..core.errors import InvalidInputError
from ..core.extensions import allreduce_counts
from ..core.files import check_name, display_path, read_json, shorten
from ..hardware.catalogue import Device, get_device
from ..hardware.cost import overhead_time, roofline_latency
from ..hardware.footprint import DTYPE_BYTES, LayerFootprint, Workload, footprints
from ..hardware.training import TrainOptions, train_footprints
from .chain import chain_from_dict
from .graph import LayerGraph

__all__ = [
    "LoadedModel",
    "absolute_source",
    "bandwidth_tier",
    "graph_from_layers",
    "load_model",
    "model_layers",
    "per_sample_kind",
]


@dataclass
class LoadedModel:
    """A model ready to partition, with what was learned loading it."""

    graph: LayerGraph
    kind: str
    """zoo, spec, hf-config, hf-checkpoint (a directory), chain or torch."""
    params: int | None = None
    footprints: list[LayerFootprint] = field(default_factory=list)
    spec: ModelSpec | None = None
    warnings: list[str] = field(default_factory=list)


def bandwidth_tier(device: Device, tier: str | None) -> str | None:
    """The tier whose bandwidth times a stage held in ``tier``: itself when the catalogue has a
    figure, else the nearest slower tier that has one (l2, then main memory), a conservative
    stand-in that load_model reports as a warning."""
    if tier is None or tier in device.tier_bandwidth:
        return tier
    for slower in ("l2", device.main_memory):
        if slower in device.tier_bandwidth:
            return slower
    return None


def per_sample_kind(arch: object) -> str | None:
    """'cnn' or 'vit' for architectures sized per image, else None."""
    if arch is None:
        return None
    if getattr(arch, "kind", None) == "vit":
        return "vit"
    return "cnn" if hasattr(arch, "blocks") and hasattr(arch, "expansion") else None


def _is_module_factory(source: str) -> bool:
    head, sep, tail = source.rpartition(":")
    return bool(sep) and tail.isidentifier() and not os.path.exists(source) and \
        (head.endswith(".py") or all(p.isidentifier() for p in head.split(".")))


def _local_checkpoint(source: str) -> bool:
    """A checkpoint directory here: it wins over a zoo model of the same name (a downloaded
    ``gpt2/`` is the user's model, not the zoo's)."""
    from models.checkpoint import is_checkpoint_dir

    return is_checkpoint_dir(source)


def absolute_source(source: str) -> str:
    """``source`` as a plan records it, so the plan runs from any directory: a file or folder
    made absolute (``file.py:factory`` too); a zoo name or an importable module unchanged."""
    check_name(source, "MODEL")
    if source in zoo_names() and not _local_checkpoint(source):
        return source
    path = Path(source)
    if os.path.exists(path):  # os.path: False, not an OSError, for a path it cannot stat
        return str(path.resolve())
    if _is_module_factory(source):
        head, _, attr = source.rpartition(":")
        if head.endswith(".py") and os.path.isfile(head):
            return f"{Path(head).resolve()}:{attr}"
    return source


def model_layers(source: str, granularity: Granularity = "block",
                 input_shape: tuple[int, ...] | None = None,
                 input_dtype: str | None = None) -> tuple[str, list[LayerDesc],
                                                          ModelSpec | None, str]:
    """(name, layer descriptors, spec if any, kind) of a non-chain MODEL."""
    check_name(source, "MODEL")
    try:
        if source in zoo_names() and not _local_checkpoint(source):
            spec = load_zoo_model(source)
            return spec.name, spec.arch.layer_descs(granularity), spec, "zoo"
        path = Path(source)
        if os.path.isdir(path):
            from models.checkpoint import CONFIG_FILE, is_checkpoint_dir
            from models.hf import spec_from_hf_config

            if not is_checkpoint_dir(path):
                raise InvalidInputError(f"MODEL {shorten(source)}: a directory without config.json (a "
                                        "checkpoint directory holds config.json and safetensors "
                                        "files)")
            # read_json, not models.checkpoint.read_config: the bounded reader every input uses
            config = read_json(path / CONFIG_FILE)
            if not isinstance(config, dict):
                raise InvalidInputError(f"{display_path(path / CONFIG_FILE)}: expected a JSON "
                                        f"object, got {type(config).__name__}")
            name, arch = spec_from_hf_config(config, display_path(path / CONFIG_FILE))
            if not config.get("_name_or_path"):
                name = path.resolve().name  # the folder names the model better than "config"
            spec = ModelSpec(name=name, arch=arch, source=str(path))
            return name, arch.layer_descs(granularity), spec, "hf-checkpoint"
        if path.suffix.lower() in (".yaml", ".yml"):
            spec = load_spec(path)
            return spec.name, spec.arch.layer_descs(granularity), spec, "spec"
        if path.suffix.lower() == ".json":
            from models.hf import load_hf_config

            name, arch = load_hf_config(path)
            spec = ModelSpec(name=name, arch=arch, source=str(path))
            return name, arch.layer_descs(granularity), spec, "hf-config"
        if _is_module_factory(source):
            from models.torch_import import load_module_from_path, module_layers

            if input_shape is None:
                raise InvalidInputError(f"MODEL {shorten(source)} is a torch module: give its sample "
                                        "input shape (for example 8,128)", field="input_shape")
            module = load_module_from_path(source)
            # Integer input means token ids (B, S): sizes per token; otherwise per sample.
            unit: Literal["token", "sample"] = \
                "token" if input_dtype in ("long", "int64", "int32") else "sample"
            layers = module_layers(module, input_shape, input_dtype=input_dtype, unit=unit,
                                   granularity=granularity)
            return source.rpartition(":")[2], layers, None, "torch"
    except SpecError as exc:
        raise InvalidInputError(str(exc)) from None
    if os.path.exists(source):
        raise InvalidInputError(f"MODEL: {shorten(source)}: unsupported file type (expected a spec "
                                ".yaml, a chain or HF config .json, or file.py:factory)")
    raise InvalidInputError(f"MODEL: {shorten(source)} is neither a file nor a zoo model "
                            f"(zoo: {', '.join(zoo_names())})")


def graph_from_layers(name: str, layers: list[LayerDesc], workload: Workload,
                      device: Device, *, input_bytes: int = 0, tier: str | None = None,
                      unit: str = "tokens",
                      metadata: dict[str, Any] | None = None) -> tuple[LayerGraph, list[LayerFootprint]]:
    """Annotate descriptors with footprints and roofline latencies as a chain LayerGraph.

    With an on-chip ``tier`` (the capacity the plan must fit), a layer's data is read at that
    tier's bandwidth (``latency_s``); ``latency_hbm_s`` keeps the time with its weights streamed
    from main memory, which tiered residency needs."""
    fps = footprints(layers, workload)
    train = None
    if workload.phase == "train":
        options = TrainOptions(workload.optimizer, workload.precision, workload.recompute)
        train = train_footprints(layers, workload, options)
    on_chip = tier is not None and tier != device.main_memory
    speed_tier = bandwidth_tier(device, tier) if on_chip else tier
    rows: list[dict[str, Any]] = []
    previous = input_bytes
    act_size = DTYPE_BYTES[workload.activation_dtype]
    reduce_size = max(act_size, DTYPE_BYTES["bf16"])
    for fp in fps:
        hbm = roofline_latency(fp, device, workload, input_bytes=previous)
        desc = layers[len(rows)]
        allreduces = int(allreduce_counts([fp.kind])[0])
        row = {"name": fp.name, "kind": fp.kind, "params": fp.params,
               "weight_bytes": fp.weight_bytes, "activation_bytes": fp.activation_bytes,
               "buffer_bytes": fp.buffer_bytes, "kv_cache_bytes": fp.kv_cache_bytes,
               "kv_bytes_per_token": fp.kv_bytes_per_token,
               "flops": fp.flops, "bytes_moved": fp.bytes_moved, "latency_s": hbm,
               "overhead_s": overhead_time(fp, device),
               "allreduces": allreduces,
               # all-reduced in at least 16 bits: FP8 and INT8 runs reduce their partial sums
               # in BF16, so the bytes are the output's at the reduction dtype
               "allreduce_bytes": allreduces
               * math.ceil(fp.activation_bytes * reduce_size / act_size)}
        if desc.attention is not None:
            row["heads"] = desc.attention.heads
            row["kv_heads"] = desc.attention.kv_heads
        if on_chip:
            row["latency_s"] = roofline_latency(fp, device, workload, speed_tier,
                                                input_bytes=previous)
            row["latency_hbm_s"] = hbm
        if train is not None:
            tf = train[len(rows)]
            # The backward pass: input and weight gradients (2x the forward FLOPs) plus what is
            # recomputed, reading the weights and activations and writing their gradients
            # (about twice the forward's traffic), at the tier the forward ran in.
            back_flops = tf.backward_flops + tf.recompute_flops
            share = back_flops / fp.flops if fp.flops else 0.0
            back = dataclasses.replace(  # each class scaled alike: attention stays attention
                fp, flops=back_flops, bytes_moved=2 * fp.bytes_moved,
                attention_flops=fp.attention_flops * share,
                weight_read=None if fp.weight_read is None else 2 * fp.weight_read)
            row["backward_latency_s"] = roofline_latency(
                back, device, workload, speed_tier if on_chip else None, input_bytes=previous)
            row["stash_bytes"] = tf.stash_bytes
            row["train_state_bytes"] = tf.train_state_bytes
            row["backward_flops"] = tf.backward_flops
            row["recompute_flops"] = tf.recompute_flops
        rows.append(row)
        previous = fp.activation_bytes
    meta = {"workload": {**workload.to_dict(), "throughput_unit": unit},
            "device": device.name, "tier": tier, "bandwidth_tier": speed_tier,
            **(metadata or {})}
    graph = LayerGraph.chain(name, rows, input_bytes=input_bytes, link=device.link, metadata=meta)
    return graph, fps


def _input_bytes(layers: list[LayerDesc], spec: ModelSpec | None, workload: Workload) -> int:
    """The model input fed to stage 0: token ids (int32), or images in the activation dtype."""
    arch = spec.arch if spec is not None else None
    if arch is not None and hasattr(arch, "image") and getattr(arch, "kind", "cnn") != "decoder" \
            and getattr(arch, "image", 0):
        per = arch.channels * arch.image**2  # type: ignore[attr-defined]
        return int(workload.sequences * per * DTYPE_BYTES[workload.activation_dtype])
    if layers and layers[0].unit == "token":
        return workload.tokens_per_step * 4
    return 0


def load_model(source: str, workload: Workload | None = None, *,
               granularity: Granularity = "block", device: str = "h100-sxm",
               input_shape: tuple[int, ...] | None = None,
               input_dtype: str | None = None, tier: str | None = None) -> LoadedModel:
    """Load MODEL as a LayerGraph. A chain JSON already carries its bytes and times, so the
    workload, granularity and device do not apply to it."""
    check_name(source, "MODEL")
    path = Path(source)
    if path.suffix.lower() == ".json" and os.path.exists(path):
        # One read: a chain is an object with "layers"; anything else is tried as an HF config.
        doc = read_json(path, "model")
        if isinstance(doc, dict) and "layers" in doc:
            try:
                return LoadedModel(chain_from_dict(doc, default_name=path.stem), "chain")
            except InvalidInputError as exc:
                raise InvalidInputError(f"{display_path(path)}: {exc}") from None
    if granularity not in ("block", "op"):
        raise InvalidInputError(f"expected block or op, got {granularity!r}", field="granularity")
    workload = workload or Workload()
    dev = get_device(device)
    name, layers, spec, kind = model_layers(source, granularity, input_shape, input_dtype)
    warnings = []
    if kind == "hf-checkpoint" and source in zoo_names():
        warnings.append(f"MODEL {source!r} is both a zoo model and a checkpoint directory here: "
                        "using the directory (run from elsewhere for the zoo model)")
    if spec is not None and (warning := spec.parameter_warning()) is not None:
        warnings.append(warning)
    arch = spec.arch if spec is not None else None
    positions, context = getattr(arch, "positions", 0), getattr(arch, "context", 0)
    if per_sample_kind(arch) is None:
        if positions and workload.seq_len > positions:
            warnings.append(f"a sequence length of {workload.seq_len} exceeds the {positions} "
                            f"learned positions of {name}: the model cannot run at this length")
        elif context and workload.seq_len > context:
            warnings.append(f"a sequence length of {workload.seq_len} exceeds the {context}-token "
                            f"context of {name} (max_position_embeddings): beyond it a rotary "
                            "model runs, but its output is not what it was trained for")
    if workload.phase == "decode" and (kind_of := per_sample_kind(arch) or
                                       getattr(arch, "kind", None)) in ("encoder", "vit", "cnn"):
        warnings.append(f"decode phase: {name} is an {kind_of} model, which does not decode "
                        "token by token; its footprint is computed as asked")
    params = sum(layer.params for layer in layers)
    meta: dict[str, Any] = {"params": params, "source_kind": kind, "granularity": granularity}
    # Vision models (per-sample sizes, or a fixed token count per image) count images, not tokens.
    per_sample = bool(layers) and (layers[0].unit == "sample" or layers[0].tokens_per_sample is not None)
    if spec is not None and spec.declared_params:
        meta["declared_params"] = spec.declared_params
    graph, fps = graph_from_layers(name, layers, workload, dev,
                                   unit="samples" if per_sample else "tokens",
                                   input_bytes=_input_bytes(layers, spec, workload), tier=tier,
                                   metadata=meta)
    used = graph.metadata.get("bandwidth_tier")
    if tier is not None and tier != dev.main_memory and used != tier:
        warnings.append(f"{dev.name} has no bandwidth figure for {tier!r}: latencies use the "
                        f"bandwidth of {used or dev.main_memory!r}, so they are upper bounds")
    return LoadedModel(graph, kind, params, fps, spec, warnings)
