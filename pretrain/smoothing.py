"""Position smoothing: a Gaussian over the patch grid as the soft target of DropPos.

``w[i, j] = exp(-||g_i - g_j||^2 / sigma^2)`` for grid cells g (the official formula: no factor 2).
``norm='row'`` divides each row by its sum, so row i is a distribution over positions for a patch
at position i. ``norm='official'`` reproduces the official code's ``w / w.sum(-1)`` (no keepdim),
which divides column j by row-sum j: rows then do not sum to one near the border.
``sigma == 0`` gives the identity (hard labels).
"""

from __future__ import annotations

import torch

NORMS = ("row", "official")


def smoothing_map(grid: tuple[int, int], sigma: float, norm: str = "row", device=None) -> torch.Tensor:
    """(L, L) soft-target map for a (gh, gw) grid, L = gh * gw."""
    if norm not in NORMS:
        raise ValueError(f"smooth_norm must be one of {NORMS}, got {norm!r}")
    gh, gw = grid
    length = gh * gw
    if sigma <= 0:
        return torch.eye(length, device=device)
    idx = torch.arange(length, device=device)
    coords = torch.stack([idx // gw, idx % gw], dim=1).double()
    d2 = torch.cdist(coords, coords).pow(2)
    w = torch.exp(-d2 / sigma**2)
    w = w / w.sum(-1, keepdim=True) if norm == "row" else w / w.sum(-1)
    return w.float()


def decayed_sigma(sigma: float, epoch: int, epochs: int, decay: bool) -> float:
    """Official schedule: sigma * (1 - epoch / epochs), constant within an epoch."""
    return sigma * (1.0 - epoch / float(epochs)) if decay else sigma
