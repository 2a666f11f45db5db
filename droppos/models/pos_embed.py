"""Fixed 2D sine-cosine position embeddings (MAE / DropPos layout) and their resampling (timm's)."""

from __future__ import annotations

import torch


def sincos_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    """pos: (M,) -> (M, dim): [sin(pos * w_k), cos(pos * w_k)], w_k = 10000^(-k / (dim/2))."""
    if dim % 2:
        raise ValueError(f"sin-cos embedding needs an even dimension, got {dim}")
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    out = pos.double().reshape(-1)[:, None] * omega[None, :]
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


def sincos_2d(dim: int, grid_size: tuple[int, int], cls_token: bool = True) -> torch.Tensor:
    """Fixed 2D embedding of a (gh, gw) grid -> (1 + gh*gw, dim) with a zero row for [cls].

    Token k = i * gw + j (row i, column j). As in MAE, the first half of the channels encodes the
    column j and the second half the row i, so official MAE/DropPos tables are reproduced exactly.
    """
    if dim % 4:
        raise ValueError(f"2D sin-cos embedding needs a dimension divisible by 4, got {dim}")
    gh, gw = grid_size
    rows = torch.arange(gh).repeat_interleave(gw)
    cols = torch.arange(gw).repeat(gh)
    emb = torch.cat([sincos_1d(dim // 2, cols), sincos_1d(dim // 2, rows)], dim=1).float()
    if cls_token:
        emb = torch.cat([torch.zeros(1, dim), emb], dim=0)
    return emb


def resample_pos_embed(
    pos_embed: torch.Tensor, new_grid: tuple[int, int], num_prefix_tokens: int = 1, old_grid: tuple[int, int] | None = None
) -> torch.Tensor:
    """(1, P + gh*gw, D) -> (1, P + nh*nw, D) with timm's ``resample_abs_pos_embed`` (bicubic,
    antialiased when shrinking); prefix rows are kept as they are, the same grid is returned as is."""
    from timm.layers import resample_abs_pos_embed

    n = pos_embed.shape[1] - num_prefix_tokens
    if old_grid is None:
        side = int(round(n**0.5))
        if side * side != n:
            raise ValueError(f"position embedding of {n} patch tokens is not a square grid; give old_grid")
        old_grid = (side, side)
    if tuple(old_grid) == tuple(new_grid):
        return pos_embed
    out = resample_abs_pos_embed(pos_embed.float(), list(new_grid), list(old_grid), num_prefix_tokens=num_prefix_tokens)
    return out.to(pos_embed.dtype)
