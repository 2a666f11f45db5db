"""Shared inputs of the detection tests: a tiny embedded dataset, a tiny ViTDet, encoder files."""

from __future__ import annotations

import argparse
from pathlib import Path

from droppos.models.vit import VisionTransformer
from droppos.utils.checkpoint import save_encoder

CONFIG_DIR = Path(__file__).resolve().parents[1] / "transfer/detection/configs"
FMNIST = "mask_rcnn_vitdet_fmnist"

# A ViT small enough for CPU tests, with the fmnist config's patch size and input.
WIDTH, DEPTH, HEADS, PATCH, IMG = 64, 2, 2, 8, 128
TINY = [
    f"model.backbone.net.embed_dim={WIDTH}",
    f"model.backbone.net.depth={DEPTH}",
    f"model.backbone.net.num_heads={HEADS}",
    "model.backbone.net.window_block_indexes.global_blocks=[1]",
    "model.backbone.out_channels=32",
    "model.proposal_generator.head.in_channels=32",
    "model.roi_heads.box_head.input_shape.channels=32",
    "model.roi_heads.mask_head.input_shape.channels=32",
    "model.roi_heads.box_head.conv_dims=[16]",
    "model.roi_heads.box_head.fc_dims=[32]",
    "model.roi_heads.box_predictor.input_shape.channels=32",
    "model.roi_heads.mask_head.conv_dims=[16,16]",
    "model.roi_heads.batch_size_per_image=16",
]


def build_tiny_coco(out: Path, train: int = 4, val: int = 2) -> Path:
    """The embedded default (real Fashion-MNIST scenes), ``train`` + ``val`` canvases of 128 px."""
    from droppos.tools.data.coco import build_coco

    build_coco(out, train_images=train, val_images=val, seed=0, show_progress=False)
    return out


def write_encoder(path: Path, width: int = WIDTH, depth: int = DEPTH, heads: int = HEADS, patch: int = PATCH,
                  img: int = 64, seed: int = 0) -> VisionTransformer:
    """This project's ``encoder.pth`` of a random ViT (every weight random, so any mix-up shows)."""
    import torch

    torch.manual_seed(seed)
    enc = VisionTransformer(img_size=img, patch_size=patch, embed_dim=width, depth=depth, num_heads=heads)
    with torch.no_grad():
        for name, p in enc.named_parameters():
            p.add_(0.1 * torch.randn_like(p))
    meta = {"method": "droppos", "arch": enc.arch_args(), "epochs": 1, "epochs_done": 1}
    save_encoder(path, enc.state_dict(), meta)
    return enc


def detect_args(**kw) -> argparse.Namespace:
    """The Namespace ``droppos detect`` parses, with defaults."""
    base = dict(config_file=FMNIST, init=None, fmt=None, trust_pickle=False, output=Path("out"), data=None,
                resume=False, eval_only=False, seed=0, num_gpus=1, num_machines=1, machine_rank=0,
                dist_url="auto", opts=[])
    base.update(kw)
    return argparse.Namespace(**base)
