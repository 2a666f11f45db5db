"""MAE (He et al. 2022) around an injected ViT encoder: the baseline method."""

from __future__ import annotations

import torch
import torch.nn as nn

from droppos.models.vit import VisionTransformer

from .decoder import PixelDecoder, mae_init_
from .masking import SampleNoise, gather_tokens, num_kept, patchify, random_masking


def pixel_loss(imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor, p: int, norm_pix: bool = True) -> torch.Tensor:
    """Mean squared error on removed patches. imgs (N,C,H,W), pred (N,L,p*p*C), mask (N,L) True=removed."""
    target = patchify(imgs, p).float()
    if norm_pix:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1.0e-6) ** 0.5
    per_patch = (pred.float() - target).pow(2).mean(dim=-1)
    m = mask.float()
    return (per_patch * m).sum() / m.sum()


class MAE(nn.Module):
    """Masked autoencoder.

    Args:
        encoder: the ViT (its fixed position embedding is used).
        mask_ratio: fraction of patches removed (default 0.75).
        decoder_dim, decoder_depth, decoder_heads: the pixel decoder (default 512-d, 8 blocks, 16 heads).
        norm_pix_loss: regress per-patch normalised pixels (default True).
    """

    def __init__(self, encoder: VisionTransformer, mask_ratio: float = 0.75, decoder_dim: int = 512,
                 decoder_depth: int = 8, decoder_heads: int = 16, norm_pix_loss: bool = True):
        super().__init__()
        self.encoder = encoder
        self.mask_ratio = mask_ratio
        self.norm_pix_loss = norm_pix_loss
        self.n_keep = num_kept(encoder.num_patches, mask_ratio, "mask_ratio")
        self.noise_size = encoder.num_patches  #: uniform draws per sample (forward's ``noise``): the mask
        p, c = encoder.patch_size, encoder.arch_args()["in_chans"]
        self.decoder = PixelDecoder(encoder.embed_dim, encoder.grid_size, p * p * c, decoder_dim, decoder_depth, decoder_heads)
        mae_init_(self.decoder)

    def on_epoch(self, epoch: int, epochs: int) -> None:
        """Nothing changes per epoch (the schedule is the engine's)."""

    def forward(self, imgs: torch.Tensor, labels: torch.Tensor | None = None,
                noise: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """imgs: (N, C, H, W) -> {'loss'}; labels unused; ``noise`` (N, noise_size): each sample's mask draws."""
        enc = self.encoder
        x = enc.embed_patches(imgs) + enc.patch_pos_embed
        n, length, _ = x.shape
        ids_keep, ids_restore, mask = random_masking(n, length, self.n_keep, x.device, SampleNoise(noise))
        latent = enc.forward_tokens(gather_tokens(x, ids_keep))
        pred = self.decoder(latent, ids_restore)
        return {"loss": pixel_loss(imgs, pred, mask, enc.patch_size, self.norm_pix_loss)}
