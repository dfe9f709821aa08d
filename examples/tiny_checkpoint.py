"""Build a tiny Hugging Face checkpoint with seeded random weights, locally (nothing is fetched).

    python examples/tiny_checkpoint.py llama results/tiny-hf-llama [--seed 0] [--shard-mb N]

writes config.json and model.safetensors (or shards with model.safetensors.index.json when
``--shard-mb`` is given) with transformers' own ``save_pretrained``: the directory is what a user
downloads from a hub, at a size a CPU test runs in seconds. Needs the ``hf`` extra
(transformers, safetensors). Used by ``make demo`` and by the tests.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["FAMILIES", "build_checkpoint", "tiny_config"]

_COMMON: dict[str, Any] = {"vocab_size": 96, "max_position_embeddings": 64}
_LLAMA_LIKE: dict[str, Any] = {**_COMMON, "hidden_size": 32, "intermediate_size": 48,
                               "num_hidden_layers": 4, "num_attention_heads": 4,
                               "num_key_value_heads": 2}

FAMILIES: dict[str, dict[str, Any]] = {
    # each: model_type plus the fields that exercise its numerics (eps, rope theta, windows...)
    "llama": {"model_type": "llama", **_LLAMA_LIKE, "rms_norm_eps": 1e-5,
              "rope_theta": 5000.0, "attention_bias": True},
    "llama3-rope": {"model_type": "llama", **_LLAMA_LIKE, "rope_theta": 500000.0,
                    "rope_scaling": {"rope_type": "llama3", "factor": 8.0,
                                     "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                     "original_max_position_embeddings": 16}},
    "mistral": {"model_type": "mistral", **_LLAMA_LIKE, "sliding_window": 6,
                "rope_theta": 20000.0},
    # transformers 5 reads a mistral config with layer_types as Ministral: windows per layer
    "ministral": {"model_type": "mistral", **_LLAMA_LIKE, "sliding_window": 4,
                  "layer_types": ["full_attention", "sliding_attention"] * 2},
    "mixtral": {"model_type": "mixtral", **_LLAMA_LIKE, "num_local_experts": 4,
                "num_experts_per_tok": 2, "sliding_window": None, "rms_norm_eps": 1e-5},
    "qwen2": {"model_type": "qwen2", **_LLAMA_LIKE, "rope_theta": 1000000.0,
              "use_sliding_window": True, "sliding_window": 5, "max_window_layers": 2,
              "tie_word_embeddings": True},
    "gemma2": {"model_type": "gemma2", **_LLAMA_LIKE, "head_dim": 16,
               "query_pre_attn_scalar": 12, "sliding_window": 5,
               "attn_logit_softcapping": 2.0, "final_logit_softcapping": 3.0},
    "gpt2": {"model_type": "gpt2", "vocab_size": 96, "n_positions": 64, "n_embd": 32,
             "n_layer": 4, "n_head": 4, "layer_norm_epsilon": 1e-5},
    "opt": {"model_type": "opt", **_COMMON, "hidden_size": 32, "ffn_dim": 64,
            "num_hidden_layers": 4, "num_attention_heads": 4, "word_embed_proj_dim": 32},
    "falcon": {"model_type": "falcon", "vocab_size": 96, "hidden_size": 32,
               "num_hidden_layers": 4, "num_attention_heads": 4, "multi_query": True,
               "parallel_attn": True, "new_decoder_architecture": False, "bias": False,
               "rope_theta": 10000.0},
    "falcon-40b": {"model_type": "falcon", "vocab_size": 96, "hidden_size": 32,
                   "num_hidden_layers": 4, "num_attention_heads": 4, "num_kv_heads": 2,
                   "new_decoder_architecture": True, "parallel_attn": True, "bias": False},
    "bert": {"model_type": "bert", **_COMMON, "hidden_size": 32, "intermediate_size": 48,
             "num_hidden_layers": 4, "num_attention_heads": 4, "type_vocab_size": 2},
}


def tiny_config(family: str, **overrides: Any) -> Any:
    """The transformers config of a tiny ``family`` model (a FAMILIES key)."""
    from transformers import AutoConfig

    if family not in FAMILIES:
        raise ValueError(f"family: {family!r} is not one of {', '.join(FAMILIES)}")
    fields = {**FAMILIES[family], **overrides}
    return AutoConfig.for_model(fields.pop("model_type"), **fields)


def build_checkpoint(family: str, directory: str | Path, *, seed: int = 0,
                     shard_mb: float | None = None, **overrides: Any) -> Path:
    """Save a seeded random ``family`` model to ``directory`` and return the path."""
    import torch
    from transformers import AutoModel, AutoModelForCausalLM

    config = tiny_config(family, **overrides)
    torch.manual_seed(seed)
    cls = AutoModel if config.model_type == "bert" else AutoModelForCausalLM
    model = cls.from_config(config)
    with torch.no_grad():
        # the default init leaves norms at 1 and biases at 0: perturb every tensor so a wrong
        # mapping or a skipped bias changes the output, and enough that greedy decoding
        # wanders over the vocabulary instead of repeating one token
        gen = torch.Generator().manual_seed(seed)
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen))
    out = Path(directory)
    kwargs: dict[str, Any] = {}
    if shard_mb is not None:
        kwargs["max_shard_size"] = f"{max(1, int(shard_mb * 1000))}KB"
    model.save_pretrained(out, **kwargs)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("family", choices=list(FAMILIES))
    parser.add_argument("directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shard-mb", type=float, default=None,
                        help="split the weights into shards of this size (MB)")
    args = parser.parse_args(argv)
    try:
        path = build_checkpoint(args.family, args.directory, seed=args.seed,
                                shard_mb=args.shard_mb)
    except ImportError as exc:
        print(f"tiny_checkpoint: needs transformers ({exc}): pip install 'cachepart[hf]'",
              file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
