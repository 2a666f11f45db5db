"""``droppos data``: build the embedded default datasets from the Fashion-MNIST IDX files.

Kinds::

    imagefolder   OUT/{train,val}/<class>/<index>.png           pretraining, classification
    coco          OUT/{train2017,val2017}, OUT/annotations/       detection (detectron2)
    ade20k        OUT/{images,annotations}/{training,validation}  segmentation (mmseg)
    all           the three above as OUT/fmnist, OUT/coco, OUT/ade20k

Examples::

    droppos data all --out data                      # defaults: a few minutes of CPU training each
    droppos data imagefolder --out data/fmnist --size 64 --train-per-class 0   # all 60k + 10k
    droppos data coco --out data/coco --canvas 256 --train-images 2000 --source ~/fashion-mnist

A folder already built with the same settings is left as is; other settings need --overwrite.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .idx import DEFAULT_SOURCE, DataError

KINDS = ("imagefolder", "coco", "ade20k", "all")
SUBDIRS = {"imagefolder": "fmnist", "coco": "coco", "ade20k": "ade20k"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=KINDS, help="which dataset to build (all: the three under OUT/{fmnist,coco,ade20k})")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="folder of the Fashion-MNIST IDX files (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice; same seed, same files (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace a dataset folder built earlier with other settings")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    g = parser.add_argument_group("imagefolder")
    g.add_argument("--size", type=int, default=64, help="image side in px (default: %(default)s)")
    g.add_argument("--mode", choices=("resize", "pad"), default="resize", help="bilinear resize, or pad with black to --size (default: %(default)s)")
    g.add_argument("--train-per-class", type=int, default=500, help="train images per class, 0 = all 6000 (default: %(default)s)")
    g.add_argument("--val-per-class", type=int, default=100, help="val images per class, 0 = all 1000 (default: %(default)s)")
    g = parser.add_argument_group("coco and ade20k")
    g.add_argument("--canvas", type=int, default=128, help="canvas side in px (default: %(default)s)")
    g.add_argument("--train-images", type=int, default=300, help="train canvases (default: %(default)s)")
    g.add_argument("--val-images", type=int, default=60, help="val canvases (default: %(default)s)")
    g.add_argument("--min-items", type=int, default=2, help="items pasted per canvas, at least (default: %(default)s)")
    g.add_argument("--max-items", type=int, default=5, help="items pasted per canvas, at most; heavily occluded ones are dropped (default: %(default)s)")


def _per_class(n: int) -> int | None:
    if n < 0:
        raise ValueError(f"per-class counts must be >= 0 (0 = all), got {n}")
    return n or None


def _build(kind: str, out: Path, args: argparse.Namespace) -> dict:
    from .canvas import CanvasConfig

    common = dict(source=args.source, seed=args.seed, overwrite=args.overwrite, show_progress=not args.no_progress)
    if kind == "imagefolder":
        from .imagefolder import build_imagefolder

        return build_imagefolder(
            out,
            size=args.size,
            mode=args.mode,
            train_per_class=_per_class(args.train_per_class),
            val_per_class=_per_class(args.val_per_class),
            **common,
        )
    canvas = CanvasConfig(size=args.canvas, min_items=args.min_items, max_items=args.max_items)
    sizes = dict(train_images=args.train_images, val_images=args.val_images, canvas=canvas)
    if kind == "coco":
        from .coco import build_coco, coco_paths, validate_coco

        manifest = build_coco(out, **sizes, **common)
        for split in ("train", "val"):
            print(validate_coco(*coco_paths(out, split)).summary())
        return manifest
    from .ade20k import build_ade20k, validate_ade20k

    manifest = build_ade20k(out, **sizes, **common)
    print(validate_ade20k(out, num_classes=len(manifest["classes"])).summary())
    return manifest


def _describe(counts: dict) -> str:
    parts = []
    for split, c in counts.items():
        if isinstance(c, dict):
            c = ", ".join(f"{v} {k}" for k, v in c.items() if isinstance(v, int))
        parts.append(f"{split}: {c}")
    return "; ".join(parts)


def run(args: argparse.Namespace) -> int:
    kinds = ("imagefolder", "coco", "ade20k") if args.kind == "all" else (args.kind,)
    try:
        for kind in kinds:
            out = args.out / SUBDIRS[kind] if args.kind == "all" else args.out
            start = time.perf_counter()
            manifest = _build(kind, out, args)
            print(f"{kind}: {out} ({_describe(manifest['counts'])}) in {time.perf_counter() - start:.1f} s")
    except (DataError, ValueError) as e:
        print(f"droppos data: error: {e}", file=sys.stderr)
        return 2
    return 0
