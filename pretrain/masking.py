"""Index bookkeeping shared by the pretraining methods: random masking and patchify."""

from __future__ import annotations

import torch


def random_masking(n: int, length: int, n_keep: int, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample random subset by argsort of uniform noise (MAE).

    Returns ``ids_keep`` (n, n_keep) in random order, ``ids_restore`` (n, length) that undoes the
    shuffle, and ``mask`` (n, length) bool, True where removed.
    """
    if not 0 < n_keep <= length:
        raise ValueError(f"cannot keep {n_keep} of {length} tokens")
    noise = torch.rand(n, length, device=device)
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :n_keep]
    mask = torch.ones(n, length, dtype=torch.bool, device=device)
    mask.scatter_(1, ids_keep, False)
    return ids_keep, ids_restore, mask


def num_kept(length: int, ratio: float, what: str = "mask_ratio") -> int:
    """Tokens kept when ``ratio`` of ``length`` are dropped (MAE rounding: int(L * (1 - r)))."""
    from droppos.errors import UserError

    flag = "--" + what.replace("_", "-")
    if not 0.0 < ratio < 1.0:
        raise UserError(f"{flag} must be in (0, 1), got {ratio}")
    keep = int(length * (1 - ratio))
    if keep < 1:
        raise UserError(f"{flag} {ratio} keeps no token of {length}; lower it, or use more patches (a larger "
                        "--img-size or a smaller --patch-size)")
    return keep


def gather_tokens(x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """x: (N, L, D), ids: (N, K) -> (N, K, D)."""
    return torch.gather(x, 1, ids.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def patchify(imgs: torch.Tensor, p: int) -> torch.Tensor:
    """imgs: (N, C, H, W) -> (N, L, p*p*C), row-major patches, channel last (MAE order)."""
    n, c, h, w = imgs.shape
    x = imgs.reshape(n, c, h // p, p, w // p, p)
    x = torch.einsum("nchpwq->nhwpqc", x)
    return x.reshape(n, (h // p) * (w // p), p * p * c)
