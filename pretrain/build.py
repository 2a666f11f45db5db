"""Build a pretraining method around an encoder from a ``PretrainConfig``."""

from __future__ import annotations

import torch.nn as nn

from droppos.models.vit import VisionTransformer

from .config import PretrainConfig
from .droppos import DropPos
from .mae import MAE
from .supervised import Supervised


def build_method(cfg: PretrainConfig, encoder: VisionTransformer, num_classes: int = 0) -> nn.Module:
    """The method around ``encoder``: ``forward(imgs, labels) -> {'loss', ...}``, ``on_epoch(epoch, epochs)``,
    and optionally ``betas`` (AdamW's; default (0.9, 0.95))."""
    if cfg.method == "supervised":
        return Supervised(encoder, num_classes, smoothing=cfg.smoothing, mixup=cfg.mixup, cutmix=cfg.cutmix)
    common = dict(mask_ratio=cfg.mask_ratio, decoder_dim=cfg.decoder_dim, decoder_depth=cfg.resolved_decoder_depth(),
                  decoder_heads=cfg.decoder_heads, norm_pix_loss=cfg.norm_pix_loss)
    if cfg.method == "mae":
        return MAE(encoder, **common)
    if cfg.method == "droppos":
        return DropPos(encoder, pos_mask_ratio=cfg.pos_mask_ratio, mask_token=cfg.mask_token, sigma=cfg.sigma,
                       smooth_norm=cfg.smooth_norm, attn_guide=cfg.attn_guide, attn_tau=cfg.attn_tau,
                       conf_ignore=cfg.conf_ignore, shuffle=cfg.shuffle, multi_task=cfg.multi_task,
                       pos_weight=cfg.pos_weight, sigma_decay=cfg.sigma_decay,
                       aux_mask_token=cfg.aux_mask_token, **common)
    raise ValueError(f"unknown method {cfg.method!r}; choose droppos, mae or supervised")


def decay_groups(method: nn.Module, weight_decay: float, exempt: str = "tokens") -> list[dict]:
    """AdamW parameter groups by timm's ``param_groups_weight_decay`` (frozen parameters left out).

    ``tokens``: no decay on 1-D parameters, biases, ``*_token`` and position embeddings (timm's
    ``no_weight_decay`` convention). ``official``: the release's timm 0.3.2 ``add_weight_decay`` with no
    skip list: only 1-D parameters and biases, so ``cls_token`` and ``mask_pos_token`` are decayed.
    """
    from timm.optim import param_groups_weight_decay

    if exempt not in ("tokens", "official"):
        raise ValueError(f"decay exemption must be 'tokens' or 'official', got {exempt!r}")
    skip = [] if exempt == "official" else [n for n, _ in method.named_parameters()
                                            if n.endswith("_token") or "pos_embed" in n]
    return param_groups_weight_decay(method, weight_decay, no_weight_decay_list=skip)
