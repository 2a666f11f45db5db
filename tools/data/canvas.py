"""Paste real Fashion-MNIST items onto a canvas: the scenes of the detection and segmentation sets.

One canvas (``make_canvas``) is a black square of ``size`` px with ``min_items..max_items``
items pasted in order. Each item is a real Fashion-MNIST image, resized (bilinear) to a random
side of ``min_scale..max_scale`` times the canvas, tinted with a random colour and placed at a
random position fully inside the canvas. An item's *silhouette* is its pixels brighter than
``threshold`` with interior holes filled (e.g. a bag's handle; see ``fill_holes``), so every
mask is hole-free.

Occlusion: later items cover earlier ones, so an item's *visible mask* is its silhouette minus
the silhouettes of the items pasted after it. The visible masks are pairwise disjoint and
their union is exactly the set of non-background pixels of the image. An item is dropped (and
the canvas re-composed without it, so no unlabelled fragment is left in the image) when its
visible area is below ``min_visible`` of its silhouette or below ``min_pixels``, when its
visible box is thinner than 2 px, or when the items on top of it cut a hole into its visible
mask (COCO polygons cannot represent holes). Dropping only uncovers pixels, so the loop ends;
the last item is never covered, so a canvas holds at least one item (a draw of only
near-black items is redrawn).

Determinism: canvas ``i`` of a split depends only on ``(seed, split, i)`` (see ``canvas_rng``),
so the COCO and ADE20K builders, given the same seed, draw the same scenes, and asking for more
images leaves the first ones unchanged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

#: split name -> number mixed into the seed, so train and val scenes differ.
SPLIT_CODES = {"train": 0, "val": 1}


@dataclass(frozen=True)
class CanvasConfig:
    """How scenes are drawn; every field is recorded in ``dataset.json``."""

    size: int = 128  # canvas side in px
    min_items: int = 2  # items pasted per canvas, before occlusion drops
    max_items: int = 5
    min_scale: float = 0.25  # item side as a fraction of the canvas side
    max_scale: float = 0.6
    threshold: int = 24  # grey level (0..255) above which an item pixel belongs to it
    min_visible: float = 0.35  # drop an item with less than this fraction of it visible
    min_pixels: int = 16  # ... or fewer visible pixels than this

    def validate(self) -> None:
        """Raise ValueError with the offending field when the configuration makes no sense."""
        if self.size < 32:
            raise ValueError(f"canvas size {self.size} px is too small; use at least 32")
        if not 1 <= self.min_items <= self.max_items:
            raise ValueError(f"need 1 <= min_items <= max_items, got {self.min_items}..{self.max_items}")
        if not 0 < self.min_scale <= self.max_scale <= 1:
            raise ValueError(f"need 0 < min_scale <= max_scale <= 1, got {self.min_scale}..{self.max_scale}")
        if round(self.min_scale * self.size) < 8:
            raise ValueError(f"items of {self.min_scale} x {self.size} px are too small; raise min_scale")
        if not 0 <= self.threshold < 255:
            raise ValueError(f"threshold {self.threshold} outside 0..254")
        if not 0 <= self.min_visible <= 1:
            raise ValueError(f"min_visible {self.min_visible} outside 0..1")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Canvas:
    """One scene.

    Attributes:
        image: ``(S, S, 3)`` uint8 RGB.
        masks: ``(K, S, S)`` bool visible pixels per item, pairwise disjoint, hole-free.
        classes: ``(K,)`` int64 Fashion-MNIST labels ``0..9``.
        sources: ``(K,)`` int64 index of each item in its Fashion-MNIST split.
    """

    image: np.ndarray
    masks: np.ndarray
    classes: np.ndarray
    sources: np.ndarray

    def label_map(self) -> np.ndarray:
        """``(S, S)`` uint8: 0 on background, ``class + 1`` on each item's visible pixels."""
        out = np.zeros(self.image.shape[:2], np.uint8)
        for mask, cls in zip(self.masks, self.classes):
            out[mask] = cls + 1
        return out


def canvas_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator that draws canvas ``index`` of ``split``; independent of every other canvas."""
    return np.random.default_rng([int(seed), SPLIT_CODES[split], int(index)])


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """``mask`` (H, W) bool with every background region not 4-connected to the border filled.

    4-connected: a pocket that reaches the outside only through a corner where two mask pixels
    touch diagonally is filled too, so the boundary of a mask never touches itself and each
    COCO polygon traced from it is a simple polygon (valid for shapely, which detectron2's
    crop augmentations use).
    """
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return mask.copy()
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    crop = np.pad(mask[y0:y1, x0:x1], 1)  # a background ring that touches everything outside
    free = ~crop
    reach = np.zeros_like(crop)
    reach[0, :] = reach[-1, :] = reach[:, 0] = reach[:, -1] = True
    while True:
        grown = reach.copy()  # cross-shaped (4-connected) dilation
        grown[1:, :] |= reach[:-1, :]
        grown[:-1, :] |= reach[1:, :]
        grown[:, 1:] |= reach[:, :-1]
        grown[:, :-1] |= reach[:, 1:]
        grown &= free
        if np.array_equal(grown, reach):
            break
        reach = grown
    out = mask.copy()
    out[y0:y1, x0:x1] = ~reach[1:-1, 1:-1]
    return out


def _visible(sils: list[np.ndarray]) -> list[np.ndarray]:
    """Visible masks when silhouettes are pasted in order (later on top)."""
    covered = np.zeros_like(sils[0]) if sils else None
    out = []
    for sil in reversed(sils):
        out.append(sil & ~covered)
        covered = covered | sil
    return out[::-1]


def _keep(sil: np.ndarray, vis: np.ndarray, cfg: CanvasConfig) -> bool:
    area = int(vis.sum())
    if area < max(cfg.min_pixels, cfg.min_visible * int(sil.sum())):
        return False
    ys, xs = np.nonzero(vis)
    if ys.max() - ys.min() < 1 or xs.max() - xs.min() < 1:  # box of 1 px height or width
        return False
    return bool(np.array_equal(fill_holes(vis), vis))


def _compose(images, labels, rng, cfg):
    s = cfg.size
    n_items = int(rng.integers(cfg.min_items, cfg.max_items + 1))
    lo, hi = max(8, round(cfg.min_scale * s)), round(cfg.max_scale * s)
    sils, layers, srcs = [], [], []
    for _ in range(n_items):
        idx = int(rng.integers(len(images)))
        side = int(rng.integers(lo, hi + 1))
        colour = rng.integers(96, 256, size=3)
        y0, x0 = (int(v) for v in rng.integers(0, s - side + 1, size=2))
        grey = np.asarray(Image.fromarray(images[idx]).resize((side, side), Image.BILINEAR))
        item = fill_holes(grey > cfg.threshold)
        sil = np.zeros((s, s), bool)
        sil[y0 : y0 + side, x0 : x0 + side] = item
        tinted = np.round(grey[..., None] * (colour / 255.0)).astype(np.uint8)
        tinted[item] = np.maximum(tinted[item], 1)  # filled holes stay distinguishable from background
        layer = np.zeros((s, s, 3), np.uint8)
        layer[y0 : y0 + side, x0 : x0 + side] = tinted
        sils.append(sil)
        layers.append(layer)
        srcs.append(idx)
    keep = [k for k in range(n_items) if sils[k].any()]
    while keep:
        vis = _visible([sils[k] for k in keep])
        ok = [_keep(sils[k], v, cfg) for k, v in zip(keep, vis)]
        if all(ok):
            break
        keep = [k for k, good in zip(keep, ok) if good]
    if not keep:
        return None
    image = np.zeros((s, s, 3), np.uint8)
    for k, v in zip(keep, vis):
        image[v] = layers[k][v]
    return Canvas(
        image=image,
        masks=np.stack(vis),
        classes=np.asarray([labels[srcs[k]] for k in keep], np.int64),
        sources=np.asarray([srcs[k] for k in keep], np.int64),
    )


def make_canvas(images: np.ndarray, labels: np.ndarray, rng: np.random.Generator, cfg: CanvasConfig) -> Canvas:
    """Draw one scene from ``images`` ``(N, 28, 28)`` uint8 and ``labels`` ``(N,)``; see module doc.

    A draw in which every item is dropped (only possible when all of them are nearly black) is
    redrawn from the same generator, so a canvas always holds at least one item.
    """
    for _ in range(100):
        canvas = _compose(images, labels, rng, cfg)
        if canvas is not None:
            return canvas
    raise ValueError(
        f"no Fashion-MNIST item brighter than threshold {cfg.threshold} kept in 100 draws; "
        "are the source images blank?"
    )


def iter_canvases(images: np.ndarray, labels: np.ndarray, n: int, seed: int, split: str, cfg: CanvasConfig):
    """Yield canvases ``0..n-1`` of ``split`` (``"train"`` or ``"val"``); see ``canvas_rng``."""
    cfg.validate()
    for i in range(n):
        yield make_canvas(images, labels, canvas_rng(seed, split, i), cfg)


def scene_dataset_spec(kind: str, source, train_images: int, val_images: int, seed: int,
                       canvas: CanvasConfig, **extra) -> dict:
    """Validated settings of a scene dataset (COCO or ADE20K), as written to ``dataset.json``."""
    from pathlib import Path

    from .idx import CLASSES

    canvas.validate()
    for name, n in (("train_images", train_images), ("val_images", val_images)):
        if n < 1:
            raise ValueError(f"{name} must be >= 1, got {n}")
    return {"kind": kind, "format_version": 1, "train_images": train_images, "val_images": val_images,
            "seed": seed, "canvas": canvas.to_dict(), "source": str(Path(source).resolve()),
            "classes": list(CLASSES), **extra}
