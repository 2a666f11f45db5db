"""Linear probing, MAE protocol: frozen encoder, ``BatchNorm1d(affine=False)`` + linear head on the
normed [cls] token, LARS (or SGD) with MAE's hyperparameters (see :mod:`.config`).

With ``cache_features`` (default) the frozen features of both splits are extracted once with the
evaluation transform (no augmentation: a speed/fidelity trade-off against MAE, which augments every
epoch), stored in ``features.pth`` and the head is trained on them; without it, every epoch runs
the frozen encoder on MAE's random-resized-crop + flip images. The encoder stays in eval mode.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils.data import TensorDataset

from droppos.utils.checkpoint import atomic_save, safe_load

from .common import Setup, finish
from .config import LinearConfig
from .data import build_transform, eval_loader, image_folder
from .driver import fit
from .features import extract_features, pooled_feature


class GlobalBatchNorm1d(nn.BatchNorm1d):
    """``BatchNorm1d`` whose training statistics are those of the global batch, over every process.

    MAE normalises each GPU's share by itself; here N processes with batch B normalise as one process
    with batch N x B does, so the result does not depend on how the batch is split. torch's
    ``SyncBatchNorm`` does this on GPUs only (it refuses CPU tensors), so the statistics are reduced here,
    through :mod:`droppos.utils.dist`. Its input is frozen features: no gradient flows back through the
    statistics, so a plain (non-differentiable) reduction is exact; a trainable input is refused.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from droppos.utils import dist as du

        if not self.training or du.world_size() == 1:
            return super().forward(x)
        if x.requires_grad:
            raise RuntimeError("GlobalBatchNorm1d reduces statistics without their gradient: frozen inputs only")
        n = du.all_reduce(torch.tensor(float(x.shape[0]), dtype=torch.float64), x.device)
        mean = du.all_reduce(x.double().sum(0), x.device) / n
        var = du.all_reduce((x.double() - mean).pow(2).sum(0), x.device) / n
        with torch.no_grad():
            m = self.momentum
            self.running_mean.mul_(1 - m).add_(mean.to(self.running_mean.dtype), alpha=m)
            self.running_var.mul_(1 - m).add_((var * n / (n - 1)).to(self.running_var.dtype), alpha=m)
            self.num_batches_tracked += 1
        out = (x.double() - mean) / (var + self.eps).sqrt()
        return out.to(x.dtype)


class LinearHead(nn.Sequential):
    """(B, D) -> (B, C): BatchNorm without affine (eps 1e-6; statistics of the global batch:
    :class:`GlobalBatchNorm1d`), then a linear layer (trunc-normal std 0.01)."""

    def __init__(self, dim: int, num_classes: int):
        from timm.layers import trunc_normal_

        super().__init__(GlobalBatchNorm1d(dim, affine=False, eps=1e-6), nn.Linear(dim, num_classes))
        trunc_normal_(self[1].weight, std=0.01)
        nn.init.zeros_(self[1].bias)


class FrozenProbe(nn.Module):
    """Frozen encoder (its pooled feature, no grad, always eval) + trainable head, for uncached probing."""

    def __init__(self, encoder: nn.Module, head: nn.Module):
        super().__init__()
        self.encoder, self.head = encoder.requires_grad_(False), head

    def train(self, mode: bool = True):
        super().train(mode)
        self.encoder.eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            feats = pooled_feature(self.encoder, images)
        return self.head(feats.float())


def build_optimizer(cfg: LinearConfig, head: nn.Module, lr: float) -> torch.optim.Optimizer:
    """LARS as MAE: weight decay and trust-ratio adaptation on weight matrices only; or SGD."""
    matrices = [p for p in head.parameters() if p.ndim > 1]
    vectors = [p for p in head.parameters() if p.ndim <= 1]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD([{"params": matrices, "weight_decay": cfg.weight_decay},
                                {"params": vectors, "weight_decay": 0.0}], lr=lr, momentum=0.9)
    from timm.optim import Lars

    return Lars([{"params": matrices, "weight_decay": cfg.weight_decay, "always_adapt": True},
                 {"params": vectors, "weight_decay": 0.0, "always_adapt": False}],
                lr=lr, momentum=0.9, trust_coeff=0.001)


def cached_features(s: Setup, encoder: nn.Module) -> dict[str, torch.Tensor]:
    """``{"train_x", "train_y", "val_x", "val_y"}``: read from ``features.pth`` or extracted (all processes)."""
    cfg: LinearConfig = s.cfg  # type: ignore[assignment]
    path = s.run_dir / "features.pth"
    if path.is_file():
        return safe_load(path)
    out = {}
    tf = build_transform("eval", s.img_size, cfg.crop_pct)
    for split in ("train", "val"):
        ds = image_folder(s.data_root, split, tf, s.classes)
        loader = eval_loader(ds, cfg.batch_size, cfg.workers, s.info.rank, s.info.world_size, s.pin)
        out[f"{split}_x"], out[f"{split}_y"] = extract_features(encoder, loader, s.device, "feature", s.amp)
    if s.info.is_main:
        atomic_save(out, path)
    return out


def run_linear(s: Setup) -> dict[str, float]:
    cfg: LinearConfig = s.cfg  # type: ignore[assignment]
    c, world = len(s.classes), s.info.world_size
    encoder = s.backbone.encoder(img_size=s.img_size).to(s.device).eval().requires_grad_(False)
    head = LinearHead(encoder.num_features, c).to(s.device)
    if cfg.cache_features:
        feats = cached_features(s, encoder)
        train_ds = TensorDataset(feats["train_x"], feats["train_y"])
        val_ds = TensorDataset(feats["val_x"], feats["val_y"])
        model = head
    else:
        train_ds = image_folder(s.data_root, "train", build_transform("linear", s.img_size), s.classes)
        val_ds = image_folder(s.data_root, "val", build_transform("eval", s.img_size, cfg.crop_pct), s.classes)
        model = FrozenProbe(encoder, head)
    lr = cfg.lr if cfg.lr is not None else cfg.blr * cfg.batch_size * world / 256
    optimizer = build_optimizer(cfg, head, lr)
    workers = 0 if cfg.cache_features else cfg.workers
    result = fit(s, trained=head, runner=model, optimizer=optimizer, criterion=nn.CrossEntropyLoss(),
                 train_ds=train_ds, val_ds=val_ds, lr=lr, workers=workers,
                 amp=None if cfg.cache_features else s.amp, desc="linear")
    metrics = result.metrics
    finish(s, metrics, epochs=cfg.epochs, history=result.history, lr=lr, cache_features=cfg.cache_features)
    return metrics
