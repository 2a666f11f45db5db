"""Supervised pretraining (the DeiT recipe) of the same encoder, as a third method beside DropPos and MAE.

``Supervised(encoder, num_classes)``: the encoder's normed [cls] token -> a linear head (trunc-normal
init, std 0.02), trained with timm's Mixup/CutMix and soft-target cross-entropy (label smoothing
inside), or label-smoothed cross-entropy when both are off. The head is part of ``checkpoint.pth``
(resume) and never of ``encoder.pth``. The data side of the recipe (RandAugment, random erasing,
random resized crop 0.08-1) is the dataset's transform (:func:`.data.supervised_transform`), drop
path the encoder's. DeiT-B's values are the defaults of ``droppos pretrain --method supervised``
(``pretrain/config.py``: ``METHOD_DEFAULTS``).
"""

from __future__ import annotations

import torch
import torch.nn as nn

#: AdamW betas of this method (DeiT: PyTorch's defaults; MAE/DropPos use (0.9, 0.95))
BETAS = (0.9, 0.999)


class Supervised(nn.Module):
    """Encoder + classifier head; ``forward(imgs, labels) -> {'loss'[, 'top1']}`` (tensors, no host sync)."""

    betas = BETAS
    noise_size = 0  #: no mask draws

    def __init__(self, encoder: nn.Module, num_classes: int, smoothing: float = 0.1, mixup: float = 0.8,
                 cutmix: float = 1.0):
        super().__init__()
        from timm.data import Mixup
        from timm.layers import trunc_normal_
        from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

        self.encoder = encoder
        self.head = nn.Linear(encoder.embed_dim, num_classes)
        trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)
        self.mixup = Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, label_smoothing=smoothing,
                           num_classes=num_classes) if (mixup > 0 or cutmix > 0) else None
        self.criterion = SoftTargetCrossEntropy() if self.mixup else (
            LabelSmoothingCrossEntropy(smoothing) if smoothing > 0 else nn.CrossEntropyLoss())

    def on_epoch(self, epoch: int, epochs: int) -> None:
        """Nothing changes per epoch (the schedule is the engine's)."""

    def forward(self, imgs: torch.Tensor, labels: torch.Tensor | None = None,
                noise: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """imgs (N, C, H, W), labels (N,) -> {'loss'[, 'top1']}; ``noise`` unused (noise_size 0: the transform
        is per-sample seeded in the loader; mixup and drop path draw per batch, on each process, as DeiT's)."""
        targets = labels
        if self.mixup is not None and self.training:
            imgs, targets = self.mixup(imgs, labels)
        logits = self.head(self.encoder.forward_features(imgs)[:, 0])
        out = {"loss": self.criterion(logits, targets)}
        if targets is labels:  # without mixing the labels are exact: the training top-1 means something
            out["top1"] = (logits.argmax(-1) == labels).float().mean() * 100
        return out
