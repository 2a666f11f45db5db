"""Position probe: how well a frozen backbone's token features tell where each patch sits.

For every image, the L patch tokens are fed through the frozen encoder and one linear classifier,
shared by all tokens, maps each token's final (normed) feature to one of the L grid cells. Three
variants, each with its own classifier, trained on ``train_images`` images of ``train/`` and
measured on ``val_images`` held-out images of ``val/``:

* ``no_pos`` (headline ``top1``, ``mean_dist``): patch tokens *without* position embeddings
  through the blocks. A ViT without positions is permutation-equivariant, so any position it
  reveals comes from the content of the patch and of the other patches: the location awareness
  that DropPos trains for (its encoder sees most tokens without their position; there they carry
  a learnt position mask token, a pretext weight that is not part of the encoder, so here a
  token without position is the bare patch embedding, for every backbone alike).
* ``with_pos`` (``top1_with_pos``, ``mean_dist_with_pos``): the usual input. The sin-cos
  embeddings make positions linearly decodable even from a random network: an upper control.
* ``patch_embed`` (``top1_patch_embed``, ``mean_dist_patch_embed``): the patch embeddings
  before any block, no positions: what the content of one patch alone says about its position
  (e.g. the empty borders of Fashion-MNIST): the floor the encoder should rise above.

Metrics: ``top1`` (percent of val tokens whose cell is predicted exactly) and ``mean_dist`` (mean
Euclidean distance in patches between the predicted and the true cell); ``chance`` in
``metrics.json`` holds both for a uniform random guess.
"""

from __future__ import annotations

import torch
from droppos.transfer.classification.common import Setup
from droppos.transfer.classification.errors import InputError

from . import tokens
from .common import features, finish, image_subset
from .config import PositionConfig
from .generic import token_view
from .head import predict, train_head

# variant -> (suffix of its metric names, fn(model, images) -> (B, L, D))
VARIANTS = {
    "no_pos": ("", lambda m, im: tokens.encode(m, im, "no_pos")[:, 1:]),
    "with_pos": ("_with_pos", lambda m, im: tokens.encode(m, im, "original")[:, 1:]),
    "patch_embed": ("_patch_embed", lambda m, im: m.embed_patches(im)),
}


def cell_coords(index: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(M,) row-major cell indices -> (M, 2) float (row, col)."""
    return torch.stack([index // grid[1], index % grid[1]], dim=-1).float()


def grid_distance(pred: torch.Tensor, true: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(M,) predicted and true cell indices -> (M,) Euclidean distance in patches."""
    return (cell_coords(pred, grid) - cell_coords(true, grid)).norm(dim=-1)


def chance(grid: tuple[int, int]) -> dict[str, float]:
    """Top-1 (percent) and mean distance of a uniform random guess on ``grid`` (exact, over all cell pairs)."""
    cells = cell_coords(torch.arange(grid[0] * grid[1]), grid)
    return {"top1": 100.0 / cells.shape[0], "mean_dist": torch.cdist(cells, cells).mean().item()}


def token_samples(feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, L, D) per-image token features -> ((N * L, D) samples, (N * L,) their cell index)."""
    n, length, d = feats.shape
    return feats.reshape(n * length, d), torch.arange(length).repeat(n)


def run_position(s: Setup) -> dict[str, float]:
    cfg: PositionConfig = s.cfg  # type: ignore[assignment]
    encoder = s.backbone.encoder(img_size=s.img_size).to(s.device).eval().requires_grad_(False)
    if not tokens.has_token_entry_points(encoder):
        view = token_view(encoder)
        if view is None:
            raise InputError(f"{cfg.backbone}: {type(encoder).__name__} adds no absolute position table to patch tokens "
                             "(RoPE, relative bias or convolutions), so no token can be formed without its position; "
                             "the order probe runs on it")
        encoder = view
    grid = tuple(encoder.grid_size)
    train_ds = image_subset(s, "train", cfg.train_images)
    val_ds = image_subset(s, "val", cfg.val_images)
    metrics, history = {}, {}
    for name, (suffix, fn) in VARIANTS.items():
        print(f"position probe [{name}]: features of {len(train_ds)} train / {len(val_ds)} val images, grid {grid}")
        x, y = token_samples(features(s, encoder, train_ds, fn)[0])
        head, history[name] = train_head(x, y, grid[0] * grid[1], epochs=cfg.epochs, lr=cfg.lr,
                                         weight_decay=cfg.weight_decay, batch_size=cfg.head_batch_size,
                                         seed=cfg.seed, device=s.device, logger=s.logger, tag=name)
        del x, y
        xv, yv = token_samples(features(s, encoder, val_ds, fn)[0])
        pred = predict(head, xv, s.device)
        metrics[f"top1{suffix}"] = 100.0 * (pred == yv).float().mean().item()
        metrics[f"mean_dist{suffix}"] = grid_distance(pred, yv, grid).mean().item()
    finish(s, metrics, grid=list(grid), num_tokens=grid[0] * grid[1], chance=chance(grid),
           train_images=len(train_ds), val_images=len(val_ds), epochs=cfg.epochs, history=history)
    return metrics
