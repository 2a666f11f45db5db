"""Position smoothing: a Gaussian over the patch grid as the soft target of DropPos.

``w[i, j] = exp(-||g_i - g_j||^2 / sigma^2)`` for grid cells g (the official formula: no factor 2).
``norm='row'`` divides each row by its sum, so row i is a distribution over positions for a patch
at position i. ``norm='official'`` reproduces the official code's ``w / w.sum(-1)`` (no keepdim),
which divides column j by row-sum j: rows then do not sum to one near the border.
``norm='released'`` is the target the released engine actually trains with: its
``_get_label_smoothing_map`` is called with ``num_patches = (input_size // token_size) ** 2``, where
``token_size`` is the number of patches per side (14 for ViT-B/16 at 224 px), so the map is built,
column-divided, on an (input_size // token_size)-wide square grid (16 x 16 there), and the loss gathers
its rows at the patch indices and keeps the first L columns. Index 14 then names row 0, column 14 of
the 16-wide grid, not row 1, column 0 of the 14-wide one: near the row ends the target spreads onto
the wrong neighbours. The map is the top-left L x L block of the wide one.
``sigma == 0`` gives the identity (hard labels) in every mode.
"""

from __future__ import annotations

import torch

NORMS = ("row", "official", "released")


def released_side(grid: tuple[int, int], img_size: int) -> int:
    """Side of the square grid the released engine builds its map on: ``input_size // token_size``."""
    from droppos.errors import UserError

    gh, gw = grid
    side = img_size // gw
    if gh != gw or side * side < gh * gw:
        raise UserError(f"--smooth-norm released needs a square grid with (img_size // patches per side)^2 >= "
                        f"patches ({img_size} px, {gh} x {gw} patches gives {side * side} < {gh * gw}): the released "
                        "code fails there too; use --smooth-norm official or row")
    return side


def smoothing_map(grid: tuple[int, int], sigma: float, norm: str = "row", device=None,
                  img_size: int | None = None) -> torch.Tensor:
    """(L, L) soft-target map for a (gh, gw) grid, L = gh * gw (``img_size``: needed by ``released``)."""
    if norm not in NORMS:
        raise ValueError(f"smooth_norm must be one of {NORMS}, got {norm!r}")
    gh, gw = grid
    length = gh * gw
    if norm == "released":
        if img_size is None:
            raise ValueError("smooth_norm 'released' needs img_size")
        side = released_side(grid, img_size)
        return smoothing_map((side, side), sigma, "official", device)[:length, :length].contiguous()
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
