"""Optimiser pieces shared by the training loops: the per-iteration schedule and gradient clipping."""

from __future__ import annotations

import math

import torch


def cosine_lr(step: float, total_steps: float, warmup_steps: float, base_lr: float, min_lr: float = 0.0) -> float:
    """Linear warm-up to ``base_lr`` then half-cycle cosine to ``min_lr`` (MAE's per-iteration schedule)."""
    if step < warmup_steps:
        return base_lr * step / warmup_steps
    span = max(total_steps - warmup_steps, 1e-12)
    t = min(max((step - warmup_steps) / span, 0.0), 1.0)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)


@torch.no_grad()
def clip_gradients(params: list[torch.Tensor], max_norm: float, mode: str = "global") -> torch.Tensor | None:
    """Clip without host synchronisation; returns the (pre-clip) global norm tensor.

    ``global``: one norm over all gradients (``clip_grad_norm_``). ``official``: every tensor
    scaled to norm <= max_norm on its own (what the official DropPos code does in a Python loop
    with a host sync per parameter), here with foreach kernels.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads or max_norm <= 0:
        return None
    if mode == "global":
        return torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)
    if mode != "official":
        raise ValueError(f"clip mode must be 'global' or 'official', got {mode!r}")
    norms = torch._foreach_norm(grads)
    coefs = [torch.clamp(max_norm / (n + 1e-6), max=1.0) for n in norms]
    torch._foreach_mul_(grads, coefs)
    return torch.linalg.vector_norm(torch.stack(norms))
