"""Tiny colour-coded ImageFolder trees for the classification and probe tests."""

import numpy as np
from PIL import Image

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
