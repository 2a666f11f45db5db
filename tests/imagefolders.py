"""Tiny colour-coded ImageFolder trees and a tiny encoder file for the classification and probe tests."""

import numpy as np
import torch
from PIL import Image

from droppos.models.vit import VisionTransformer
from droppos.utils.checkpoint import save_encoder

#: a ViT on 16-px images with a 4 x 4 grid, 2 blocks of width 64
TINY_ARCH = dict(img_size=16, patch_size=4, embed_dim=64, depth=2, num_heads=2)
COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]


def make_colour_imagefolder(root, n_train=8, n_val=4, size=16, classes=3, seed=0, noise=40.0):
    """``root/{train,val}/class<k>/<i>.png``: class = mean colour, plus i.i.d. pixel noise of std ``noise``."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        for c in range(classes):
            d = root / split / f"class{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                a = np.clip(np.array(COLOURS[c % 3])[None, None] + rng.normal(0, noise, (size, size, 3)), 0, 255)
                Image.fromarray(a.astype(np.uint8)).save(d / f"{i}.png")
    return root


def write_tiny_encoder(path, **meta):
    """A seeded random ``TINY_ARCH`` encoder saved as this project's ``encoder.pth`` with ``meta``."""
    torch.manual_seed(0)
    enc = VisionTransformer(**TINY_ARCH)
    save_encoder(path, enc.state_dict(), {"arch": enc.arch_args(), **meta})
    return path
