"""Lightweight Transformer decoders of the pretext tasks (timm blocks)."""

from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn
from timm.models.vision_transformer import Block

from droppos.models.init import xavier_init_
from droppos.models.pos_embed import sincos_2d

from .masking import gather_tokens


class TransformerHead(nn.Module):
    """Linear in -> ``depth`` Transformer blocks -> LayerNorm -> linear out. No position embedding."""

    def __init__(self, in_dim: int, dim: int, depth: int, num_heads: int, out_dim: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.embed = nn.Linear(in_dim, dim)
        self.blocks = nn.Sequential(*[
            Block(dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6))
            for _ in range(depth)
        ])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pred = nn.Linear(dim, out_dim)

    def forward(self, x: torch.Tensor, add: torch.Tensor | None = None) -> torch.Tensor:
        """x: (N, n, in_dim) -> (N, n, out_dim); ``add`` (broadcastable to (N, n, dim)) is added after embed."""
        x = self.embed(x)
        if add is not None:
            x = x + add
        return self.pred(self.norm(self.blocks(x)))


class PixelDecoder(nn.Module):
    """MAE decoder: visible tokens + mask tokens, fixed sin-cos positions, predicts p*p*C pixels."""

    def __init__(self, in_dim: int, grid: tuple[int, int], patch_dim: int, dim: int = 512, depth: int = 8, num_heads: int = 16):
        super().__init__()
        self.head = TransformerHead(in_dim, dim, depth, num_heads, patch_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.register_buffer("pos_embed", sincos_2d(dim, grid)[None], persistent=False)

    def forward(self, x: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """x: (N, 1 + K, in_dim) encoder output ([cls] first), ids_restore: (N, L) -> (N, L, patch_dim)."""
        h = self.head.embed(x)
        n, length = ids_restore.shape
        masked = self.mask_token.to(h.dtype).expand(n, length - (h.shape[1] - 1), -1)
        seq = gather_tokens(torch.cat([h[:, 1:], masked], dim=1), ids_restore)
        seq = torch.cat([h[:, :1], seq], dim=1) + self.pos_embed.to(h.dtype)
        out = self.head.pred(self.head.norm(self.head.blocks(seq)))
        return out[:, 1:]



def mae_init_(module: nn.Module) -> None:
    """MAE init of a pretext head: xavier-uniform linears, unit LayerNorms, N(0, 0.02) mask token."""
    xavier_init_(module)
    if isinstance(module, PixelDecoder):
        nn.init.normal_(module.mask_token, std=0.02)
