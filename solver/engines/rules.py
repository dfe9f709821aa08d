"""What each serving or training engine accepts as a pipeline split, read from its sources.

Every engine places whole transformer blocks (block granularity) and takes one tensor-parallel
size for the whole pipeline. Those that count decoder layers per pipeline rank (vLLM, SGLang,
TensorRT-LLM) keep the embedding with the first rank's blocks and the final norm and LM head
with the last rank's: a stage of the embedding alone, or of the head alone, has no way to be
written. Megatron's layout (``E`` and ``L`` are stage contents of their own), torchtitan's
module lists, torch pipelining's split points, accelerate's device map and DeepSpeed's part
boundaries can all hold those alone. Serving engines keep part of each device for themselves:
the model's share is ``memory_fraction`` of the capacity. Sources: the files named per
engine.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.errors import InvalidInputError

__all__ = ["ENGINES", "Engine", "default_split", "get_engine", "parameter_split",
           "sglang_memory_fraction", "split_bounds"]


@dataclass(frozen=True)
class Engine:
    """One engine's rules for a pipeline split."""

    name: str
    title: str
    glue_embed: bool
    """The embedding must share the first stage with at least one block."""
    glue_head: bool
    """The final norm and LM head must share the last stage with at least one block."""
    memory_fraction: float | None
    """The share of a device's memory the engine lets the model (weights, activations, its KV
    cache) use by default; None: the whole device."""
    memory_source: str
    knob: str
    """How a split is handed to the engine."""
    source: str
    """The file that reads it."""
    default_rule: str
    """How the engine splits the blocks when told nothing."""

    def capacity(self, capacity_bytes: int, fraction: float | None = None,
                 tp: int = 1) -> int:
        """The bytes a stage may hold on a device of ``capacity_bytes``."""
        share = fraction if fraction is not None else self.memory_fraction
        if self.name == "sglang" and fraction is None:
            share = sglang_memory_fraction(tp)
        return capacity_bytes if share is None else int(capacity_bytes * share)


ENGINES: dict[str, Engine] = {e.name: e for e in (
    Engine("vllm", "vLLM", True, True, 0.9,
           "gpu_memory_utilization, default 0.9 (vllm/config/cache.py)",
           "env VLLM_PP_LAYER_PARTITION + --pipeline-parallel-size",
           "vllm/distributed/utils.py get_pp_indices",
           "n // P blocks each, the remainder one each to the ranks before the last"),
    Engine("sglang", "SGLang", True, True, None,
           "mem_fraction_static, by TP size when not given: 0.88 (1), 0.87 (2), 0.85 (4), "
           "0.81 (8), 0.79 (16) (python/sglang/srt/server_args.py)",
           "env SGLANG_PP_LAYER_PARTITION + --pp-size",
           "python/sglang/srt/distributed/utils.py get_pp_indices",
           "n // P blocks each, the remainder one each to the last ranks"),
    Engine("trtllm", "TensorRT-LLM", True, True, None,
           "KvCacheConfig.free_gpu_memory_fraction (0.9) takes memory left after the weights",
           "LLM API pipeline_parallel_size + pp_partition",
           "tensorrt_llm/mapping.py pp_layers",
           "n // P blocks each, the remainder one each to the first ranks"),
    Engine("megatron", "Megatron-Core", False, False, None, "none",
           "--pipeline-model-parallel-layout (or --decoder-first/last-pipeline-num-layers)",
           "megatron/core/transformer/pipeline_parallel_layer_layout.py",
           "n / P blocks each (n must divide evenly)"),
    Engine("torchtitan", "torchtitan", False, False, None, "none",
           "parallelism.module_fqns_per_model_part",
           "torchtitan/distributed/pipeline_parallel.py",
           "blocks split evenly, the embedding and the output counted as layers"),
    Engine("deepspeed", "DeepSpeed", False, False, None, "none",
           "PipelineModule parts (override _partition_layers)",
           "deepspeed/runtime/pipe/module.py",
           "partition_method='parameters': parameter counts balanced"),
    Engine("pipelining", "torch.distributed.pipelining", False, False, None, "none",
           "pipeline(model, mb_args, split_spec={fqn: SplitPoint.BEGINNING})",
           "torch/distributed/pipelining/_IR.py",
           "no default: split points are the user's"),
    Engine("accelerate", "accelerate", False, False, None, "none",
           "device_map {module name: device}", "src/accelerate/big_modeling.py",
           "infer_auto_device_map: fill each device in turn"),
)}


def get_engine(name: str) -> Engine:
    if name not in ENGINES:
        raise InvalidInputError(f"unknown engine {name!r} (known: {', '.join(ENGINES)})",
                                field="engine")
    return ENGINES[name]


def sglang_memory_fraction(tp: int) -> float:
    """SGLang's mem_fraction_static when the user gives none, by TP size."""
    for least, share in ((16, 0.79), (8, 0.81), (4, 0.85), (2, 0.87)):
        if tp >= least:
            return share
    return 0.88


def default_split(engine: str, blocks: int, stages: int) -> list[int]:
    """Blocks per pipeline rank when the engine is told nothing (the engines' own rules; the
    embedding and head go with the first and last ranks)."""
    if stages < 1 or blocks < stages:
        raise InvalidInputError(f"{blocks} blocks cannot fill {stages} pipeline ranks",
                                field="max_stages")
    base, extra = divmod(blocks, stages)
    split = [base] * stages
    if engine == "megatron" and extra:
        raise InvalidInputError(f"Megatron splits {blocks} blocks evenly over {stages} stages "
                                "only when they divide; give it a layout", field="max_stages")
    if engine == "vllm":
        for i in range(2, extra + 2):  # the ranks before the last, from the back
            split[-i] += 1
    elif engine == "trtllm":
        for i in range(extra):
            split[i] += 1
    else:  # sglang, megatron, torchtitan, deepspeed...: the last ranks
        for i in range(1, extra + 1):
            split[-i] += 1
    return split


def split_bounds(names: list[str], blocks_per_stage: list[int]) -> tuple[int, ...]:
    """Chain boundaries of a split given as blocks per stage: the layers before the first block
    go with the first stage, those after the last block with the last."""
    from .shape import block_positions

    blocks = block_positions(names)
    if sum(blocks_per_stage) != len(blocks) or min(blocks_per_stage) < 1:
        raise InvalidInputError(f"blocks per stage {blocks_per_stage} do not cover the "
                                f"{len(blocks)} blocks, one or more each", field="split")
    bounds = [0]
    taken = 0
    for count in blocks_per_stage[:-1]:
        taken += count
        bounds.append(blocks[taken])
    bounds.append(len(names))
    return tuple(bounds)


def parameter_split(weights: list[int], stages: int) -> tuple[int, ...]:
    """DeepSpeed's partition_method='parameters': contiguous parts of the layers with the
    largest part's parameter bytes as small as it can be (an exact min-max over the weights,
    ties to the earliest cuts). Boundaries over the layers."""
    n = len(weights)
    if not 1 <= stages <= n:
        raise InvalidInputError(f"{stages} parts of {n} layers", field="max_stages")
    prefix = [0]
    for w in weights:
        prefix.append(prefix[-1] + w)
    # best[k][e]: the smallest largest part covering layers [0, e) in k parts
    inf = float("inf")
    best = [[inf] * (n + 1) for _ in range(stages + 1)]
    cut = [[0] * (n + 1) for _ in range(stages + 1)]
    best[0][0] = 0
    for k in range(1, stages + 1):
        for e in range(k, n + 1):
            for s in range(k - 1, e):
                value = max(best[k - 1][s], prefix[e] - prefix[s])
                if value < best[k][e]:
                    best[k][e], cut[k][e] = value, s
    bounds = [n]
    for k in range(stages, 0, -1):
        bounds.append(cut[k][bounds[-1]])
    return tuple(reversed(bounds))
