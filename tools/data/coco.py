"""Fashion-MNIST scenes as a COCO-format instance dataset, and a checker for COCO JSON files.

Layout (the names of COCO 2017, so a detectron2 user points at it like at COCO)::

    OUT/train2017/000000000001.png ...
    OUT/val2017/000000000001.png ...
    OUT/annotations/instances_train2017.json
    OUT/annotations/instances_val2017.json
    OUT/dataset.json

Scenes come from :mod:`droppos.tools.data.canvas` (train canvases from the 60k train split,
val canvases from the t10k split). Categories are ids 1..10 = Fashion-MNIST label + 1, named as
in :data:`droppos.tools.data.idx.CLASSES`. Per item: ``bbox`` ``[x, y, w, h]`` of its visible
pixels, ``segmentation`` as pixel-edge polygons of its visible mask (exact: pycocotools'
``annToMask`` gives the mask back pixel for pixel; polygons, not RLE, because detectron2's
crop augmentations need polygons), ``area`` = visible pixel count, ``iscrowd`` 0.

In detectron2::

    from detectron2.data.datasets import register_coco_instances
    register_coco_instances("fmnist_train", {}, "OUT/annotations/instances_train2017.json", "OUT/train2017")
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .canvas import CanvasConfig, iter_canvases, scene_dataset_spec
from .idx import CLASSES, DEFAULT_SOURCE, DataError, load_fashion_mnist
from .imagefolder import png_bytes
from .output import progress, read_manifest, staged_output
from .polygons import mask_to_polygons

#: (our split, COCO folder/json suffix, Fashion-MNIST split)
SPLITS = (("train", "train2017", "train"), ("val", "val2017", "t10k"))


def categories() -> list[dict]:
    """COCO ``categories``: id ``label + 1``, the folder-safe class name, supercategory."""
    return [{"id": i + 1, "name": name, "supercategory": "fashion"} for i, name in enumerate(CLASSES)]


def canvas_annotations(masks: np.ndarray, classes: np.ndarray, image_id: int, first_id: int) -> list[dict]:
    """COCO annotations of one canvas: ``masks`` ``(K, H, W)`` bool, ``classes`` ``(K,)`` in 0..9."""
    anns = []
    for k, (mask, cls) in enumerate(zip(masks, classes)):
        ys, xs = np.nonzero(mask)
        x0, y0 = int(xs.min()), int(ys.min())
        anns.append(
            {
                "id": first_id + k,
                "image_id": image_id,
                "category_id": int(cls) + 1,
                "bbox": [float(x0), float(y0), float(xs.max() + 1 - x0), float(ys.max() + 1 - y0)],
                "area": float(len(ys)),
                "segmentation": mask_to_polygons(mask),
                "iscrowd": 0,
            }
        )
    return anns


def build_coco(
    out: str | os.PathLike,
    source: str | os.PathLike = DEFAULT_SOURCE,
    train_images: int = 300,
    val_images: int = 60,
    seed: int = 0,
    canvas: CanvasConfig = CanvasConfig(),
    overwrite: bool = False,
    show_progress: bool = True,
) -> dict:
    """Write the COCO-format dataset under ``out``; returns the content of ``dataset.json``."""
    spec = scene_dataset_spec("coco", source, train_images, val_images, seed, canvas)
    with staged_output(out, spec, overwrite) as stage:
        if stage is None:
            print(f"{out}: coco dataset already built with these settings, nothing to do")
        else:
            (stage.path / "annotations").mkdir()
            for split, folder, src_split in SPLITS:
                images, labels = load_fashion_mnist(source, src_split)
                n = train_images if split == "train" else val_images
                (stage.path / folder).mkdir()
                coco = {
                    "info": {
                        "description": f"Fashion-MNIST scenes ({split}), droppos data coco",
                        "version": "1",
                        "year": 2017,
                    },
                    "licenses": [{"id": 1, "name": "MIT (Fashion-MNIST)", "url": "https://opensource.org/licenses/MIT"}],
                    "images": [],
                    "annotations": [],
                    "categories": categories(),
                }
                scenes = iter_canvases(images, labels, n, seed, split, canvas)
                for i, scene in enumerate(progress(scenes, n, f"coco {split}", show_progress)):
                    image_id = i + 1
                    name = f"{image_id:012d}.png"
                    (stage.path / folder / name).write_bytes(png_bytes(Image.fromarray(scene.image)))
                    coco["images"].append(
                        {"id": image_id, "file_name": name, "height": canvas.size, "width": canvas.size, "license": 1}
                    )
                    first = len(coco["annotations"]) + 1
                    coco["annotations"] += canvas_annotations(scene.masks, scene.classes, image_id, first)
                path = stage.path / "annotations" / f"instances_{folder}.json"
                path.write_text(json.dumps(coco, separators=(",", ":")))
                stage.counts[split] = {"images": n, "annotations": len(coco["annotations"])}
    return read_manifest(out)


@dataclass
class CocoReport:
    """What :func:`validate_coco` found.

    ``errors`` make the dataset unusable (each names the file). The other counts are documented
    skips, i.e. what detectron2 does with them: images without annotations are dropped from
    training (``DATALOADER.FILTER_EMPTY_ANNOTATIONS``) but kept for evaluation; degenerate boxes
    (width or height <= 1 px) and annotations without a usable polygon (< 3 points) are dropped;
    crowd regions (``iscrowd`` 1) are not trained on and are ignore regions for COCOeval.
    """

    json_path: str
    images: int = 0
    annotations: int = 0
    images_without_annotations: int = 0
    degenerate_boxes: int = 0
    invalid_segmentations: int = 0
    crowd: int = 0
    without_masks: int = 0  # usable annotations with no ``segmentation`` at all (a box-only set)
    missing_images: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def usable_annotations(self) -> int:
        return self.annotations - self.degenerate_boxes - self.invalid_segmentations - self.crowd

    def summary(self) -> str:
        """One line for the log."""
        return (
            f"{self.json_path}: {self.images} images, {self.annotations} annotations "
            f"({self.usable_annotations} usable); skipped: {self.images_without_annotations} images without "
            f"annotations, {self.degenerate_boxes} degenerate boxes, {self.invalid_segmentations} invalid "
            f"polygons, {self.crowd} crowd regions; {len(self.errors)} errors"
        )

    def raise_if_errors(self) -> None:
        """Raise :class:`DataError` with the first error (and how many more) if there are any."""
        if self.errors:
            more = f" (+{len(self.errors) - 1} more errors)" if len(self.errors) > 1 else ""
            raise DataError(self.errors[0] + more)


def _load_json(json_path: Path) -> dict:
    try:
        data = json.loads(json_path.read_text())
    except FileNotFoundError:
        raise DataError(f"{json_path}: annotation file not found; build it with `droppos data coco` or fix the path") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{json_path}: not a readable JSON file ({e})") from None
    if not isinstance(data, dict):
        raise DataError(f"{json_path}: not a COCO annotation file (top level is not an object)")
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(data.get(k), list)]
    if missing:
        raise DataError(f"{json_path}: not a COCO instances file (missing list(s) {', '.join(missing)})")
    return data


def validate_coco(json_path: str | os.PathLike, image_dir: str | os.PathLike, raise_on_error: bool = True) -> CocoReport:
    """Check a COCO instances JSON against its image folder; see :class:`CocoReport`.

    Errors: unreadable JSON, no annotations at all, duplicate image ids, image files missing
    from ``image_dir``, annotations pointing at unknown images or categories, boxes that are not
    ``[x, y, w, h]``. With ``raise_on_error`` (default) the first error raises :class:`DataError`.
    """
    json_path, image_dir = Path(json_path), Path(image_dir)
    data = _load_json(json_path)
    rep = CocoReport(json_path=str(json_path), images=len(data["images"]), annotations=len(data["annotations"]))
    if not image_dir.is_dir():
        rep.errors.append(f"{image_dir}: image folder not found (images of {json_path.name})")
    image_ids, sizes = {}, {}
    for img in data["images"]:
        iid, name = img.get("id"), img.get("file_name")
        if iid in image_ids:
            rep.errors.append(f"{json_path}: duplicate image id {iid}")
        image_ids[iid] = name
        sizes[iid] = (img.get("width"), img.get("height"))
        if image_dir.is_dir() and not (name and (image_dir / name).is_file()):
            rep.missing_images.append(str(name))
        elif image_dir.is_dir():
            problem = _size_problem(image_dir / name, sizes[iid])
            if problem:
                rep.errors.append(f"{image_dir / name}: {problem} ({json_path.name}, image id {iid}); fix the file or "
                                  "its width/height in the JSON")
    if rep.missing_images:
        rep.errors.append(
            f"{image_dir / rep.missing_images[0]}: image listed in {json_path.name} is missing "
            f"({len(rep.missing_images)} missing in all); restore the files or point at the right folder"
        )
    if not data["annotations"]:
        rep.errors.append(f"{json_path}: no annotations at all; nothing to train or evaluate on")
    cat_ids = {c.get("id") for c in data["categories"]}
    annotated = set()
    for ann in data["annotations"]:
        aid = ann.get("id")
        if ann.get("image_id") not in image_ids:
            rep.errors.append(f"{json_path}: annotation {aid} refers to unknown image id {ann.get('image_id')}")
            continue
        annotated.add(ann["image_id"])
        if ann.get("category_id") not in cat_ids:
            rep.errors.append(f"{json_path}: annotation {aid} has unknown category id {ann.get('category_id')}")
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
            rep.errors.append(f"{json_path}: annotation {aid} has no [x, y, w, h] bbox ({bbox!r})")
            continue
        if not all(math.isfinite(v) for v in bbox):
            rep.errors.append(f"{json_path}: annotation {aid} has a non-finite bbox {bbox}; fix or remove it")
            continue
        if ann.get("iscrowd", 0):
            rep.crowd += 1
        elif bbox[2] <= 1 or bbox[3] <= 1 or _outside(bbox, sizes[ann["image_id"]]):
            rep.degenerate_boxes += 1
        else:
            segm = ann.get("segmentation")
            if segm is None:
                rep.without_masks += 1
            elif isinstance(segm, list) and not any(isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 for p in segm):
                rep.invalid_segmentations += 1
    rep.images_without_annotations = sum(1 for iid in image_ids if iid not in annotated)
    if raise_on_error:
        rep.raise_if_errors()
    return rep


def _outside(bbox: list, size: tuple) -> bool:
    """A box with no overlap with its image (whose size the JSON gives)."""
    w, h = size
    if not (isinstance(w, (int, float)) and isinstance(h, (int, float))):
        return False
    x, y, bw, bh = bbox
    return x >= w or y >= h or x + bw <= 0 or y + bh <= 0


def _size_problem(path: Path, size: tuple) -> str | None:
    """Why an image does not match the JSON's width/height (its header only is read), or None."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            actual = im.size
    except (OSError, UnidentifiedImageError) as e:
        return f"unreadable image ({type(e).__name__})"
    if all(isinstance(v, int) for v in size) and tuple(size) != tuple(actual):
        return f"the image is {actual[0]}x{actual[1]}, the JSON says {size[0]}x{size[1]}"
    return None


def coco_paths(root: str | os.PathLike, split: str) -> tuple[Path, Path]:
    """``(json, image folder)`` of ``split`` (``"train"`` or ``"val"``) of a COCO-2017-style root."""
    folder = {"train": "train2017", "val": "val2017"}[split]
    root = Path(root)
    return root / "annotations" / f"instances_{folder}.json", root / folder
