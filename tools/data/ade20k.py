"""Fashion-MNIST scenes as an ADE20K-format semantic segmentation dataset, and a checker.

Layout (that of ``ADEChallengeData2016``, read by mmseg's ``ADE20KDataset`` as is)::

    OUT/images/training/ADE_train_00000001.jpg ...       RGB, JPEG quality 95
    OUT/images/validation/ADE_val_00000001.jpg ...
    OUT/annotations/training/ADE_train_00000001.png ...  single-channel uint8 labels
    OUT/annotations/validation/ADE_val_00000001.png ...
    OUT/dataset.json

Scenes come from :mod:`droppos.tools.data.canvas`; with the same seed they are the scenes of
the COCO set (train from the 60k train split, validation from the t10k split).

Label values, as in ADE20K: 0 is background ("other"), ``1..10`` is the Fashion-MNIST label
+ 1 on the item's visible pixels (classes in :data:`droppos.tools.data.idx.CLASSES`).

reduce_zero_label: mmseg's ``ADE20KDataset`` sets ``reduce_zero_label=True``, which maps label
0 to 255 (the ignore index) and every other label ``k`` to ``k - 1``. Then the model has 10
classes (``num_classes=10``, class ``c`` = Fashion-MNIST label ``c``), background pixels are
neither trained on nor counted in mIoU, exactly as ADE20K's "other" pixels. To learn and score
the background as well, load the labels with ``reduce_zero_label=False`` and
``num_classes=11`` (class 0 = background, class ``c + 1`` = label ``c``).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .canvas import CanvasConfig, iter_canvases, scene_dataset_spec
from .idx import CLASSES, DEFAULT_SOURCE, DataError, load_fashion_mnist
from .imagefolder import png_bytes
from .output import progress, read_manifest, staged_output

#: (our split, ADE20K folder, file prefix, Fashion-MNIST split)
SPLITS = (("train", "training", "ADE_train", "train"), ("val", "validation", "ADE_val", "t10k"))
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
BACKGROUND = 0


def jpeg_bytes(image: np.ndarray, quality: int = 95) -> bytes:
    """``image`` ``(H, W, 3)`` uint8 as JPEG (deterministic for a given Pillow build)."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def build_ade20k(
    out: str | os.PathLike,
    source: str | os.PathLike = DEFAULT_SOURCE,
    train_images: int = 300,
    val_images: int = 60,
    seed: int = 0,
    canvas: CanvasConfig = CanvasConfig(),
    overwrite: bool = False,
    show_progress: bool = True,
) -> dict:
    """Write the ADE20K-format dataset under ``out``; returns the content of ``dataset.json``."""
    spec = scene_dataset_spec(
        "ade20k", source, train_images, val_images, seed, canvas,
        labels="0 = background (ignored with reduce_zero_label=True), 1..10 = class index + 1",
    )
    with staged_output(out, spec, overwrite) as stage:
        if stage is None:
            print(f"{out}: ade20k dataset already built with these settings, nothing to do")
        else:
            for split, folder, prefix, src_split in SPLITS:
                images, labels = load_fashion_mnist(source, src_split)
                n = train_images if split == "train" else val_images
                img_dir, ann_dir = stage.path / "images" / folder, stage.path / "annotations" / folder
                img_dir.mkdir(parents=True)
                ann_dir.mkdir(parents=True)
                pixels = np.zeros(len(CLASSES) + 1, np.int64)
                scenes = iter_canvases(images, labels, n, seed, split, canvas)
                for i, scene in enumerate(progress(scenes, n, f"ade20k {split}", show_progress)):
                    stem = f"{prefix}_{i + 1:08d}"
                    label = scene.label_map()
                    (img_dir / f"{stem}.jpg").write_bytes(jpeg_bytes(scene.image))
                    (ann_dir / f"{stem}.png").write_bytes(png_bytes(Image.fromarray(label, mode="L")))
                    pixels += np.bincount(label.ravel(), minlength=len(pixels))
                stage.counts[split] = {"images": n, "pixels_per_label": pixels.tolist()}
    return read_manifest(out)


@dataclass
class Ade20kReport:
    """What :func:`validate_ade20k` found; each entry of ``errors`` names its file."""

    root: str
    images: dict = field(default_factory=dict)  # split folder -> number of images
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        counts = ", ".join(f"{k}: {v}" for k, v in self.images.items())
        return f"{self.root}: images {counts}; {len(self.errors)} errors, {len(self.warnings)} warnings"

    def raise_if_errors(self) -> None:
        """Raise :class:`DataError` with the first error (and how many more) if there are any."""
        if self.errors:
            more = f" (+{len(self.errors) - 1} more errors)" if len(self.errors) > 1 else ""
            raise DataError(self.errors[0] + more)


def validate_ade20k(
    root: str | os.PathLike,
    num_classes: int = len(CLASSES),
    splits: tuple[str, ...] = ("training", "validation"),
    check_values: bool = True,
    raise_on_error: bool = True,
) -> Ade20kReport:
    """Check an ADE20K-layout folder before training on it.

    Errors: a missing ``images/<split>`` or ``annotations/<split>`` folder, an empty split, an
    image without ``annotations/<split>/<stem>.png``, an unreadable file, a label that is not
    single-channel, a label whose size differs from its image's, label values outside
    ``0..num_classes`` (with ``check_values``; ``num_classes`` counts the classes without the
    background, 150 for ADE20K). A label without an image is a warning (mmseg never reads it).
    With ``raise_on_error`` (default) the first error raises :class:`DataError`.
    """
    root = Path(root)
    rep = Ade20kReport(root=str(root))
    if not root.is_dir():
        rep.errors.append(f"{root}: dataset folder not found; build it with `droppos data ade20k --out {root}`")
    else:
        for split in splits:
            _check_split(root, split, num_classes, check_values, rep)
    if raise_on_error:
        rep.raise_if_errors()
    return rep


def _check_split(root: Path, split: str, num_classes: int, check_values: bool, rep: Ade20kReport) -> None:
    img_dir, ann_dir = root / "images" / split, root / "annotations" / split
    for d in (img_dir, ann_dir):
        if not d.is_dir():
            rep.errors.append(f"{d}: split folder missing (expected images/{split} and annotations/{split})")
    if not (img_dir.is_dir() and ann_dir.is_dir()):
        return
    images = sorted(p for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    rep.images[split] = len(images)
    if not images:
        rep.errors.append(f"{img_dir}: no images ({'/'.join(IMAGE_SUFFIXES)}) in this split folder")
    stems = set()
    for img_path in images:
        stems.add(img_path.stem)
        lbl_path = ann_dir / f"{img_path.stem}.png"
        if not lbl_path.is_file():
            rep.errors.append(f"{img_path}: no label {lbl_path}")
            continue
        try:
            with Image.open(img_path) as im:
                img_size = im.size
            with Image.open(lbl_path) as lb:
                lbl_size, lbl_mode = lb.size, lb.mode
                values = np.asarray(lb) if check_values and lbl_mode in ("L", "P") else None
        except (OSError, SyntaxError) as e:
            rep.errors.append(f"{img_path} / {lbl_path.name}: unreadable ({e})")
            continue
        if lbl_mode not in ("L", "P"):
            rep.errors.append(f"{lbl_path}: label must be a single-channel 8-bit PNG, got mode {lbl_mode}")
            continue
        if lbl_size != img_size:
            rep.errors.append(f"{lbl_path}: label size {lbl_size} differs from image {img_path.name} size {img_size}")
        if values is not None and values.size and int(values.max()) > num_classes:
            bad = np.unique(values[values > num_classes])
            rep.errors.append(
                f"{lbl_path}: label values {bad[:5].tolist()} outside 0..{num_classes} "
                f"(0 = background, 1..{num_classes} = classes)"
            )
    for lbl_path in sorted(ann_dir.glob("*.png")):
        if lbl_path.stem not in stems:
            rep.warnings.append(f"{lbl_path}: label without an image in {img_dir}")
