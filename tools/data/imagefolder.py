"""Fashion-MNIST as an ImageFolder tree, the embedded default for pretraining and classification.

Layout (``torchvision.datasets.ImageFolder`` / timm read it as is)::

    OUT/train/<class>/<index>.png     from the 60000-image train split
    OUT/val/<class>/<index>.png       from the 10000-image t10k split
    OUT/dataset.json                  kind, size, mode, seed, source, classes, counts

``<class>`` is a folder-safe name from :data:`droppos.tools.data.idx.CLASSES` and ``<index>``
the item's index in its split (5 digits). Note that ImageFolder numbers classes in sorted
folder order (``ankle_boot`` = 0), not in Fashion-MNIST label order; ``dataset.json`` lists
the classes in label order.

Images are RGB (the grey value repeated), ``size`` x ``size`` px: ``mode="resize"`` scales the
28 px image bilinearly, ``mode="pad"`` centres it on black (needs ``size >= 28``).
With ``train_per_class``/``val_per_class`` a random subset of that many items per class is
taken, drawn from ``seed``; the same arguments give byte-identical files.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from droppos.errors import UserError

from .idx import CLASSES, DEFAULT_SOURCE, load_fashion_mnist
from .output import progress, read_manifest, staged_output

MODES = ("resize", "pad")


def to_rgb(image: np.ndarray, size: int, mode: str = "resize") -> Image.Image:
    """One ``(28, 28)`` uint8 grey image -> ``size`` x ``size`` RGB PIL image (see module doc)."""
    grey = Image.fromarray(image, mode="L")
    if mode == "resize":
        if size != image.shape[0]:
            grey = grey.resize((size, size), Image.BILINEAR)
    elif mode == "pad":
        if size < image.shape[0]:
            raise ValueError(f"--size {size} is smaller than the {image.shape[0]} px images; use mode resize")
        canvas = Image.new("L", (size, size), 0)
        off = (size - image.shape[0]) // 2
        canvas.paste(grey, (off, off))
        grey = canvas
    else:
        raise ValueError(f"unknown mode {mode!r}; choose one of {MODES}")
    return grey.convert("RGB")


def png_bytes(image: Image.Image) -> bytes:
    """PNG encoding without metadata: the same pixels always give the same bytes."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def select_per_class(labels: np.ndarray, per_class: int | None, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of ``per_class`` random items of each class (all when None or too many)."""
    chosen = []
    for c in range(len(CLASSES)):
        idx = np.flatnonzero(labels == c)
        if per_class is not None and per_class < len(idx):
            idx = np.sort(rng.choice(idx, size=per_class, replace=False))
        chosen.append(idx)
    return np.sort(np.concatenate(chosen))


def build_imagefolder(
    out: str | os.PathLike,
    source: str | os.PathLike = DEFAULT_SOURCE,
    size: int = 32,
    train_per_class: int | None = None,
    val_per_class: int | None = None,
    seed: int = 0,
    mode: str = "resize",
    overwrite: bool = False,
    show_progress: bool = True,
) -> dict:
    """Write the ImageFolder tree under ``out``; returns the content of ``dataset.json``.

    Args:
        out: dataset folder to create (see :func:`droppos.tools.data.output.staged_output`).
        source: folder of the Fashion-MNIST IDX files.
        size: output side in px.
        train_per_class, val_per_class: items per class (None: all, 6000 / 1000).
        seed: draws the subsets.
        mode: ``"resize"`` or ``"pad"``.
        overwrite: replace a dataset built earlier with other settings.
    """
    if size < 8:
        raise ValueError(f"--size {size} is too small; use at least 8 px")
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {MODES}")
    for name, n in (("train_per_class", train_per_class), ("val_per_class", val_per_class)):
        if n is not None and n < 1:
            raise ValueError(f"{name} must be >= 1 (or None for all), got {n}")
    spec = {
        "kind": "imagefolder",
        "format_version": 1,
        "size": size,
        "mode": mode,
        "train_per_class": train_per_class,
        "val_per_class": val_per_class,
        "seed": seed,
        "source": str(Path(source).resolve()),
        "classes": list(CLASSES),
    }
    with staged_output(out, spec, overwrite) as stage:
        if stage is None:
            print(f"{out}: imagefolder dataset already built with these settings, nothing to do")
        else:
            rng = np.random.default_rng(seed)
            for split, src_split, per_class in (("train", "train", train_per_class), ("val", "t10k", val_per_class)):
                images, labels = load_fashion_mnist(source, src_split)
                have = int(np.bincount(labels).min())
                if per_class is not None and per_class > have:
                    raise UserError(f"--{split}-per-class {per_class}: the {src_split} split has {have} images per "
                                    f"class; give at most {have} (or leave it out for all)")
                chosen = select_per_class(labels, per_class, rng)
                for c in CLASSES:
                    (stage.path / split / c).mkdir(parents=True)
                for i in progress(chosen, len(chosen), f"imagefolder {split}", show_progress):
                    path = stage.path / split / CLASSES[labels[i]] / f"{i:05d}.png"
                    path.write_bytes(png_bytes(to_rgb(images[i], size, mode)))
                stage.counts[split] = int(len(chosen))
    return read_manifest(out)
