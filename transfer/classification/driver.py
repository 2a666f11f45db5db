"""The one epoch driver of fine-tuning and linear probing: resume, DDP, epochs, best/last, checkpoints.

:func:`fit` trains ``runner`` (what runs: the classifier, or a frozen encoder + head) and checkpoints
``trained`` (what learns: the classifier, or the head) for ``cfg.epochs`` epochs from where the run
folder's checkpoint stopped; per epoch it evaluates on the validation set, logs, tracks the best
top-1 and writes an atomic checkpoint. The protocols only build their model, optimiser and data.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from droppos.utils.logging import progress

from .common import Setup, load_checkpoint, save_checkpoint
from .data import eval_loader, train_loader
from .errors import InputError
from .loop import evaluate, train_one_epoch


@dataclass
class Fit:
    """What :func:`fit` returns: per-epoch history, best val top-1, iterations per epoch."""

    history: list[dict]
    best: float
    iters: int

    @property
    def metrics(self) -> dict[str, float]:
        last = self.history[-1]
        return {"top1": last["top1"], "top5": last["top5"], "top1_best": self.best}


def fit(s: Setup, *, trained: nn.Module, runner: nn.Module, optimizer, criterion, train_ds, val_ds, lr: float,
        workers: int, amp, mixup=None, clip_grad: float = 0.0, desc: str = "train") -> Fit:
    """Train and evaluate every epoch (see the module docstring); resumes from the run's checkpoint."""
    cfg, world, c = s.cfg, s.info.world_size, len(s.classes)
    iters = len(train_ds) // (world * cfg.batch_size)
    schedule = dict(lr=lr, min_lr=cfg.min_lr, warmup_steps=cfg.warmup_epochs * iters, total_steps=cfg.epochs * iters)
    start, best, history = 0, 0.0, []
    scaler = torch.amp.GradScaler(s.device.type) if amp is torch.float16 else None
    ck = load_checkpoint(s)
    if ck is not None:
        trained.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        if scaler is not None:
            if "scaler" not in ck:
                raise InputError(f"{s.ckpt_path}: written without fp16's gradient scaler; resume with the run's own "
                                 "--precision, or start over with --overwrite")
            scaler.load_state_dict(ck["scaler"])
        start, best, history = ck["epoch"], ck["best_top1"], list(ck["history"])
        if s.info.is_main:
            print(f"resumed {s.ckpt_path} after epoch {start}")
    net = runner
    if s.info.distributed:
        ids = [s.device.index] if s.device.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(runner, device_ids=ids)
    val = eval_loader(val_ds, cfg.batch_size, workers, s.info.rank, world, s.pin)
    bar = progress(cfg.epochs * iters, initial=start * iters, enabled=s.info.is_main, desc=desc)
    for epoch in range(start, cfg.epochs):
        loader = train_loader(train_ds, cfg.batch_size, workers, s.info.rank, world, cfg.seed, epoch, s.pin)
        stats = train_one_epoch(net, loader, optimizer, criterion, s.device, epoch=epoch, iters=iters,
                                schedule=schedule, mixup=mixup, amp=amp, clip_grad=clip_grad,
                                logger=s.logger if s.info.is_main else None, log_every=cfg.log_every, bar=bar,
                                scaler=scaler)
        ev = evaluate(net, val, s.device, c, amp)
        best = max(best, ev["top1"])
        history.append({"epoch": epoch + 1, **stats, **ev})
        if s.info.is_main:
            s.logger.log((epoch + 1) * iters, epoch=epoch + 1, **stats, val_top1=ev["top1"], val_top5=ev["top5"],
                         val_loss=ev["val_loss"], best_top1=best)
            bar.set_postfix(top1=f"{ev['top1']:.2f}", loss=f"{stats['train_loss']:.3f}")
        save_checkpoint(s, {"model": trained.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch + 1,
                            "best_top1": best, "history": history,
                            **({"scaler": scaler.state_dict()} if scaler is not None else {})})
    bar.close()
    if not history:
        raise InputError(f"--epochs {cfg.epochs}: nothing to train")
    return Fit(history, best, iters)
