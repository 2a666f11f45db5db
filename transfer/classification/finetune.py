"""End-to-end fine-tuning, the MAE/DropPos recipe (see :mod:`.config` for the defaults).

The classifier is this project's ``VisionTransformer`` (timm's) with ``num_classes`` outputs and
average pooling + ``fc_norm`` (``global_pool='avg'``), initialised from the backbone: the encoder
weights load with exactly the expected keys missing (``head.*``, and ``fc_norm.*`` with average
pooling) and unused (``norm.*`` with average pooling), anything else is an error; the head gets
MAE's init (trunc-normal std 2e-5) unless ``head_init='source'``.

Optimisation: AdamW over timm's ``param_groups_layer_decay`` groups (``lr_scale`` per block,
no weight decay on 1-D weights, tokens and the position embedding), per-iteration cosine with
linear warm-up, timm ``Mixup`` (soft targets with label smoothing) or label-smoothed
cross-entropy, bf16 autocast on GPU, DDP when started with torchrun. Evaluated (top-1, top-5)
after every epoch; resumable per epoch. Writes ``classifier.pth`` (see :mod:`.classifier`).
"""

from __future__ import annotations

import torch
import torch.nn as nn


from .classifier import save_classifier
from .common import Setup, finish
from .config import FinetuneConfig
from .data import build_transform, image_folder
from .driver import fit
from .errors import InputError


def criterion_and_mixup(cfg: FinetuneConfig, num_classes: int):
    from timm.data import Mixup
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    if cfg.mixup > 0 or cfg.cutmix > 0:
        if cfg.batch_size % 2:
            raise InputError(f"mixup/cutmix need an even --batch-size, got {cfg.batch_size}")
        mixup = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, prob=cfg.mixup_prob,
                      switch_prob=cfg.mixup_switch_prob, mode="batch", label_smoothing=cfg.smoothing,
                      num_classes=num_classes)
        return SoftTargetCrossEntropy(), mixup
    if cfg.smoothing > 0:
        return LabelSmoothingCrossEntropy(smoothing=cfg.smoothing), None
    return nn.CrossEntropyLoss(), None


def run_finetune(s: Setup) -> dict[str, float]:
    from timm.optim import param_groups_layer_decay

    cfg: FinetuneConfig = s.cfg  # type: ignore[assignment]
    c = len(s.classes)
    model = s.backbone.classifier(s.img_size, c, cfg.global_pool, cfg.drop_path, cfg.train_pos_embed,
                                  cfg.head_init).to(s.device)
    groups = param_groups_layer_decay(model, cfg.weight_decay, no_weight_decay_list=getattr(model, "no_weight_decay", set)(),
                                      layer_decay=cfg.layer_decay)
    world = s.info.world_size
    lr = cfg.lr if cfg.lr is not None else cfg.blr * cfg.batch_size * world / 256
    optimizer = torch.optim.AdamW(groups, lr=lr)
    criterion, mixup = criterion_and_mixup(cfg, c)

    train_ds = image_folder(s.data_root, "train", build_transform("finetune", s.img_size, aa=cfg.aa, reprob=cfg.reprob,
                                                                min_scale=cfg.min_scale), s.classes)
    val_ds = image_folder(s.data_root, "val", build_transform("eval", s.img_size, cfg.crop_pct), s.classes)
    result = fit(s, trained=model, runner=model, optimizer=optimizer, criterion=criterion, train_ds=train_ds,
                 val_ds=val_ds, lr=lr, workers=cfg.workers, amp=s.amp, mixup=mixup, clip_grad=cfg.clip_grad,
                 desc="finetune")
    if s.info.is_main:
        save_classifier(s.run_dir / "classifier.pth", model, s, global_pool=cfg.global_pool)
    metrics = result.metrics
    finish(s, metrics, epochs=cfg.epochs, history=result.history, lr=lr, iters_per_epoch=result.iters)
    return metrics
