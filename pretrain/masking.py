"""Index bookkeeping shared by the pretraining methods: random masking, per-sample noise and patchify."""

from __future__ import annotations

import math

import numpy as np
import torch

#: the stream id of a sample's masks, beside its seed: a stream apart from its crop's (same sample, other draws)
MASK_STREAM = 1


def sample_noise(seed: int, size: int) -> torch.Tensor:
    """(size,) uniform [0, 1) draws of one sample, from its own generator (the loader's sample seed).

    numpy's ``SeedSequence([seed, MASK_STREAM])`` (PCG64), not a torch generator: torch seeds its CPU
    generator from the low 32 bits only, so an offset stream (``seed + 2**62``) drew the very numbers of the
    crop's generator seeded with ``seed``, and masks were correlated with crops."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, MASK_STREAM])))
    return torch.from_numpy(rng.random(size, dtype=np.float32))


class SampleNoise:
    """The uniform draws of a batch's masks, taken in order from ``rows`` (N, T): each row drawn by the loader
    from its sample's own seed (:func:`sample_noise`), so a sample's masks are the same whichever process,
    batch or resume draws them, and a run on N processes masks as the same run on one does. Without rows
    (direct calls), draws come from torch's global generator, as MAE draws them."""

    def __init__(self, rows: torch.Tensor | None = None):
        self.rows, self.used = rows, 0

    def rand(self, n: int, *shape: int, device: torch.device | str) -> torch.Tensor:
        """(n, *shape) uniform [0, 1) on ``device``."""
        if self.rows is None:
            return torch.rand(n, *shape, device=device)
        size = math.prod(shape)
        if self.rows.shape[0] != n or self.used + size > self.rows.shape[1]:
            raise ValueError(f"noise rows {tuple(self.rows.shape)} cannot give {n} x {shape} after {self.used} draws")
        out = self.rows[:, self.used:self.used + size].reshape(n, *shape)
        self.used += size
        return out.to(device, non_blocking=True)


def random_masking(n: int, length: int, n_keep: int, device: torch.device | str,
                   noise: SampleNoise | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample random subset by argsort of uniform noise (MAE); ``noise`` gives each sample's draws.

    Returns ``ids_keep`` (n, n_keep) in random order, ``ids_restore`` (n, length) that undoes the
    shuffle, and ``mask`` (n, length) bool, True where removed.
    """
    if not 0 < n_keep <= length:
        raise ValueError(f"cannot keep {n_keep} of {length} tokens")
    noise = (noise or SampleNoise()).rand(n, length, device=device)
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :n_keep]
    mask = torch.ones(n, length, dtype=torch.bool, device=device)
    mask.scatter_(1, ids_keep, torch.zeros_like(ids_keep, dtype=torch.bool))  # (a tensor source: traceable)
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
