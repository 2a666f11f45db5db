"""A linear classifier on cached frozen features, trained with the classification training loop.

The head is the linear probe's (``BatchNorm1d(affine=False)`` + linear, ``LinearHead``); the
optimiser is AdamW (weight decay on the matrix only) with a per-iteration cosine to 0 and no
warm-up, one epoch = one shuffled pass over the features (seeded)::

    head, history = train_head(x, y, num_classes, epochs=10, lr=1e-3, weight_decay=1e-4,
                               batch_size=1024, seed=0, device="cpu")       # x: (N, D), y: (N,)
    pred = predict(head, x_val, device="cpu")                              # (M,) int64
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils.data import TensorDataset

from droppos.transfer.classification.data import train_loader
from droppos.transfer.classification.errors import InputError
from droppos.transfer.classification.linear import LinearHead
from droppos.transfer.classification.loop import train_one_epoch


def train_head(x: torch.Tensor, y: torch.Tensor, num_classes: int, *, epochs: int, lr: float, weight_decay: float,
               batch_size: int, seed: int, device: torch.device | str, logger=None, tag: str = "probe"
               ) -> tuple[nn.Module, list[dict]]:
    """Train ``LinearHead(D, num_classes)`` on x: (N, D), y: (N,) int64; returns it (eval mode) and per-epoch stats.

    ``logger``: a ``RunLogger``; each epoch logs ``{tag}_epoch``, ``{tag}_loss``.
    """
    if epochs < 1:
        raise InputError(f"--epochs {epochs}: the linear probe needs at least one epoch")
    if x.shape[0] < batch_size:
        raise InputError(f"{x.shape[0]} cached feature vectors give no full batch of {batch_size}; "
                         "lower --head-batch-size or raise --train-images")
    device = torch.device(device)
    torch.manual_seed(seed)
    head = LinearHead(x.shape[1], num_classes).to(device)
    matrices = [p for p in head.parameters() if p.ndim > 1]
    vectors = [p for p in head.parameters() if p.ndim <= 1]
    optimizer = torch.optim.AdamW([{"params": matrices, "weight_decay": weight_decay},
                                   {"params": vectors, "weight_decay": 0.0}], lr=lr)
    dataset = TensorDataset(x.float(), y.long())
    iters = len(dataset) // batch_size
    schedule = dict(lr=lr, min_lr=0.0, warmup_steps=0, total_steps=epochs * iters)
    criterion = nn.CrossEntropyLoss()
    history = []
    for epoch in range(epochs):
        loader = train_loader(dataset, batch_size, 0, 0, 1, seed, epoch)
        stats = train_one_epoch(head, loader, optimizer, criterion, device, epoch=epoch, iters=iters,
                                schedule=schedule, log_every=max(iters, 1) + 1)
        history.append({"epoch": epoch + 1, "train_loss": stats["train_loss"]})
        if logger is not None:
            logger.log((epoch + 1) * iters, **{f"{tag}_epoch": epoch + 1, f"{tag}_loss": stats["train_loss"]})
    return head.eval(), history


@torch.no_grad()
def predict(head: nn.Module, x: torch.Tensor, device: torch.device | str, chunk: int = 8192) -> torch.Tensor:
    """x: (M, D) -> (M,) int64 arg-max class of ``head`` (in eval mode), on the CPU."""
    head.eval()
    out = [head(x[i:i + chunk].float().to(device)).argmax(dim=1).cpu() for i in range(0, x.shape[0], chunk)]
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)
