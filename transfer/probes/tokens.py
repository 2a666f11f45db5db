"""Token-level forward passes of a ViT for the probes, and the patch shuffles they compare.

Notation, for an image of L patches in row-major grid order: ``x_i`` the patch embedding of patch
i (its content, ``embed_patches``), ``p_i`` the position embedding of grid cell i
(``patch_pos_embed``), π a random permutation of {0, ..., L-1} per image. The encoder input is a
sequence of L tokens (after [cls]):

* ``original``: ``x_i + p_i`` (the same as timm's ``forward_features``);
* ``no_pos``: ``x_i``: patches without any position (the position probe);
* ``shuffle_content``: ``x_π(i) + p_i``: the patches are moved to other grid cells while the
  position embeddings stay in place, i.e. the image is cut into patches and reassembled at random
  (a jigsaw). The content of the image is the same bag of patches; only where each patch sits
  changes. A model that ignores positions (a bag of patches) gives the same [cls] / mean feature;
  a location-aware one does not. This is ``cos_dist`` and ``acc_shuffled`` of the order probe.
* ``shuffle_order``: ``x_π(i) + p_π(i)``: the tokens are permuted after their positions were
  added, so every patch keeps its own position and only the sequence order changes. Attention,
  MLPs and LayerNorm are permutation-equivariant over tokens, so a ViT's [cls] and mean features
  are invariant (cosine distance 0 up to float rounding): the control ``cos_dist_token_order``.

All functions work on any :class:`droppos.models.vit.VisionTransformer`, including a fine-tuned
classifier (``forward_tokens`` applies that model's own final norm, ``forward_head`` its pooling).
"""

from __future__ import annotations

import torch

from droppos.models.vit import VisionTransformer
from droppos.pretrain.masking import gather_tokens

VIEWS = ("original", "no_pos", "shuffle_content", "shuffle_order")


def has_token_entry_points(model: torch.nn.Module) -> bool:
    """Whether the functions here run on ``model`` as it is (this project's ViT); other models need a view
    (:func:`.generic.token_view`) or the image jigsaw."""
    return isinstance(model, VisionTransformer)


def permutations(n: int, length: int, generator: torch.Generator, device: torch.device | str = "cpu") -> torch.Tensor:
    """(n, length) int64: one uniform random permutation of range(length) per row, from ``generator`` (CPU)."""
    return torch.argsort(torch.rand(n, length, generator=generator), dim=1).to(device)


def input_tokens(model, imgs: torch.Tensor, view: str, perm: torch.Tensor | None = None) -> torch.Tensor:
    """imgs: (N, C, H, W) -> the (N, L, D) patch tokens of ``view`` (see the module doc); ``perm``: (N, L)."""
    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
    x = model.embed_patches(imgs)
    if view == "no_pos":
        return x
    pos = model.patch_pos_embed.to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1)
    if view == "original":
        return x + pos
    if perm is None or perm.shape != x.shape[:2]:
        raise ValueError(f"view {view!r} needs a permutation of shape {tuple(x.shape[:2])}")
    if view == "shuffle_content":
        return gather_tokens(x, perm) + pos
    return gather_tokens(x + pos, perm)


def encode(model, imgs: torch.Tensor, view: str, perm: torch.Tensor | None = None) -> torch.Tensor:
    """(N, C, H, W) -> (N, 1 + L, D): [cls] + ``view`` tokens through the blocks and the final norm."""
    return model.forward_tokens(input_tokens(model, imgs, view, perm))


def logits(model, imgs: torch.Tensor, view: str, perm: torch.Tensor | None = None) -> torch.Tensor:
    """(N, C, H, W) -> (N, K) class scores of a classifier ``VisionTransformer`` for ``view``."""
    return model.forward_head(encode(model, imgs, view, perm))
