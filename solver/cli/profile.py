"""``cachepart profile MODEL --batch B --seq S -o profile.json``: time a decoder's layers here.

Every block-granularity layer (embed, block0 .., head) of a zoo decoder (or a spec YAML /
Hugging Face config.json describing one) is built alone with synthetic weights and timed on
this machine's device: a few warm-up calls, then the median of the timed repeats.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path
from typing import Any

from ..core.errors import InvalidInputError
from ..core.files import check_output_path
from .exit_codes import ExitCode

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "profile", help="time every layer of a decoder on this machine's device",
        description="Time every block-granularity layer of a zoo decoder on the current device "
                    "(synthetic weights; median of the timed repeats) and write a profile JSON.")
    p.add_argument("model", metavar="MODEL",
                   help="a zoo decoder (see `cachepart zoo`), a spec .yaml or a HF config.json")
    p.add_argument("--batch", type=int, default=1, help="sequences per batch (default 1)")
    p.add_argument("--seq", type=int, default=2048, help="tokens per sequence (default 2048)")
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
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return  # the HF config reader words the error
    if not isinstance(doc, dict):
        return
    needs = "profile needs a zoo decoder, a spec YAML or an HF config.json"
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


def run(args: argparse.Namespace) -> int:
    for flag in ("batch", "seq", "repeats"):
        if getattr(args, flag) < 1:
            raise InvalidInputError(f"must be >= 1, got {getattr(args, flag)}", field=flag)
    if args.warmup < 0:
        raise InvalidInputError(f"must be >= 0, got {args.warmup}", field="warmup")
    if importlib.util.find_spec("torch") is None:
        raise InvalidInputError("profile needs PyTorch: pip install 'cachepart[torch]'")
    check_output_path(args.output, "output")  # before the timing, not after it
    name, spec = _spec(args.model)
    import torch

    from ..frontend.profiles import PROFILE_SCHEMA
    from ..runner.profiling import device_name, profile_layers

    if args.torch_device == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError("cuda: no CUDA device is visible", field="torch_device")
    use_cuda = args.torch_device == "cuda" or (args.torch_device == "auto"
                                               and torch.cuda.is_available())
    device = torch.device("cuda" if use_cuda else "cpu")
    dtype = args.dtype or ("bf16" if use_cuda else "fp32")
    timings = profile_layers(spec, batch=args.batch, seq_len=args.seq, dtype=dtype,
                             device=device, warmup=args.warmup, repeats=args.repeats,
                             seed=args.seed)
    doc = {
        "schema": PROFILE_SCHEMA, "model": name,
        "device": args.device_name or device_name(device), "torch_device": str(device),
        "workload": {"batch": args.batch, "seq_len": args.seq, "phase": "prefill",
                     "dtype": dtype},
        "layers": [t.to_dict() for t in timings],
    }
    try:
        Path(args.output).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise InvalidInputError(f"{args.output}: cannot write ({exc.strerror})",
                                field="output") from None
    total = sum(t.latency_s for t in timings)
    print(f"{name}: {len(timings)} layers timed on {doc['device']}, {total:.4g} s per forward "
          f"of {args.batch} x {args.seq} tokens; profile written to {args.output}")
    return ExitCode.OK
