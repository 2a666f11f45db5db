"""The supervised training epoch and the evaluation pass shared by fine-tuning and linear probing.

``train_one_epoch`` sets the per-iteration learning rate (``droppos.utils.optim.cosine_lr``, which
honours each group's ``lr_scale`` from layer decay), applies mixup/cutmix when given, runs the
forward under bf16 or fp16 autocast when asked (fp16 with a ``torch.amp.GradScaler``: the loss scaled for the
backward, the gradients unscaled before clipping, a step with inf/NaN gradients skipped, as the official code's
``NativeScaler``), and returns the epoch's mean loss. ``evaluate`` counts
top-1/top-5 hits over a (possibly sharded) loader and sums them over processes.
"""

from __future__ import annotations

import math
import time

import torch

from droppos.errors import UserError
from droppos.utils import dist as du
from droppos.utils.optim import clip_gradients, cosine_lr, set_lr


def train_one_epoch(model, loader, optimizer, criterion, device: torch.device, *, epoch: int, iters: int,
                    schedule: dict, mixup=None, amp: torch.dtype | None = None, clip_grad: float = 0.0,
                    logger=None, log_every: int = 20, bar=None, scaler=None) -> dict[str, float]:
    """One epoch of ``iters`` iterations.

    Args:
        schedule: ``{"lr", "min_lr", "warmup_steps", "total_steps"}`` of ``cosine_lr`` (in iterations).
        mixup: a timm ``Mixup`` (targets become soft; ``criterion`` must take them), or None.
        logger: a ``RunLogger`` (main process) for per-``log_every`` scalars.
        scaler: a ``torch.amp.GradScaler`` (fp16), or None.
    Returns:
        ``{"train_loss", "lr"}`` (loss averaged over iterations and processes).
    """
    model.train()
    params = [p for g in optimizer.param_groups for p in g["params"]]
    loss_sum, seen = torch.zeros((), device=device), 0
    t0 = time.perf_counter()
    for i, (images, target) in enumerate(loader):
        if i >= iters:
            break
        step = epoch * iters + i
        set_lr(optimizer, cosine_lr(step, schedule["total_steps"], schedule["warmup_steps"], schedule["lr"],
                                    schedule["min_lr"]))
        images, target = images.to(device, non_blocking=True), target.to(device, non_blocking=True)
        if mixup is not None:
            images, target = mixup(images, target)
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            loss = criterion(model(images), target)
        optimizer.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            if clip_grad > 0:
                clip_gradients(params, clip_grad)
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            if clip_grad > 0:
                scaler.unscale_(optimizer)  # clip the true gradients
                clip_gradients(params, clip_grad)
            scaler.step(optimizer)
            scaler.update()
        loss_sum += loss.detach().float()
        seen += 1
        if bar is not None:
            bar.update(1)
        if logger is not None and (i + 1) % log_every == 0:
            logger.log(step + 1, loss=loss.item(), lr=max(g["lr"] for g in optimizer.param_groups),
                       img_per_s=(i + 1) * images.shape[0] / max(time.perf_counter() - t0, 1e-9))
    loss = float(du.all_reduce_mean(loss_sum / max(seen, 1), device).item())
    if not math.isfinite(loss):  # every process sees the same reduced loss: all stop, none hangs in a collective
        raise UserError(f"the training loss diverged ({loss}) in epoch {epoch}; nothing after the last checkpoint "
                        "is kept: lower --blr or set --clip-grad, then start over (--overwrite)")
    return {"train_loss": loss, "lr": max(g["lr"] for g in optimizer.param_groups)}


@torch.no_grad()
def evaluate(model, loader, device: torch.device, num_classes: int, amp: torch.dtype | None = None) -> dict[str, float]:
    """Top-1 / top-5 accuracy (percent) and mean cross-entropy over every sample of ``loader``."""
    model.eval()
    k = min(5, num_classes)
    hits = torch.zeros(3, device=device, dtype=torch.float64)  # top1, top5, loss sum
    n = torch.zeros((), device=device, dtype=torch.float64)
    for images, target in loader:
        images, target = images.to(device, non_blocking=True), target.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            logits = model(images)
        logits = logits.float()
        top = logits.topk(k, dim=1).indices
        correct = top.eq(target[:, None])
        hits[0] += correct[:, 0].sum()
        hits[1] += correct.any(dim=1).sum()
        hits[2] += torch.nn.functional.cross_entropy(logits, target, reduction="sum")
        n += target.shape[0]
    hits, n = du.all_reduce(hits, device), du.all_reduce(n, device)
    total = max(float(n.item()), 1.0)
    return {"top1": 100.0 * hits[0].item() / total, "top5": 100.0 * hits[1].item() / total,
            "val_loss": hits[2].item() / total, "n": int(n.item())}
