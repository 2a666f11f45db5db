"""MAE-style weight initialisation shared by the encoder and the pretext heads."""

from __future__ import annotations

import torch
import torch.nn as nn


@torch.no_grad()
def xavier_init_(module: nn.Module) -> None:
    """Xavier-uniform linears with zero biases, unit LayerNorms (MAE / official JAX ViT)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
