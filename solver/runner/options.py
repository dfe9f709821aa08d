"""What one run of a plan is asked to do: the options ``cachepart run`` and the runner under
torchrun share (one definition, solver/cli/run.py, parses both)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..core.errors import InvalidInputError

__all__ = ["RunOptions"]


@dataclass(frozen=True)
class RunOptions:
    plan: str
    microbatches: int | None = None
    """Micro-batches per step (default: batch / the plan's micro_batch)."""
    steps: int = 3
    warmup: int = 1
    verify: bool = False
    report: str | None = None
    pin_l2: bool = False
    seed: int = 0
    dtype: str | None = None
    """Run in this dtype instead of the plan's."""
    torch_device: str = "auto"
    timeout: float = 300.0
    """Seconds a transfer or collective may wait before it fails."""
    input_shape: tuple[int, ...] | None = None
    input_dtype: str | None = None
    checkpoint: str | None = None
    """A Hugging Face checkpoint directory whose weights the stages load (each rank its own)."""
    input_ids: str | None = None
    """A torch.save'd int64 tensor (batch, seq) of token ids to feed instead of random ids."""
    save_output: str | None = None
    """Where the last stage writes the pipeline's final output (torch.save)."""
    generate: int = 0
    """New tokens to generate greedily after the prefill (0: forward passes only)."""

    def __post_init__(self) -> None:
        for name, least in (("steps", 1), ("warmup", 0), ("microbatches", 1), ("generate", 0)):
            value = getattr(self, name)
            if value is not None and value < least:
                raise InvalidInputError(f"must be >= {least}, got {value}", field=name)
        if not self.timeout > 0 or not math.isfinite(self.timeout):  # not > 0: NaN too
            raise InvalidInputError(f"must be > 0 seconds, got {self.timeout:g}", field="timeout")
        if self.torch_device not in ("auto", "cpu", "cuda"):
            raise InvalidInputError(f"expected auto, cpu or cuda, got {self.torch_device!r}",
                                    field="torch_device")
