"""ImageFolder data for classification: checks, timm transforms, samplers and loaders.

Layout (ImageNet's)::

    ROOT/train/<class>/<image>      ROOT/val/<class>/<image>

Both splits must hold the same class folders, each with at least one image; anything else is a
one-line error naming the folder. The embedded default (``data/fmnist``) is built from the
Fashion-MNIST IDX files on first use (``droppos data imagefolder``).

Transforms (timm ``create_transform``):

* ``finetune``: random resized crop (area ``min_scale``..1), flip, RandAugment (``aa``), random erasing (``reprob``),
  bicubic, ImageNet normalisation (MAE/DropPos fine-tuning);
* ``linear``: random resized crop + flip only (MAE linear probing);
* ``eval``: resize to ``img_size / crop_pct``, centre crop, normalise.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Sampler

from droppos.utils.augment import allow_zero_bit_posterize

from .config import CommonConfig
from .errors import InputError

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
DEFAULT_DATA = CommonConfig.data


def resolve_data(root: str | Path) -> Path:
    """``root`` as a Path; builds the embedded default there when it is the default and absent."""
    root = Path(root)
    if not (root / "train").is_dir() and str(root) == DEFAULT_DATA:
        from droppos.tools.data.imagefolder import build_imagefolder

        print(f"{root}: building the embedded Fashion-MNIST ImageFolder (droppos data imagefolder)")
        build_imagefolder(root, train_per_class=500, val_per_class=100)
    return root


def scan_split(root: Path, split: str) -> list[str]:
    """Class names of ``root/split``; errors for a missing or empty split or an empty class."""
    d = root / split
    if not d.is_dir():
        raise InputError(f"{d}: missing {split}/ folder; expected an ImageFolder tree ROOT/{{train,val}}/<class>/<image>")
    classes = sorted(c.name for c in d.iterdir() if c.is_dir())
    if not classes:
        raise InputError(f"{d}: no class folders; the {split} split is empty")
    empty = [c for c in classes if not any(p.suffix.lower() in IMG_EXTENSIONS for p in (d / c).rglob("*"))]
    if len(empty) == len(classes):
        raise InputError(f"{d}: no images in any class folder; the {split} split is empty")
    if empty:
        raise InputError(f"{d}: class folder(s) without images: {', '.join(empty[:5])}; remove them or add images")
    return classes


def check_imagefolder(root: Path) -> list[str]:
    """The classes shared by ``train/`` and ``val/`` (they must be the same)."""
    train, val = scan_split(root, "train"), scan_split(root, "val")
    if train != val:
        only_t, only_v = sorted(set(train) - set(val)), sorted(set(val) - set(train))
        raise InputError(f"{root}: train/ and val/ have different classes (only in train: {only_t[:5]}, "
                         f"only in val: {only_v[:5]}); the splits must share their class folders")
    return train


def dataset_name(root: Path, override: str = "") -> str:
    """``override``, else ``fmnist`` for the embedded default (its dataset.json), else the folder name."""
    if override:
        return override
    manifest = root / "dataset.json"
    if manifest.is_file():
        try:
            info = json.loads(manifest.read_text())
            if "fashion" in str(info.get("source", "")).lower():
                return "fmnist"
        except (OSError, json.JSONDecodeError):
            pass
    return root.resolve().name


def build_transform(kind: str, img_size: int, crop_pct: float = 0.875, aa: str = "", reprob: float = 0.0,
                    min_scale: float = 0.08):
    """timm transform for ``kind`` in ('finetune', 'linear', 'eval') at ``img_size`` px; ``min_scale``
    is the smallest random-resized-crop area fraction of 'finetune'."""
    from timm.data import create_transform

    if kind == "finetune":
        if not 0.0 < min_scale <= 1.0:
            raise ValueError(f"min_scale must be in (0, 1], got {min_scale}")
        return allow_zero_bit_posterize(create_transform(
            input_size=img_size, is_training=True, scale=(min_scale, 1.0), auto_augment=aa or None,
            interpolation="bicubic", re_prob=reprob, re_mode="pixel", re_count=1, color_jitter=None))
    if kind == "linear":
        from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
        from torchvision import transforms as T

        return T.Compose([T.RandomResizedCrop(img_size, interpolation=T.InterpolationMode.BICUBIC),
                          T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)])
    if kind == "eval":
        return create_transform(input_size=img_size, is_training=False, interpolation="bicubic", crop_pct=crop_pct)
    raise ValueError(f"unknown transform kind {kind!r}")


def load_rgb(path: str):
    """torchvision's default image loader, but an unreadable file is one line naming it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with open(path, "rb") as f:
            return Image.open(f).convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise InputError(f"{path}: unreadable image ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                         "remove or replace the file") from None


def image_folder(root: Path, split: str, transform, classes: list[str]):
    """torchvision ``ImageFolder`` of ``root/split`` whose class indices follow ``classes``."""
    from torchvision.datasets import ImageFolder

    ds = ImageFolder(str(root / split), transform=transform, loader=load_rgb)
    if ds.classes != classes:
        raise InputError(f"{root / split}: classes changed while reading ({ds.classes[:5]}...)")
    return ds


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world, ...``: every sample exactly once over all processes (no padding),
    so distributed evaluation counts each image once."""

    def __init__(self, n: int, rank: int = 0, world_size: int = 1):
        self.n, self.rank, self.world_size = n, rank, world_size

    def __iter__(self):
        return iter(range(self.rank, self.n, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world_size))


class SeededSamples(torch.utils.data.Dataset):
    """``dataset[i]`` drawn with the global generators seeded from (seed, epoch, i) (:func:`droppos.utils.rng.seeded`):
    a sample's random crop, flip, RandAugment and erasing are the same whichever process, worker, batch or
    resume loads it."""

    def __init__(self, dataset, seed: int, epoch: int):
        self.dataset, self.seed, self.epoch = dataset, seed, epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        from droppos.utils.rng import seeded

        with seeded(self.seed, self.epoch, index):
            return self.dataset[index]


def train_loader(dataset, batch_size: int, workers: int, rank: int, world_size: int, seed: int, epoch: int,
                 pin: bool = False) -> DataLoader:
    """Shuffled, rank-sharded, drop-last loader for one epoch: the order from (seed, epoch), each sample's
    augmentation from (seed, epoch, index) (:class:`SeededSamples`), so a resumed epoch draws what the
    uninterrupted one drew and N processes see what one process with N times the batch sees."""
    from torch.utils.data import DistributedSampler, TensorDataset

    if len(dataset) // world_size < batch_size:
        raise InputError(f"{len(dataset)} training samples give no full batch of {batch_size} on {world_size} "
                         "process(es); lower --batch-size")
    sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True)
    sampler.set_epoch(epoch)
    samples = dataset if isinstance(dataset, TensorDataset) else SeededSamples(dataset, seed, epoch)
    return DataLoader(samples, batch_size=batch_size, sampler=sampler, num_workers=workers, drop_last=True,
                      pin_memory=pin, persistent_workers=False)


def eval_loader(dataset, batch_size: int, workers: int, rank: int, world_size: int, pin: bool = False) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, sampler=ShardSampler(len(dataset), rank, world_size),
                      num_workers=workers, pin_memory=pin)
