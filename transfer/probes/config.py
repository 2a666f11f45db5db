"""Probe configs: the classification options (backbone, data, system) plus the probes' own.

Both probes extract frozen features once (the evaluation transform of ``droppos classify``: resize
to ``img_size / crop_pct``, centre crop) from a seeded random subset of ``train/`` and ``val/``, and
train a linear classifier (``BatchNorm1d(affine=False)`` + linear, as the linear probe) on the
cached features with AdamW and a cosine schedule.

Every field is a ``droppos probe <protocol> --flag``; ``--config FILE.yaml`` sets many at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from droppos.transfer.classification.config import CommonConfig
from droppos.utils.config import opt

PROTOCOLS = ("position", "order")


@dataclass
class ProbeConfig(CommonConfig):
    output: str = opt("runs/probe", "run folder: config, log, metrics.json")
    batch_size: int = opt(128, "images per step of feature extraction", ge=1)
    train_images: int = opt(1000, "images of train/ (a seeded random subset; 0 = all) whose features train the probe",
                            ge=0)
    val_images: int = opt(500, "images of val/ (a seeded random subset; 0 = all) the probe is measured on", ge=0)
    epochs: int = opt(10, "epochs of the linear probe on the cached features", ge=1)
    lr: float = opt(1e-3, "AdamW learning rate of the linear probe (cosine to 0, no warm-up)", gt=0.0)
    weight_decay: float = opt(1e-4, "AdamW weight decay of the linear probe's weight matrix", ge=0.0)
    head_batch_size: int = opt(1024, "cached feature vectors per step of the linear probe", ge=1)


@dataclass
class PositionConfig(ProbeConfig):
    output: str = opt("runs/probe_position", "run folder: config, log, metrics.json")


@dataclass
class OrderConfig(ProbeConfig):
    output: str = opt("runs/probe_order", "run folder: config, log, metrics.json")
    val_images: int = opt(1000, "images of val/ (a seeded random subset; 0 = all) the order probe is measured on", ge=0)
    pool: str = opt("cls", "frozen feature compared and classified: the normed [cls] token or the mean of the "
                           "normed patch tokens", choices=["cls", "avg"])
    classifier: str = opt("", "a `droppos classify finetune` run folder (or its classifier.pth) whose accuracy is "
                              "measured on shuffled patches; empty = a linear probe on the frozen --pool features, "
                              "trained here (train-images, epochs, lr, weight-decay, head-batch-size apply only then)")
    train_images: int = opt(2000, "without --classifier: images of train/ (seeded random subset; 0 = all) whose "
                                  "frozen features train the linear classifier", ge=0)
    epochs: int = opt(30, "without --classifier: epochs of the linear classifier on the cached features", ge=1)
    head_batch_size: int = opt(256, "without --classifier: cached feature vectors per step of the linear classifier",
                               ge=1)


CONFIGS = {"position": PositionConfig, "order": OrderConfig}
