"""A torch module factory for `cachepart inspect examples/torch_mlp.py:build --input-shape 32,1024`."""

from __future__ import annotations

import torch.nn as nn


def build() -> nn.Module:
    layers: list[nn.Module] = []
    for _ in range(6):
        layers += [nn.Linear(1024, 4096), nn.GELU(), nn.Linear(4096, 1024)]
    return nn.Sequential(*layers)
