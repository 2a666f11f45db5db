"""Check the dataset folders a segmentation config reads, before any training starts.

Datasets in the ADE20K layout (``ROOT/images/<split>``, ``ROOT/annotations/<split>``: the
standard ``ADEChallengeData2016`` and the embedded Fashion-MNIST set) are checked with
:func:`droppos.tools.data.ade20k.validate_ade20k`: missing split folders, images without a label,
label/image size mismatches and label values outside the class range are errors naming the file.

Label range: with ``reduce_zero_label=True`` (ADE20K's convention; mmseg's ``ADE20KDataset``
default) the label PNGs hold ``0`` (background, ignored) and ``1..num_classes``; without it they
hold ``0..num_classes-1`` and 255 (ignored), which this check does not range-test.
"""

from __future__ import annotations

from pathlib import Path

LOADERS = {"train": "train_dataloader", "val": "val_dataloader"}
_REDUCE_ZERO_DEFAULT = {"ADE20KDataset"}


def _split_of(prefix: dict) -> str | None:
    img, seg = str(prefix.get("img_path", "")).strip("/"), str(prefix.get("seg_map_path", "")).strip("/")
    if img.startswith("images/") and seg == "annotations/" + img[len("images/"):]:
        return img[len("images/"):]
    return None


def _check_canvas(root, crop) -> None:
    """The embedded scenes (``dataset.json``: ``canvas``) are at least the config's crop: the ViT's
    absolute position table is built for that size, so smaller scenes would fail after training."""
    import json

    from droppos.tools.data.idx import DataError

    try:
        canvas = json.loads((Path(root) / "dataset.json").read_text()).get("canvas")
    except (OSError, ValueError, AttributeError):
        return  # not a built data set (e.g. ADE20K itself): nothing recorded to compare
    if isinstance(canvas, dict):
        canvas = canvas.get("size")
    if not isinstance(canvas, int) or not crop:
        return
    h, w = (crop, crop) if isinstance(crop, int) else tuple(crop)
    if canvas < min(h, w):
        raise DataError(f"{root}: its scenes are {canvas} px, the config trains and tests {h}x{w} px crops (crop_size, "
                        f"model.backbone.img_size); rebuild with `droppos data ade20k --canvas {max(h, w)}` or use a "
                        f"config for {canvas} px")


def check_data(cfg, stages: tuple[str, ...] = ("train", "val")) -> list[str]:
    """Validate the datasets of ``stages``; returns one summary line each (raises ``DataError``)."""
    from droppos.tools.data.ade20k import validate_ade20k

    num_classes = int(cfg.model.decode_head.num_classes)
    lines = []
    for stage in stages:
        loader = cfg.get(LOADERS[stage])
        if loader is None:
            continue
        ds = loader.dataset
        split = _split_of(ds.get("data_prefix", {}))
        if split is None:
            lines.append(f"data check skipped for {stage}: layout is not images/<split> + annotations/<split>")
            continue
        _check_canvas(ds.data_root, cfg.get("crop_size"))
        reduce_zero = ds.get("reduce_zero_label", ds.get("type") in _REDUCE_ZERO_DEFAULT)
        rep = validate_ade20k(ds.data_root, num_classes=num_classes, splits=(split,), check_values=reduce_zero)
        lines.append(f"data check {stage}: {rep.summary()}")
        lines += [f"  warning: {w}" for w in rep.warnings[:5]]
    return lines
