"""Frozen-backbone features: one pass over a loader, gathered over processes in dataset order.

Used by the linear probe (cached features), k-NN and the location-awareness probes::

    feats, labels = extract_features(encoder, loader, device)            # (N, D), (N,)
    tokens, labels = extract_features(encoder, loader, device, pool="all")  # (N, 1 + L, D)

``pool``: ``'feature'`` the model's own pooled feature, ``forward_head(forward_features(x),
pre_logits=True)`` (the timm contract; for this project's ViT it is the normed [cls] token, as MAE's
linear probing and DINO's k-NN use), ``'cls'`` the normed [cls] token, ``'avg'`` the mean of the
normed patch tokens, ``'all'`` every normed token, or a callable ``(model, images) -> (B, ...)``.
With several processes, give a loader whose sampler is :class:`.data.ShardSampler` (rank r gets
samples r, r + world, ...): every process then returns all N rows in dataset order.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from droppos.utils import dist as du


def pooled_feature(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The model's own pooled feature (timm's ``forward_head(..., pre_logits=True)``): (B, num_features)."""
    return model.forward_head(model.forward_features(images), pre_logits=True)


def pool_tokens(tokens: torch.Tensor, pool: str) -> torch.Tensor:
    """tokens: (B, 1 + L, D) normed encoder output -> (B, D) for 'cls'/'avg', unchanged for 'all'."""
    if pool == "cls":
        return tokens[:, 0]
    if pool == "avg":
        return tokens[:, 1:].mean(dim=1)
    if pool == "all":
        return tokens
    raise ValueError(f"pool must be 'cls', 'avg', 'all' or a callable, got {pool!r}")


@torch.no_grad()
def extract_features(model: torch.nn.Module, loader, device: torch.device | str,
                     pool: str | Callable = "cls", amp_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (N, ...) float32 and labels (N,) int64 of every sample of ``loader``, on the CPU.

    ``model`` is run in eval mode (its mode is restored afterwards) through ``forward_features``
    (the timm contract) unless ``pool`` is a callable.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    feats, labels = [], []
    try:
        for images, target in loader:
            images = images.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                if pool == "feature":
                    out = pooled_feature(model, images)
                else:
                    out = pool(model, images) if callable(pool) else pool_tokens(model.forward_features(images), pool)
            feats.append(out.float().cpu())
            labels.append(torch.as_tensor(target).long().cpu())
    finally:
        model.train(was_training)
    if not feats:
        raise ValueError("the loader yielded no samples: nothing to extract features from")
    f, y = torch.cat(feats), torch.cat(labels)
    if du.world_size() > 1:
        f, y = gather_shards(f, device), gather_shards(y, device)
    return f, y


def gather_shards(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Rows of rank r are samples r, r + world, ... (ShardSampler): all-gather and interleave back."""
    world = du.world_size()
    sizes = [int(n.item()) for n in du.all_gather(torch.tensor([t.shape[0]]), device)]
    pad = torch.zeros((max(sizes),) + t.shape[1:], dtype=t.dtype, device=device)
    pad[: t.shape[0]] = t.to(device)
    chunks = du.all_gather(pad, device)
    out = torch.empty((sum(sizes),) + t.shape[1:], dtype=t.dtype)
    for r, (c, s) in enumerate(zip(chunks, sizes)):
        out[r::world] = c[:s].cpu()
    return out
