"""Shared inputs of the segmentation tests: a tiny model override, tiny datasets, a tiny model.

The tiny override keeps the embedded config's recipe and data pipeline (128 px canvases) and
shrinks the network: a 48-wide, 4-block ViT-16 (64 tokens) and 16/8-channel decode heads.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

WIDTH, DEPTH, HEADS = 48, 4, 3

TINY_MODEL = {
    "model.backbone.embed_dims": WIDTH,
    "model.backbone.num_layers": DEPTH,
    "model.backbone.num_heads": HEADS,
    "model.backbone.out_indices": [0, 1, 2, 3],
    "model.neck.embed_dim": WIDTH,
    "model.decode_head.in_channels": [WIDTH] * 4,
    "model.decode_head.channels": 16,
    "model.auxiliary_head.in_channels": WIDTH,
    "model.auxiliary_head.channels": 8,
    "optim_wrapper.paramwise_cfg.num_layers": DEPTH,
}


def tiny_run_options(iters: int = 2, **extra) -> list[str]:
    """``--cfg-options`` for a few iterations of the tiny model, no worker processes."""
    opts = {**TINY_MODEL,
            "train_dataloader.batch_size": 2, "train_dataloader.num_workers": 0,
            "val_dataloader.batch_size": 4, "val_dataloader.num_workers": 0,
            "test_dataloader.num_workers": 0,
            "train_cfg.max_iters": iters, "train_cfg.val_interval": iters,
            "default_hooks.checkpoint.interval": iters, "default_hooks.logger.interval": 1, **extra}
    return [f"{k}={_fmt(v)}" for k, v in opts.items()]


def _fmt(v) -> str:
    return "[" + ",".join(map(str, v)) + "]" if isinstance(v, (list, tuple)) else str(v)


def build_tiny_dataset(root: Path, train: int = 8, val: int = 4) -> Path:
    """The embedded ADE20K-format dataset (real builder), ``train`` + ``val`` canvases of 128 px."""
    from droppos.tools.data.ade20k import build_ade20k

    build_ade20k(root, train_images=train, val_images=val, seed=0, show_progress=False)
    return root


def write_pair(root: Path, split: str, stem: str, label: np.ndarray, image_size: tuple[int, int] | None = None) -> None:
    """One image (black, ``image_size`` (W, H) or the label's size) + its label PNG in ADE layout."""
    h, w = label.shape
    size = image_size or (w, h)
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "annotations" / split).mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size).save(root / "images" / split / f"{stem}.jpg")
    Image.fromarray(label.astype(np.uint8), mode="L").save(root / "annotations" / split / f"{stem}.png")


def tiny_segmentor(img: int = 128):
    """The embedded config's EncoderDecoder with the tiny override, BN instead of SyncBN, eval mode."""
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    from droppos.transfer.segmentation.config import load_config

    cfg = load_config("upernet_vit_fmnist", {**TINY_MODEL, "model.backbone.img_size": (img, img)})
    init_default_scope("mmseg")
    model = revert_sync_batchnorm(MODELS.build(cfg.model))
    model.init_weights()
    return model.eval(), cfg
