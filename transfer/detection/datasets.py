"""The COCO-layout datasets of the detection configs: where they are, checks, registration.

A config names its data with a top-level ``datasets`` entry::

    datasets = dict(prefix="coco_2017", root="")      # COCO 2017
    datasets = dict(prefix="fmnist_coco", root="data/coco")  # the embedded default

and its loaders use ``<prefix>_train`` / ``<prefix>_val``. Both use COCO 2017's layout::

    ROOT/train2017/  ROOT/val2017/  ROOT/annotations/instances_{train,val}2017.json

``root`` "" means detectron2's convention, ``$DETECTRON2_DATASETS/coco`` (``datasets/coco``
when the variable is unset); ``droppos detect --data DIR`` overrides it. Registration replaces
any earlier entry of the same name (detectron2 registers ``coco_2017_*`` itself at import,
relative to ``$DETECTRON2_DATASETS``), so the folder checked is the folder trained on.

Before training, :func:`check_datasets` runs ``droppos.tools.data.coco.validate_coco`` on both
splits: missing images, unknown image or category ids, malformed boxes and a split without any
annotation are errors; images without annotations (dropped from training, kept for evaluation),
degenerate boxes (<= 1 px, dropped), polygons with < 3 points (dropped) and crowd regions (not
trained on; ignore regions in COCOeval) are counted and printed, as detectron2 skips them. The
number of categories must equal ``model.roi_heads.num_classes``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from droppos.errors import UserError

SPLITS = ("train", "val")

#: config prefix -> dataset name written to metrics.json
DATASET_IDS = {"coco_2017": "coco", "fmnist_coco": "fmnist"}


class DatasetError(UserError):
    """The dataset of a detection run is missing or unusable (the message names the file)."""


@dataclass(frozen=True)
class SplitFiles:
    name: str  # detectron2 dataset name, e.g. "coco_2017_train"
    json_file: Path
    image_root: Path


def resolve_root(root: str | os.PathLike | None, env: dict | None = None) -> Path:
    """The dataset folder: ``root`` if given, else ``$DETECTRON2_DATASETS/coco``."""
    if root:
        return Path(root).expanduser()
    env = os.environ if env is None else env
    return Path(env.get("DETECTRON2_DATASETS", "datasets")).expanduser() / "coco"


def split_files(prefix: str, root: str | os.PathLike) -> list[SplitFiles]:
    """``<prefix>_train`` and ``<prefix>_val`` with their JSON file and image folder under ``root``."""
    root = Path(root)
    return [SplitFiles(f"{prefix}_{s}", root / "annotations" / f"instances_{s}2017.json", root / f"{s}2017")
            for s in SPLITS]


#: the overrides that turn a Mask R-CNN config into a box-only one: StandardROIHeads without a mask branch, and a
#: mapper that neither reads masks nor takes the boxes from them (ViTDet's ``recompute_boxes``)
BOXES_ONLY = ("model.roi_heads.mask_in_features=null model.roi_heads.mask_pooler=null model.roi_heads.mask_head=null "
              "dataloader.train.mapper.use_instance_mask=False dataloader.train.mapper.recompute_boxes=False")


def check_datasets(prefix: str, root: str | os.PathLike, num_classes: int | None = None,
                   masks: bool = False) -> list[str]:
    """Validate both splits; returns one summary line per split, raises :class:`DatasetError`.

    ``masks``: the config trains a mask head, so every usable annotation needs its instance mask (a polygon
    list or RLE) in both splits: detectron2 would otherwise stop in the mask loss of the first batch without
    one (``Cannot get field 'gt_masks'``) and COCOeval's ``segm`` task on ground truth without masks."""
    from droppos.tools.data.coco import validate_coco
    from droppos.tools.data.idx import DataError

    root = Path(root)
    if not root.is_dir():
        hint = ("build the embedded default with `droppos data coco --out DIR`" if prefix != "coco_2017"
                else "download COCO 2017 there or set $DETECTRON2_DATASETS")
        raise DatasetError(f"{root}: dataset folder not found; {hint}, or pass --data DIR")
    lines = []
    for split in split_files(prefix, root):
        try:
            report = validate_coco(split.json_file, split.image_root)
        except DataError as e:
            raise DatasetError(str(e)) from None
        if report.usable_annotations == 0:
            raise DatasetError(f"{split.json_file}: no usable annotation (all degenerate, crowd or without "
                               "polygon); nothing to train or evaluate on")
        if masks and report.without_masks:
            raise DatasetError(f"{split.json_file}: {report.without_masks} of {report.usable_annotations} usable "
                               "annotations have no 'segmentation' (instance mask), which the config's mask head "
                               "(Mask R-CNN) trains on; add polygon or RLE masks, or train boxes only with the "
                               f"overrides {BOXES_ONLY}")
        lines.append(report.summary())
    if num_classes is not None:
        json_file = split_files(prefix, root)[0].json_file
        n = len(json.loads(json_file.read_text())["categories"])
        if n != int(num_classes):
            raise DatasetError(f"{json_file}: {n} categories but the config has model.roi_heads.num_classes="
                               f"{num_classes}; override it with model.roi_heads.num_classes={n}")
    return lines


def register_datasets(prefix: str, root: str | os.PathLike) -> list[str]:
    """Register ``<prefix>_{train,val}`` in detectron2's catalogs (replacing earlier entries)."""
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.datasets import register_coco_instances

    names = []
    for split in split_files(prefix, root):
        if split.name in DatasetCatalog.list():
            DatasetCatalog.remove(split.name)
            MetadataCatalog.remove(split.name)
        register_coco_instances(split.name, {}, str(split.json_file), str(split.image_root))
        names.append(split.name)
    return names


def dataset_id(prefix: str) -> str:
    """Short dataset name for metrics.json ("coco", "fmnist", or the prefix)."""
    return DATASET_IDS.get(prefix, prefix)
