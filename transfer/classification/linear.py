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
from droppos.utils.logging import progress

from .common import Setup, finish, load_checkpoint, save_checkpoint
from .config import LinearConfig
from .data import build_transform, eval_loader, image_folder, train_loader
from .errors import InputError
from .features import extract_features, pooled_feature
from .loop import evaluate, train_one_epoch


class LinearHead(nn.Sequential):
    """(B, D) -> (B, C): BatchNorm without affine (eps 1e-6), then a linear layer (trunc-normal std 0.01)."""

    def __init__(self, dim: int, num_classes: int):
        from timm.layers import trunc_normal_

        super().__init__(nn.BatchNorm1d(dim, affine=False, eps=1e-6), nn.Linear(dim, num_classes))
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
    iters = len(train_ds) // (world * cfg.batch_size)
    schedule = dict(lr=lr, min_lr=cfg.min_lr, warmup_steps=cfg.warmup_epochs * iters, total_steps=cfg.epochs * iters)
    workers = 0 if cfg.cache_features else cfg.workers

    start, best, history = 0, 0.0, []
    ck = load_checkpoint(s)
    if ck is not None:
        head.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        start, best, history = ck["epoch"], ck["best_top1"], list(ck["history"])
    net = model
    if s.info.distributed:
        ids = [s.device.index] if s.device.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    val = eval_loader(val_ds, cfg.batch_size, workers, s.info.rank, world, s.pin)
    criterion = nn.CrossEntropyLoss()
    bar = progress(cfg.epochs * iters, initial=start * iters, enabled=s.info.is_main, desc="linear")
    for epoch in range(start, cfg.epochs):
        loader = train_loader(train_ds, cfg.batch_size, workers, s.info.rank, world, cfg.seed, epoch, s.pin)
        stats = train_one_epoch(net, loader, optimizer, criterion, s.device, epoch=epoch, iters=iters,
                                schedule=schedule, amp=None if cfg.cache_features else s.amp,
                                logger=s.logger if s.info.is_main else None, log_every=cfg.log_every, bar=bar)
        ev = evaluate(net, val, s.device, c, None if cfg.cache_features else s.amp)
        best = max(best, ev["top1"])
        history.append({"epoch": epoch + 1, **stats, **ev})
        if s.info.is_main:
            s.logger.log((epoch + 1) * iters, epoch=epoch + 1, **stats, val_top1=ev["top1"], val_top5=ev["top5"],
                         val_loss=ev["val_loss"], best_top1=best)
            bar.set_postfix(top1=f"{ev['top1']:.2f}")
        save_checkpoint(s, {"model": head.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch + 1,
                            "best_top1": best, "history": history})
    bar.close()
    if not history:
        raise InputError(f"--epochs {cfg.epochs}: nothing to train")
    last = history[-1]
    metrics = {"top1": last["top1"], "top5": last["top5"], "top1_best": best}
    finish(s, metrics, epochs=cfg.epochs, history=history, lr=lr, cache_features=cfg.cache_features)
    return metrics
