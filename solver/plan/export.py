"""A plan in each engine's own format: the environment variables, command-line flags or config
an engine reads its pipeline split from (each exporter's notes name the engine's source file
that reads it; solver/engines/rules.py holds the rules).

Every target places whole blocks and one tensor-parallel size for every stage; the formats that
count decoder layers per pipeline rank (vLLM, SGLang, TensorRT-LLM) also keep the embedding
with the first rank's blocks and the final norm and LM head with the last rank's. The rules are
checked from the plan's layers, not from the engine the plan was solved for, so any plan that
satisfies them exports; one that does not is refused with the reason and the ``solve --engine``
that makes it expressible.

Layer names. Zoo, spec and Hugging Face config plans name their layers ``embed``, ``block0`` ...
``head``; torch module plans use module paths (``model.embed_tokens``, ``model.layers.3``...).
The layers before the first block are the embedding (E), those after the last block the head
(L: final norm and LM head); the formats that take module names (torch pipelining, accelerate)
get the plan's own names for a torch module plan and Hugging Face Llama-style names for the
others (``_HF_PRE`` / ``_HF_POST``).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import InvalidInputError
from ..engines import ENGINES, block_positions
from .types import Plan

__all__ = ["TARGETS", "Export", "export_plan", "megatron_layout", "parse_megatron_layout"]

TARGETS: tuple[str, ...] = ("vllm", "sglang", "trtllm", "megatron", "torchtitan", "deepspeed",
                            "pipelining", "accelerate", "torchgpipe")
"""The formats ``export_plan`` writes."""

_COUNTING = ("vllm", "sglang", "trtllm")
"""Targets that take blocks per pipeline rank: no stage of the embedding or the head alone."""
_NO_TP = ("pipelining", "accelerate", "torchgpipe")
"""Targets without tensor parallelism of their own."""
_BY_NAME = ("pipelining", "accelerate")
"""Targets that take module names, not units of the chain."""
_ENGINE_FOR = {"torchgpipe": "deepspeed"}
"""The ``solve --engine`` whose rules a target shares, where it has none of its own."""
_TITLES = {"torchgpipe": "torchgpipe"}

_ZOO_NAME = re.compile(r"^(embed|head|block\d+)$")
_ZOO_PART = re.compile(r"^block\d+\.")
_HF_PRE = ("model.embed_tokens", "model.rotary_emb")
_HF_POST = ("model.norm", "lm_head")
_HF_MAPPING = ("embed -> model.embed_tokens + model.rotary_emb, blockN -> model.layers.N, "
               "head -> model.norm + lm_head (Hugging Face Llama-style module names)")


@dataclass(frozen=True)
class Export:
    """A plan in one target's format: what to set in the environment, the flags to pass, the
    config to write, and notes on using them."""

    target: str
    env: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "env": dict(self.env), "args": list(self.args),
                "config": dict(self.config), "notes": list(self.notes)}

    def command_line(self) -> str:
        """``args`` as one shell-quoted command-line fragment."""
        return shlex.join(self.args)


@dataclass(frozen=True)
class _Split:
    """The plan's stages seen as an engine sees them: blocks per stage, and which stage holds
    the layers before the first block (pre, the embedding) and after the last (post, the head)."""

    stages: tuple[tuple[str, ...], ...]
    pre: tuple[str, ...]
    blocks: tuple[str, ...]
    post: tuple[str, ...]
    counts: tuple[int, ...]
    """Blocks per stage."""
    has_pre: tuple[bool, ...]
    has_post: tuple[bool, ...]
    tp: int
    zoo: bool
    """Layers named embed / blockN / head (not module paths)."""

    @property
    def pp(self) -> int:
        return len(self.stages)

    def units(self) -> list[list[str]]:
        """The chain as an ``nn.Sequential(embed, *blocks, head)`` sees it: the pre layers as
        one unit, each block, the post layers as one unit."""
        return [u for u in (list(self.pre), *[[b] for b in self.blocks], list(self.post)) if u]

    def unit_counts(self) -> list[int]:
        return [int(e) + c + int(h) for e, c, h in zip(self.has_pre, self.counts, self.has_post,
                                                       strict=True)]


def _refuse(reason: str) -> InvalidInputError:
    return InvalidInputError(reason, field="to")


def _title(target: str) -> str:
    return _TITLES.get(target) or ENGINES[target].title


def _engine(target: str) -> str:
    return _ENGINE_FOR.get(target, target)


def _split(plan: Plan, target: str) -> _Split:
    """The block view of ``plan``, or the refusal saying why ``target`` cannot take it."""
    title, engine = _title(target), _engine(target)
    stages = tuple(tuple(st.layers) for st in plan.stages)
    names = [n for st in stages for n in st]
    parts = [n for n in names if _ZOO_PART.match(n)]
    if plan.model.granularity == "op" or parts:
        where = f" (layer {parts[0]!r})" if parts else ""
        raise _refuse(f"{title} places whole blocks, not their parts{where}: solve again at "
                      f"--granularity block or with --engine {engine}")
    degrees = [st.tp_degree for st in plan.stages]
    if target in _NO_TP and max(degrees) > 1:
        raise _refuse(f"{title} has no tensor parallelism; this plan's stages span "
                      f"{', '.join(map(str, degrees))} devices: solve again with --engine "
                      f"{engine} and without --tp")
    if len(set(degrees)) > 1:
        raise _refuse(f"{title} takes one tensor-parallel size for every stage; this plan has "
                      f"{', '.join(map(str, degrees))}: solve again with --engine {engine}")
    tp = degrees[0]
    zoo = all(_ZOO_NAME.match(n) for n in names)
    # module names taken as they are (a torch module plan to pipelining or accelerate): any
    # stage boundary between modules can be written
    by_name = target in _BY_NAME and not zoo
    positions = block_positions(names)
    if not positions:
        if by_name:
            none = (False,) * len(stages)
            return _Split(stages, (), (), (), (0,) * len(stages), none, none, tp, zoo)
        raise _refuse(f"{title} places transformer blocks; this plan's layers "
                      f"({', '.join(names[:4])}{'...' if len(names) > 4 else ''}) have none")
    first, last = positions[0], positions[-1]
    block_set = {names[i] for i in positions}
    between = [n for n in names[first:last + 1] if n not in block_set]
    if between and not by_name:
        raise _refuse(f"{title} takes one stack of blocks; layer {between[0]!r} sits between "
                      "blocks")
    pre, post = tuple(names[:first]), tuple(names[last + 1:])
    has_pre = tuple(any(n in pre for n in st) for st in stages)
    has_post = tuple(any(n in post for n in st) for st in stages)
    for what, group, holders in (("before the first block", pre, has_pre),
                                 ("after the last block", post, has_post)):
        held = [j for j, h in enumerate(holders) if h]
        if len(held) > 1 and not by_name:
            raise _refuse(f"{title} keeps the layers {what} ({', '.join(group)}) together; "
                          f"this plan splits them over stages {held[0]} and {held[-1]}: "
                          f"solve again with --engine {engine}")
    counts = tuple(sum(n in block_set for n in st) for st in stages)
    return _Split(stages, pre, tuple(names[i] for i in positions), post, counts, has_pre,
                  has_post, tp, zoo)


def _check_glued(split: _Split, target: str) -> None:
    """Blocks per rank: every stage holds a block, so the embedding rides with the first
    stage's and the head with the last's."""
    title = _title(target)
    for j, count in enumerate(split.counts):
        if count:
            continue
        if split.has_pre[j]:
            what = "the embedding with the first pipeline rank's blocks"
        elif split.has_post[j]:
            what = "the final norm and LM head with the last pipeline rank's blocks"
        else:
            what = "at least one block on every pipeline rank"
        raise _refuse(f"{title} keeps {what}; stage {j} holds {', '.join(split.stages[j])} "
                      f"alone: solve again with --engine {target}")


def _rank_note(plan: Plan, split: _Split) -> list[str]:
    ranks = [st.device_rank for st in plan.stages]
    if ranks == [j * split.tp for j in range(split.pp)]:
        return []
    return [f"pipeline rank j is stage j; the plan puts the stages on devices "
            f"{', '.join(map(str, ranks))}: order the devices so that they get ranks "
            f"{', '.join(str(j * split.tp) for j in range(split.pp))}"]


def _counting(plan: Plan, split: _Split, target: str) -> Export:
    _check_glued(split, target)
    pp, tp = str(split.pp), str(split.tp)
    partition = ",".join(map(str, split.counts))
    notes = _rank_note(plan, split)
    if target == "vllm":
        notes.append("set VLLM_PP_LAYER_PARTITION on every worker; one count per pipeline rank, "
                     f"summing to num_hidden_layers = {len(split.blocks)} "
                     "(vllm/distributed/utils.py get_pp_indices, vllm/envs.py)")
        return Export(target, {"VLLM_PP_LAYER_PARTITION": partition},
                      ["--pipeline-parallel-size", pp, "--tensor-parallel-size", tp], {}, notes)
    if target == "sglang":
        notes.append("set SGLANG_PP_LAYER_PARTITION on every worker; one count per pipeline "
                     f"rank, summing to {len(split.blocks)} decoder layers "
                     "(python/sglang/srt/distributed/utils.py get_pp_indices)")
        return Export(target, {"SGLANG_PP_LAYER_PARTITION": partition},
                      ["--pp-size", pp, "--tp-size", tp], {}, notes)
    notes.append("LLM API keyword arguments; pp_partition is a prototype option, one count per "
                 f"pipeline rank summing to {len(split.blocks)} decoder layers "
                 "(tensorrt_llm/mapping.py pp_layers)")
    return Export(target, {}, [], {"pipeline_parallel_size": split.pp,
                                   "tensor_parallel_size": split.tp,
                                   "pp_partition": list(split.counts)}, notes)


def megatron_layout(stages: list[tuple[bool, int, bool]]) -> str:
    """Megatron-Core's ``--pipeline-model-parallel-layout`` for stages given as (holds the
    embedding, decoder blocks, holds the loss): ``Et*3|t*5|t*4L``."""
    out = []
    for embed, count, loss in stages:
        body = "" if count == 0 else "t" if count == 1 else f"t*{count}"
        out.append(("E" if embed else "") + body + ("L" if loss else ""))
    return "|".join(out)


_LAYOUT_CHARS = {"E", "L", "t", "m"}


def parse_megatron_layout(layout: str, num_layers: int | None = None) -> list[list[str]]:
    """The stages of a Megatron-Core layout string, each a list of ``E`` (embedding), ``t``
    (decoder layer), ``m`` (MTP layer), ``L`` (loss), under the documented grammar
    (megatron/core/transformer/pipeline_parallel_layer_layout.py): ``|`` separates stages,
    ``x*n`` and ``(...)*n`` repeat, commas are cosmetic; ``E`` once and first, ``L`` once and
    last; with ``num_layers``, the count of ``t`` must equal it."""
    if not isinstance(layout, str) or not layout.strip():
        raise InvalidInputError(f"expected a layout string, got {layout!r}", field="layout")
    text = layout.replace(",", "")
    text = re.sub(r"\(([^)]+)\)\*(\d+)", lambda m: m.group(1) * int(m.group(2)), text)
    text = re.sub(r"(.)\*(\d+)", lambda m: m.group(1) * int(m.group(2)), text)
    stages = [list(stage) for stage in text.split("|")]
    flat = [c for stage in stages for c in stage]
    bad = sorted({c for c in flat if c not in _LAYOUT_CHARS})
    if bad:
        raise InvalidInputError(f"{layout!r}: unknown layer characters {', '.join(map(repr, bad))} "
                                "(known: E, t, m, L)", field="layout")
    for char, where, index in (("E", "first", 0), ("L", "last", -1)):
        if flat.count(char) != 1 or flat[index] != char:
            raise InvalidInputError(f"{layout!r}: {char} must appear once, {where}",
                                    field="layout")
    if num_layers is not None and flat.count("t") != num_layers:
        raise InvalidInputError(f"{layout!r}: {flat.count('t')} decoder layers (t), "
                                f"--num-layers is {num_layers}", field="layout")
    return stages


def _megatron(plan: Plan, split: _Split) -> Export:
    if not split.pre or not split.post:
        missing = "before its first block (E)" if not split.pre else "after its last block (L)"
        raise _refuse(f"Megatron-Core's layout begins with the embedding (E) and ends with the "
                      f"loss (L); this plan's model has no layer {missing}")
    layout = megatron_layout(list(zip(split.has_pre, split.counts, split.has_post, strict=True)))
    n = len(split.blocks)
    args = ["--pipeline-model-parallel-size", str(split.pp),
            "--tensor-model-parallel-size", str(split.tp), "--num-layers", str(n),
            "--pipeline-model-parallel-layout", layout]
    notes = _rank_note(plan, split)
    notes.append("the layout excludes --decoder-first/last-pipeline-num-layers and "
                 "--account-for-embedding/loss-in-pipeline-split "
                 "(megatron/core/transformer/pipeline_parallel_layer_layout.py)")
    counts = split.counts
    older: list[str] | None = None
    if len(set(counts)) == 1:
        older = []
        notes.append(f"an even split ({counts[0]} blocks a stage): older Megatron takes it "
                     "without first/last flags")
    elif counts[0] and counts[-1] and len(set(counts[1:-1])) <= 1:
        older = ["--decoder-first-pipeline-num-layers", str(counts[0]),
                 "--decoder-last-pipeline-num-layers", str(counts[-1])]
        notes.append(f"older Megatron (before the layout): {shlex.join(older)}; the middle "
                     "stages split the rest evenly (megatron/training/arguments.py)")
    else:
        why = ("a stage of the embedding or the loss alone" if not (counts[0] and counts[-1])
               else "middle stages of different sizes")
        notes.append("older Megatron's --decoder-first/last-pipeline-num-layers cannot give this "
                     f"split ({why}): use the layout")
    config = {"pipeline_model_parallel_size": split.pp, "tensor_model_parallel_size": split.tp,
              "num_layers": n, "pipeline_model_parallel_layout": layout, "older_flags": older}
    return Export("megatron", {}, args, config, notes)


def _torchtitan(plan: Plan, split: _Split) -> Export:
    parts: list[list[str]] = []
    index = {b: i for i, b in enumerate(split.blocks)}
    for j, stage in enumerate(split.stages):
        part = ["tok_embeddings"] if split.has_pre[j] else []
        part += [f"layers.{index[n]}" for n in stage if n in index]
        part += ["norm", "output"] if split.has_post[j] else []
        parts.append(part)
    notes = _rank_note(plan, split)
    notes.append("one model part per pipeline rank: use a single-stage schedule (1F1B, GPipe); "
                 "torchtitan's Llama names: the embedding -> tok_embeddings, block i -> layers.i, "
                 "the head -> norm + output (torchtitan/distributed/pipeline_parallel.py)")
    config = {"parallelism": {"pipeline_parallel_degree": split.pp,
                              "tensor_parallel_degree": split.tp,
                              "module_fqns_per_model_part": parts}}
    return Export("torchtitan", {}, [], config, notes)


def _deepspeed(plan: Plan, split: _Split) -> Export:
    bounds = [0]
    for count in split.unit_counts():
        bounds.append(bounds[-1] + count)
    notes = _rank_note(plan, split)
    notes.append("PipelineModule takes no explicit split (partition_method is parameters, "
                 "uniform or type:regex): subclass it and override _partition_layers to set "
                 "self.parts = parts, over the layer specs [embed, *blocks, head] "
                 "(deepspeed/runtime/pipe/module.py)")
    config = {"num_stages": split.pp, "parts": bounds, "layers": split.units(),
              "topology": {"num_pp": split.pp, "num_mp": split.tp}}
    return Export("deepspeed", {}, [], config, notes)


def _torchgpipe(plan: Plan, split: _Split) -> Export:
    balance = split.unit_counts()
    notes = _rank_note(plan, split)
    notes.append("balance over nn.Sequential(embed, *blocks, head), every entry > 0, summing to "
                 f"its {sum(balance)} layers (torchgpipe/gpipe.py; fairscale Pipe alike)")
    return Export("torchgpipe", {}, [], {"balance": balance, "layers": split.units()}, notes)


def _module_names(split: _Split, stage: tuple[str, ...]) -> list[str]:
    """The module names of a stage's layers: Hugging Face Llama-style for zoo names, the
    plan's own otherwise."""
    if not split.zoo:
        return list(stage)
    out: list[str] = []
    for name in stage:
        if name == "embed":
            out += _HF_PRE
        elif name == "head":
            out += _HF_POST
        else:
            out.append(f"model.layers.{name[len('block'):]}")
    return out


def _pipelining(plan: Plan, split: _Split) -> Export:
    points = [_module_names(split, stage)[0] for stage in split.stages[1:]]
    notes = _rank_note(plan, split)
    notes.append(("module names: " + _HF_MAPPING) if split.zoo else
                 "split points are the plan's own module names")
    notes.append("pipeline(model, mb_args, split_spec={name: SplitPoint.BEGINNING}) gives one "
                 "stage per entry plus one; the model must trace under torch.export "
                 "(torch/distributed/pipelining/_IR.py)")
    config = {"split_spec": {p: "BEGINNING" for p in points}, "num_stages": split.pp}
    return Export("pipelining", {}, [], config, notes)


def _accelerate(plan: Plan, split: _Split) -> Export:
    device_map = {name: j for j, stage in enumerate(split.stages)
                  for name in _module_names(split, stage)}
    notes = _rank_note(plan, split)
    notes.append(("module names: " + _HF_MAPPING) if split.zoo else
                 "module names are the plan's own layer names")
    notes.append("device_map values are device indices, one device per stage; dispatch_model "
                 "runs the stages one at a time (naive pipeline; src/accelerate/big_modeling.py)")
    return Export("accelerate", {}, [], {"device_map": device_map}, notes)


def export_plan(plan: Plan, target: str) -> Export:
    """``plan`` in ``target``'s format (one of TARGETS). InvalidInputError (field ``to``) where
    the target cannot express the plan, naming why and the ``solve --engine`` that makes a
    plan it can."""
    if target not in TARGETS:
        raise InvalidInputError(f"unknown target {target!r} (known: {', '.join(TARGETS)})",
                                field="to")
    training = plan.workload.get("phase") == "train"
    if training and target in (*_COUNTING, "accelerate"):
        raise _refuse(f"{_title(target)} serves (forward passes only); this is a training plan: "
                      "export it to megatron, torchtitan, deepspeed, pipelining or torchgpipe")
    split = _split(plan, target)
    if target in _COUNTING:
        return _counting(plan, split, target)
    exporters = {"megatron": _megatron, "torchtitan": _torchtitan, "deepspeed": _deepspeed,
                 "torchgpipe": _torchgpipe, "pipelining": _pipelining,
                 "accelerate": _accelerate}
    export = exporters[target](plan, split)
    return _with_training(export, plan) if training else export


def _with_training(export: Export, plan: Plan) -> Export:
    """A training plan's schedule, micro-batches and recompute in the target's own terms."""
    wl = plan.workload
    schedule, m = wl.get("schedule", "1f1b"), int(wl.get("microbatches", 1))
    micro = int(wl.get("micro_batch") or wl.get("batch") or 1)
    seq = wl.get("seq_len")
    recompute, optimizer = wl.get("recompute", "none"), wl.get("optimizer", "adam")
    args, config, notes = list(export.args), dict(export.config), list(export.notes)
    title = _title(export.target)
    if export.target == "megatron":
        if schedule != "1f1b":
            raise _refuse("Megatron-Core runs 1F1B (interleaved with virtual stages), not GPipe; "
                          "this plan's memory assumes gpipe: solve again with --schedule 1f1b")
        args += ["--micro-batch-size", str(micro), "--global-batch-size", str(micro * m),
                 "--optimizer", optimizer]
        if seq is not None:
            args += ["--seq-length", str(seq)]
        if recompute == "selective":
            args += ["--recompute-granularity", "selective"]
        elif recompute == "full":
            args += ["--recompute-granularity", "full", "--recompute-method", "uniform",
                     "--recompute-num-layers", "1"]
        if wl.get("precision", "mixed") == "mixed":
            args.append("--bf16")
        else:
            notes.append("pure bf16 training (no fp32 main weights) has no flag here: --bf16 "
                         "keeps fp32 main weights and optimizer state, 16 bytes a parameter")
        notes.append(f"global batch = micro-batch x {m} micro-batches (data parallel size 1); "
                     "megatron/training/arguments.py")
    elif export.target == "torchtitan":
        par = dict(config.get("parallelism", {}))
        par.update(pipeline_parallel_schedule="1F1B" if schedule == "1f1b" else "GPipe",
                   pipeline_parallel_microbatch_size=micro)
        config["parallelism"] = par
        config["training"] = {"local_batch_size": micro * m, **({} if seq is None else
                                                               {"seq_len": seq})}
        config["activation_checkpoint"] = {"mode": recompute}
        if optimizer != "adam":
            notes.append(f"optimizer {optimizer}: torchtitan's optimizers are Adam and AdamW; "
                         "the plan's memory counts SGD's smaller state")
    elif export.target == "deepspeed":
        config.update(train_micro_batch_size_per_gpu=micro, gradient_accumulation_steps=m)
        if schedule != "1f1b":
            notes.append("DeepSpeed's TrainSchedule interleaves forwards and backwards (1F1B); "
                         "under it each stage holds at most as many stashes as GPipe would")
    elif export.target == "pipelining":
        config.update(schedule="Schedule1F1B" if schedule == "1f1b" else "ScheduleGPipe",
                      n_microbatches=m)
    elif export.target == "torchgpipe":
        if schedule != "gpipe":
            raise _refuse(f"{title} runs GPipe (every forward before the first backward); this "
                          "plan's memory assumes 1f1b: solve again with --schedule gpipe")
        config.update(chunks=m, checkpoint="always" if recompute == "full" else "never")
    return Export(export.target, dict(export.env), args, config, notes)
