"""``cachepart profile MODEL --batch B --seq S -o profile.json``: time a model's layers here.

Every block-granularity layer (embed, block0 .., head) of a zoo decoder (or a spec YAML /
Hugging Face config.json describing one) is built alone with synthetic weights and timed on
this machine's device: a few warm-up calls, then the median of the timed repeats.

A torch module factory (``file.py:factory --input-shape B,S [--input-dtype long]``) is built
whole with seeded weights and run once; each of its chain layers (``--granularity block`` or
``op``, the names ``cachepart solve`` plans with) is then timed on the inputs that forward gave
it. The profile's model and workload are what ``solve MODEL --input-shape ... --profile`` checks.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path
from typing import Any

from ..core.errors import InvalidInputError
from ..core.files import check_output_path, read_json
from ..core.units import parse_shape
from .exit_codes import ExitCode

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "profile", help="time every layer of a decoder or a torch module on this machine's device",
        description="Time every block-granularity layer of a zoo decoder, or every chain layer "
                    "of a torch module factory, on the current device (synthetic seeded "
                    "weights; median of the timed repeats) and write a profile JSON.")
    p.add_argument("model", metavar="MODEL",
                   help="a zoo decoder (see `cachepart zoo`), a spec .yaml, a HF config.json, "
                        "or a torch module factory file.py:factory (with --input-shape)")
    p.add_argument("--batch", type=int, default=None,
                   help="sequences per batch (default 1; a torch module takes its batch from "
                        "--input-shape)")
    p.add_argument("--seq", type=int, default=None,
                   help="tokens per sequence (default 2048; a torch module takes it from "
                        "--input-shape)")
    p.add_argument("--input-shape", default=None, metavar="B,S",
                   help="a torch module MODEL: its input shape, for example 8,128")
    p.add_argument("--input-dtype", default=None, choices=["float32", "bfloat16", "float16",
                                                           "long", "int32"],
                   help="a torch module MODEL: its input dtype (default float32); long or int32 "
                        "means token ids of shape B,S")
    p.add_argument("--granularity", choices=["block", "op"], default="block",
                   help="a torch module MODEL: time each block (default) or each block's parts")
    p.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default=None,
                   help="default: bf16 on a GPU, fp32 on a CPU")
    p.add_argument("--torch-device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="where to run (default auto: cuda when available)")
    p.add_argument("--device-name", default=None,
                   help="the device's name in the profile (default: what torch reports)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per layer (default 2)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per layer (default 5)")
    p.add_argument("--seed", type=int, default=0, help="weights and input seed (default 0)")
    p.add_argument("--output", "-o", required=True, metavar="PROFILE", help="profile JSON path")
    p.set_defaults(handler=run)
    return p


def _refuse_cachepart_json(source: str) -> None:
    """A chain JSON (told apart from an HF config.json the way load_model does: its layers) or
    a plan JSON holds no architecture: say so, rather than that model_type is missing."""
    path = Path(source)
    if path.suffix.lower() != ".json" or not path.is_file():
        return
    doc = read_json(path, "model")  # refuses what no reader should parse, in one line
    if not isinstance(doc, dict):
        return
    needs = ("profile needs a zoo decoder, a spec YAML or an HF config.json, or a torch "
             "module file.py:factory")
    if "layers" in doc:
        raise InvalidInputError(f"MODEL {source!r}: a chain JSON (layer sizes and times, no "
                                f"architecture to build); {needs}")
    if "stages" in doc and "schema_version" in doc:
        model = doc.get("model")
        origin = model.get("source") if isinstance(model, dict) else None
        hint = f" (its model: {origin!r})" if isinstance(origin, str) and origin else ""
        raise InvalidInputError(f"MODEL {source!r}: a plan JSON{hint}, not a model; {needs}")


def _spec(source: str) -> tuple[str, Any]:
    from models.transformer import TransformerSpec

    from ..frontend.sources import model_layers

    _refuse_cachepart_json(source)
    name, _, spec, kind = model_layers(source)
    arch = spec.arch if spec is not None else None
    if not isinstance(arch, TransformerSpec) or arch.kind != "decoder":
        what = kind if arch is None else getattr(arch, "kind", type(arch).__name__)
        raise InvalidInputError(f"MODEL {source!r}: profile times decoders only (got {what})")
    return name, arch


def _is_module_factory(source: str) -> bool:
    from ..frontend.sources import _is_module_factory as is_factory

    return is_factory(source)


def _check_options(args: argparse.Namespace, factory: bool) -> None:
    """One line naming the option for what does not fit MODEL's kind, before any timing."""
    for flag in ("batch", "seq", "repeats"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise InvalidInputError(f"must be >= 1, got {value}", field=flag)
    if args.warmup < 0:
        raise InvalidInputError(f"must be >= 0, got {args.warmup}", field="warmup")
    if factory:
        for flag in ("batch", "seq"):
            if getattr(args, flag) is not None:
                raise InvalidInputError(f"a torch module MODEL takes its {flag} from "
                                        "--input-shape", field=flag)
        if args.input_shape is None:
            raise InvalidInputError(f"MODEL {args.model!r} is a torch module: give its input "
                                    "shape (for example 8,128)", field="input_shape")
        shape = parse_shape(args.input_shape)
        if args.input_dtype in ("long", "int32") and shape is not None and len(shape) < 2:
            raise InvalidInputError(f"token ids need B,S, got {args.input_shape!r}",
                                    field="input_shape")
        return
    for flag in ("input_shape", "input_dtype"):
        if getattr(args, flag) is not None:
            raise InvalidInputError("applies to a torch module MODEL (file.py:factory) only",
                                    field=flag)
    if args.granularity != "block":
        raise InvalidInputError("op: a zoo decoder is profiled per block; op applies to a torch "
                                "module MODEL (file.py:factory)", field="granularity")


def _module_workload(args: argparse.Namespace, shape: tuple[int, ...]) -> dict[str, Any]:
    """What `solve` compares with its own workload: the batch, and for token ids the
    sequence length; the input itself, for the record."""
    workload: dict[str, Any] = {"batch": shape[0]}
    if args.input_dtype in ("long", "int32"):
        workload["seq_len"] = shape[1]
    workload.update({"phase": "prefill", "input_shape": list(shape),
                     "input_dtype": args.input_dtype or "float32",
                     "granularity": args.granularity})
    return workload


def run(args: argparse.Namespace) -> int:
    factory = _is_module_factory(args.model)
    _check_options(args, factory)
    if importlib.util.find_spec("torch") is None:
        raise InvalidInputError("profile needs PyTorch: pip install 'cachepart[torch]'")
    check_output_path(args.output, "output")  # before the timing, not after it
    if factory:
        shape = parse_shape(args.input_shape) or ()
        # the traced chain (names, order) is the planner's: a bad shape fails here, on meta
        from ..frontend.sources import model_layers

        name = model_layers(args.model, args.granularity, shape, args.input_dtype)[0]
    else:
        name, spec = _spec(args.model)
    import torch

    from ..frontend.profiles import PROFILE_SCHEMA
    from ..runner.profiling import device_name, profile_layers, profile_module_layers

    if args.torch_device == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError("cuda: no CUDA device is visible", field="torch_device")
    use_cuda = args.torch_device == "cuda" or (args.torch_device == "auto"
                                               and torch.cuda.is_available())
    device = torch.device("cuda" if use_cuda else "cpu")
    dtype = args.dtype or ("bf16" if use_cuda else "fp32")
    if factory:
        from models.errors import SpecError

        try:
            timings = profile_module_layers(args.model, shape, input_dtype=args.input_dtype,
                                            granularity=args.granularity, dtype=dtype,
                                            device=device, warmup=args.warmup,
                                            repeats=args.repeats, seed=args.seed)
        except SpecError as exc:
            raise InvalidInputError(str(exc)) from None
        workload = {**_module_workload(args, shape), "dtype": dtype}
        what = f"input {'x'.join(map(str, shape))}"
    else:
        batch, seq = args.batch or 1, args.seq or 2048
        timings = profile_layers(spec, batch=batch, seq_len=seq, dtype=dtype,
                                 device=device, warmup=args.warmup, repeats=args.repeats,
                                 seed=args.seed)
        workload = {"batch": batch, "seq_len": seq, "phase": "prefill", "dtype": dtype}
        what = f"{batch} x {seq} tokens"
    doc = {
        "schema": PROFILE_SCHEMA, "model": name,
        "device": args.device_name or device_name(device), "torch_device": str(device),
        "workload": workload,
        "layers": [t.to_dict() for t in timings],
    }
    if factory:
        doc["source"] = args.model
    try:
        Path(args.output).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise InvalidInputError(f"{args.output}: cannot write ({exc.strerror})",
                                field="output") from None
    total = sum(t.latency_s for t in timings)
    print(f"{name}: {len(timings)} layers timed on {doc['device']}, {total:.4g} s per forward "
          f"of {what}; profile written to {args.output}")
    return ExitCode.OK
