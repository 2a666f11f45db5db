"""DropPos (Wang et al., NeurIPS 2023): pretrain a ViT by reconstructing dropped positions.

One step, for images (N, C, H, W) with L patches:
1. patch masking: keep K = int(L * (1 - mask_ratio)) random patches;
2. position dropping: among the K visible patches, replace the position embedding of
   K - int(K * (1 - pos_mask_ratio)) of them by a position mask token (``param``: one learnt
   vector; ``zeros``; ``wrong_pos``: the embeddings of the other dropped patches, permuted);
3. the encoder sees the K tokens (optionally in shuffled order), a decoder *without* position
   embedding classifies each visible token among all L positions;
4. loss: cross-entropy against the smoothed target (row of a Gaussian map over the grid) on the
   dropped positions, weighted by attentive reconstruction weights: cosine similarity of [cls]
   with every patch from a no-grad full-image forward, softmax at temperature ``attn_tau``,
   restricted and renormalised to the visible patches; ``conf_ignore`` drops tokens whose
   predicted probability of the true position already exceeds the target's peak;
5. ``multi_task`` adds MAE's pixel loss: ``loss = pos_weight * loss_pos + loss_mae``.

Compared with the official code, the same semantics with less work: position mask tokens are
built for the visible tokens of each sample only (the official code builds N times too many), no
host synchronisation (accuracy is returned as a tensor), indices of the (L, D) table and of the
(L, L) smoothing map are gathered directly instead of repeating them over the batch.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from droppos.models.vit import VisionTransformer

from .decoder import PixelDecoder, TransformerHead, mae_init_
from .mae import pixel_loss
from .masking import SampleNoise, gather_tokens, num_kept, random_masking
from .smoothing import NORMS, smoothing_map

MASK_TOKENS = ("param", "zeros", "wrong_pos")


class DropPos(nn.Module):
    """DropPos around an injected encoder.

    Args:
        encoder: the ViT.
        mask_ratio: fraction of patches removed before the encoder (default 0.75).
        pos_mask_ratio: fraction of the visible patches whose position is dropped (default 0.75).
        mask_token: position mask token, 'param' | 'zeros' | 'wrong_pos' (default 'param').
        decoder_dim, decoder_depth, decoder_heads: position decoder (official: 512-d, 2 blocks, 16 heads).
        sigma: std of the Gaussian position smoothing in patches, 0 = hard labels (official 1).
        smooth_norm: 'row' (each target row sums to 1), 'official' (the released code's column division)
            or 'released' (the released targets, grid quirk included: see ``smoothing``).
        attn_guide: attentive reconstruction weights (official recipe: on).
        attn_tau: softmax temperature of the attentive weights (0.1).
        conf_ignore: drop confidently-placed tokens from the loss.
        shuffle: shuffle token order before the encoder (order is invisible to a ViT without positions).
        multi_task: add the MAE pixel loss with an auxiliary decoder.
        pos_weight: weight of the position loss in multi-task mode.
        norm_pix_loss: normalised-pixel target of the auxiliary MAE loss.
        aux_mask_token: multi-task pixel decoder's mask token: 'trained' always, or 'official' (the release:
            trained only with ``mask_token='param'``, frozen at its N(0, 0.02) init otherwise).

    Logged accuracies: ``pos_acc`` is the top-1 over the dropped positions, every one counted once;
    ``pos_acc_released`` is the released code's ``acc1``, weighted as its loss (attentive weights and
    the conf_ignore mask), so it compares with the released logs.
    """

    def __init__(self, encoder: VisionTransformer, mask_ratio: float = 0.75, pos_mask_ratio: float = 0.75,
                 mask_token: str = "param", decoder_dim: int = 512, decoder_depth: int = 2, decoder_heads: int = 16,
                 sigma: float = 1.0, smooth_norm: str = "row", attn_guide: bool = True, attn_tau: float = 0.1,
                 conf_ignore: bool = False, shuffle: bool = False, multi_task: bool = False,
                 pos_weight: float = 1.0, norm_pix_loss: bool = True, sigma_decay: bool = True,
                 aux_mask_token: str = "trained"):
        super().__init__()
        if mask_token not in MASK_TOKENS:
            raise ValueError(f"mask_token must be one of {MASK_TOKENS}, got {mask_token!r}")
        if smooth_norm not in NORMS:
            raise ValueError(f"smooth_norm must be one of {NORMS}, got {smooth_norm!r}")
        self.encoder = encoder
        self.mask_ratio, self.pos_mask_ratio = mask_ratio, pos_mask_ratio
        self.n_keep = num_kept(encoder.num_patches, mask_ratio, "mask_ratio")
        self.n_keep_pos = num_kept(self.n_keep, pos_mask_ratio, "pos_mask_ratio")
        if self.n_keep_pos == self.n_keep:
            from droppos.errors import UserError

            raise UserError(f"--pos-mask-ratio {pos_mask_ratio} drops no position of the {self.n_keep} visible patches; "
                            "raise it, or use more patches (a larger --img-size or a smaller --patch-size)")
        self.mask_token = mask_token
        self.smooth_norm = smooth_norm
        self.attn_guide, self.attn_tau = attn_guide, attn_tau
        self.conf_ignore, self.shuffle = conf_ignore, shuffle
        #: uniform draws per sample (forward's ``noise``): patch mask, position mask, [wrong_pos order], [shuffle]
        self.noise_size = (encoder.num_patches + self.n_keep + (self.n_keep - self.n_keep_pos) * (mask_token == "wrong_pos")
                           + self.n_keep * shuffle)
        self.multi_task, self.pos_weight, self.norm_pix_loss = multi_task, pos_weight, norm_pix_loss
        d = encoder.embed_dim
        self.mask_pos_token = nn.Parameter(torch.zeros(1, 1, d), requires_grad=mask_token == "param")
        self.pos_decoder = TransformerHead(d, decoder_dim, decoder_depth, decoder_heads, encoder.num_patches)
        mae_init_(self.pos_decoder)
        nn.init.normal_(self.mask_pos_token, std=0.02)
        if multi_task:
            p, c = encoder.patch_size, encoder.arch_args()["in_chans"]
            self.pixel_decoder = PixelDecoder(d, encoder.grid_size, p * p * c, decoder_dim, decoder_depth, decoder_heads)
            mae_init_(self.pixel_decoder)
            if aux_mask_token not in ("trained", "official"):
                raise ValueError(f"aux_mask_token must be 'trained' or 'official', got {aux_mask_token!r}")
            self.pixel_decoder.mask_token.requires_grad_(aux_mask_token == "trained" or mask_token == "param")
        self.sigma = self.sigma0 = sigma
        self.sigma_decay = sigma_decay
        self.img_size = encoder.grid_size[1] * encoder.patch_size  # the released map's grid depends on it
        self.register_buffer("smooth", self._smoothing(sigma), persistent=False)

    def _smoothing(self, sigma: float, device=None) -> torch.Tensor:
        return smoothing_map(self.encoder.grid_size, sigma, self.smooth_norm, device=device, img_size=self.img_size)

    # ------------------------------------------------------------------ schedule
    def set_sigma(self, sigma: float) -> None:
        """Set the smoothing std (the engine decays it per epoch); rebuilds the (L, L) map on device."""
        if sigma != self.sigma:
            self.sigma = sigma
            self.smooth = self._smoothing(sigma, device=self.smooth.device)

    # ------------------------------------------------------------------ pieces
    @torch.no_grad()
    def attentive_weights(self, imgs: torch.Tensor, ids_keep: torch.Tensor) -> torch.Tensor:
        """(N, K) weights: softmax_tau(cos([cls], patch)) of a full forward, renormalised over visible."""
        feats = self.encoder.forward_features(imgs).float()
        sim = F.cosine_similarity(feats[:, :1], feats[:, 1:], dim=-1)
        w = torch.softmax(sim / self.attn_tau, dim=-1)
        w = torch.gather(w, 1, ids_keep)
        return w / w.sum(-1, keepdim=True)

    def drop_positions(self, pos: torch.Tensor, noise: SampleNoise | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """pos: (N, K, D) visible patches' embeddings -> (pos with dropped rows replaced, mask_pos (N, K) bool)."""
        n, k, d = pos.shape
        noise = noise or SampleNoise()
        _, _, mask_pos = random_masking(n, k, self.n_keep_pos, pos.device, noise)
        if self.mask_token == "param":
            pos = torch.where(mask_pos.unsqueeze(-1), self.mask_pos_token.to(pos.dtype), pos)
        elif self.mask_token == "zeros":
            pos = pos.masked_fill(mask_pos.unsqueeze(-1), 0.0)
        else:  # wrong_pos: dropped patches receive each other's embeddings, permuted
            ids_drop = torch.nonzero(mask_pos)[:, 1].view(n, k - self.n_keep_pos)
            perm = torch.argsort(noise.rand(*ids_drop.shape, device=pos.device), dim=1)
            src = torch.gather(ids_drop, 1, perm)
            pos = pos.scatter(1, ids_drop.unsqueeze(-1).expand(-1, -1, d), gather_tokens(pos, src))
        return pos, mask_pos

    def position_loss(self, logits: torch.Tensor, labels: torch.Tensor, mask_pos: torch.Tensor,
                      attn: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """logits (N, K, L), labels (N, K) true positions -> (loss, top-1 on dropped positions, released acc1)."""
        logits = logits.float()
        target = self.smooth[labels]  # (N, K, L) rows of the smoothing map
        log_prob = F.log_softmax(logits, dim=-1)
        weight = mask_pos.float()
        if self.conf_ignore:
            with torch.no_grad():
                conf = torch.softmax(logits, dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
                weight = weight * (conf < torch.diagonal(self.smooth)[labels]).float()
        if attn is not None:
            weight = weight * attn
        loss = (-(target * log_prob).sum(-1) * weight).sum() / weight.sum().clamp_min(1e-12)
        with torch.no_grad():
            hit = logits.argmax(-1) == labels
            acc = (hit & mask_pos).sum().float() / mask_pos.sum().clamp_min(1)
            acc_released = (hit.float() * weight).sum() / weight.sum().clamp_min(1e-12)
        return loss, acc, acc_released

    # ------------------------------------------------------------------ forward
    def on_epoch(self, epoch: int, epochs: int) -> None:
        """The official per-epoch schedule of the smoothing: sigma decays linearly to 0 (``sigma_decay``)."""
        from .smoothing import decayed_sigma

        self.set_sigma(decayed_sigma(self.sigma0, epoch, epochs, self.sigma_decay))

    def forward(self, imgs: torch.Tensor, labels: torch.Tensor | None = None,
                noise: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """imgs: (N, C, H, W) -> {'loss', 'pos_acc', 'pos_acc_released', 'loss_pos'[, 'loss_mae']} (tensors, no host
        sync); labels unused; ``noise`` (N, noise_size): each sample's mask draws, from its own seed (the loader's;
        :class:`.masking.SampleNoise`), else from torch's generator."""
        enc = self.encoder
        x = enc.embed_patches(imgs)
        n, length, _ = x.shape
        draws = SampleNoise(noise)
        ids_keep, ids_restore, mask = random_masking(n, length, self.n_keep, x.device, draws)
        pos, mask_pos = self.drop_positions(enc.patch_pos_embed[ids_keep], draws)
        x = gather_tokens(x, ids_keep) + pos
        if self.shuffle:
            order = torch.argsort(draws.rand(n, self.n_keep, device=x.device), dim=1)
            x = gather_tokens(x, order)
        attn = self.attentive_weights(imgs, ids_keep) if self.attn_guide else None
        latent = enc.forward_tokens(x)
        if self.shuffle:  # back to the visible order of ids_keep
            patches = gather_tokens(latent[:, 1:], torch.argsort(order, dim=1))
            latent = torch.cat([latent[:, :1], patches], dim=1)
        logits = self.pos_decoder(latent)[:, 1:]
        loss_pos, acc, acc_released = self.position_loss(logits, ids_keep, mask_pos, attn)
        out = {"loss": loss_pos, "loss_pos": loss_pos, "pos_acc": acc, "pos_acc_released": acc_released}
        if self.multi_task:
            pred = self.pixel_decoder(latent, ids_restore)
            loss_mae = pixel_loss(imgs, pred, mask, enc.patch_size, self.norm_pix_loss)
            out.update(loss=self.pos_weight * loss_pos + loss_mae, loss_mae=loss_mae)
        return out
