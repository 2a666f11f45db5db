"""What both probes share: the classification set-up (run folder, backbone, data, resolved config),
seeded image subsets, frozen feature extraction and ``metrics.json`` (``task="probe"``).

Run folder: ``config.yaml``/``config.json``, ``log.jsonl`` + ``tb/`` (per-epoch probe losses) and
``metrics.json``. Probes run in one process (several GPUs would not make them faster).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import torch
from droppos.transfer.classification.common import Setup, prepare
from droppos.transfer.classification.data import build_transform, eval_loader, image_folder
from droppos.transfer.classification.errors import InputError
from droppos.transfer.classification.features import extract_features
from torch.utils.data import Subset

from droppos.runs.records import write_metrics

from .config import ProbeConfig


def setup_probe(cfg: ProbeConfig, protocol: str, overwrite: bool = False) -> Setup:
    """``droppos classify``'s set-up (checks, backbone, data, config written), for one process only."""
    for name in ("train_images", "val_images"):
        if getattr(cfg, name) < 0:
            raise InputError(f"--{name.replace('_', '-')} {getattr(cfg, name)}: give a count of images (0 = all)")
    from droppos.utils.dist import env_dist_info

    if env_dist_info().distributed:
        raise InputError("droppos probe runs in one process; start it without torchrun or a multi-task srun")
    return prepare(cfg, protocol, overwrite=overwrite)


def image_subset(s: Setup, split: str, n: int, img_size: int | None = None):
    """``split`` of the ImageFolder with the evaluation transform, cut to a seeded random subset of ``n`` (0 = all)."""
    ds = image_folder(s.data_root, split, build_transform("eval", img_size or s.img_size, s.cfg.crop_pct), s.classes)
    if 0 < n < len(ds):
        g = torch.Generator().manual_seed(s.cfg.seed + (0 if split == "train" else 1))
        ds = Subset(ds, sorted(torch.randperm(len(ds), generator=g)[:n].tolist()))
    return ds


def features(s: Setup, model: torch.nn.Module, dataset, fn: Callable) -> tuple[torch.Tensor, torch.Tensor]:
    """``fn(model, images) -> (B, ...)`` over ``dataset`` (frozen, eval mode).

    Returns ((N, ...) float32, (N,) labels) on the CPU, in dataset order.
    """
    loader = eval_loader(dataset, s.cfg.batch_size, s.cfg.workers, 0, 1, s.pin)
    return extract_features(model, loader, s.device, fn, s.amp)


def finish(s: Setup, metrics: dict[str, float], **extra) -> Path:
    """Write ``metrics.json`` (task ``probe``, protocol = ``s.protocol``) and close the logger."""
    from droppos.transfer.classification.common import encoder_cost

    path = write_metrics(s.run_dir, task="probe", protocol=s.protocol, backbone=s.backbone.backbone, data_root=s.data_root,
                         cost=encoder_cost(s),
                         dataset=s.dataset, metrics=metrics, seed=s.cfg.seed, img_size=s.img_size,
                         config=dataclasses.asdict(s.cfg), **extra)
    s.logger.close()
    print(f"probe {s.protocol}: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()) + f" -> {path}")
    return path
