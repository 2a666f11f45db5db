"""Pretraining data: an ImageFolder that survives corrupt files, and a resumable sampler.

Augmentation is the MAE recipe (random resized crop 0.2-1 by default, ``min_scale``; horizontal
flip; ImageNet normalisation). Each sample's augmentation is seeded from (seed, epoch, index), and the sampler's
order from (seed, epoch), so a run resumed in the middle of an epoch sees exactly the batches and
crops the uninterrupted run would have seen.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from droppos.errors import UserError

from .datapath import DECODERS, IMAGENET_MEAN, IMAGENET_STD, sample_crop, sample_seed, seeded
from .masking import sample_noise

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def supervised_transform(img_size: int, aa: str = "rand-m9-mstd0.5-inc1", reprob: float = 0.25,
                         min_scale: float = 0.08):
    """DeiT's training transform, timm's ``create_transform``: random resized crop ``min_scale``-1 (DeiT:
    0.08; bicubic), flip, RandAugment, ImageNet normalisation, random erasing."""
    from timm.data import create_transform

    from droppos.utils.augment import allow_zero_bit_posterize

    return allow_zero_bit_posterize(create_transform(
        img_size, is_training=True, scale=(min_scale, 1.0), auto_augment=aa or None, re_prob=reprob, re_mode="pixel",
        re_count=1, interpolation="bicubic", mean=IMAGENET_MEAN, std=IMAGENET_STD))


def class_folders(root: str | Path) -> list[str]:
    """The class folder names of an ImageFolder tree (``root/train`` when it exists)."""
    root = Path(root)
    root = root / "train" if (root / "train").is_dir() else root
    return sorted(d.name for d in root.iterdir() if d.is_dir()) if root.is_dir() else []


def check_labelled(root: str | Path) -> list[str]:
    """The classes of a labelled pretraining set: at least two, and the same in ``train/`` and ``val/``."""
    root = Path(root)
    classes = class_folders(root)
    if len(classes) < 2:
        raise UserError(f"{root}: supervised pretraining needs labelled images, one class folder each; found "
                        f"{len(classes)} class folder(s)")
    if (root / "val").is_dir():
        val = sorted(d.name for d in (root / "val").iterdir() if d.is_dir())
        if val != classes:
            raise UserError(f"{root}: train/ has {len(classes)} classes, val/ has {len(val)} (or other names); "
                            "give both the same class folders")
    return classes


def find_images(root: str | Path) -> list[Path]:
    """Images of an ImageFolder tree (``root/train`` when it exists). Clear errors for bad trees."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"data folder not found: {root}; build the default with `droppos data imagefolder --out {root}`")
    if (root / "train").is_dir():
        root = root / "train"
    classes = sorted(d for d in root.iterdir() if d.is_dir())
    if not classes:
        raise UserError(f"{root}: no class folders; expected an ImageFolder tree ROOT/<class>/<image>")
    files, empty = [], []
    for c in classes:
        imgs = sorted(p for p in c.rglob("*") if p.suffix.lower() in IMG_EXTENSIONS)
        (files.extend(imgs) if imgs else empty.append(c.name))
    if empty:
        raise UserError(f"{root}: class folder(s) without images: {empty[:5]}{'...' if len(empty) > 5 else ''}; "
                         "remove them or add images")
    return files


class PretrainImages(Dataset):
    """Images and their class index (the folder's, for supervised pretraining; the pretext methods
    ignore it); returns (image, label, 1 if a corrupt file was replaced else 0, pending flip, the sample's
    ``noise_size`` mask draws from its own seed: :func:`droppos.pretrain.masking.sample_noise`).

    ``backend`` is ``torch`` (float, normalised, flipped here) or ``fast`` (uint8, flip pending: see
    :mod:`droppos.pretrain.datapath`); ``transform`` replaces the crop pipeline (supervised: the DeiT
    transform). A file that cannot be decoded is replaced by the next readable one
    (deterministically) and counted, so the batch size and the DDP step count stay the same on every
    process. Each sample's crop and flip come from (seed, epoch, index).
    """

    def __init__(self, root: str | Path, img_size: int, seed: int = 0, transform=None, min_scale: float = 0.2,
                 backend: str = "torch"):
        self.files = find_images(root)
        index = {c: i for i, c in enumerate(class_folders(root))}
        self.labels = [index.get(p.parent.name, 0) for p in self.files]
        self.transform, self.decode = transform, DECODERS[backend]
        self.img_size, self.min_scale = img_size, min_scale
        self.seed, self.epoch = seed, 0
        self.noise_size = 0  # the method's (set by the engine once it is built)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.files)

    def _sample(self, path: Path, index: int) -> tuple[torch.Tensor, int]:
        if self.transform is not None:
            with Image.open(path) as im:
                img = im.convert("RGB")
            with seeded(self.seed, self.epoch, index):
                return self.transform(img), 0
        return self.decode(path, self.img_size,
                           lambda h, w: sample_crop(h, w, self.seed, self.epoch, index, self.min_scale))

    def __getitem__(self, index: int):
        for offset in range(min(16, len(self.files))):
            k = (index + offset) % len(self.files)
            try:
                img, flip = self._sample(self.files[k], index)
            except (OSError, ValueError, RuntimeError, Image.DecompressionBombError):
                continue  # unreadable (PIL: OSError/ValueError; torchvision's decoders: RuntimeError)
            noise = sample_noise(sample_seed(self.seed, self.epoch, index), self.noise_size)
            return img, self.labels[k], int(offset > 0), flip, noise
        raise RuntimeError(f"16 consecutive unreadable images from {self.files[index]}; is the data folder corrupt?")


class ResumableSampler(Sampler[int]):
    """Shuffled, rank-sharded indices (like DistributedSampler, drop-last) that can start mid-epoch.

    ``set_epoch(epoch, start)`` reseeds the permutation with (seed, epoch) and skips this rank's
    first ``start`` indices.
    """

    def __init__(self, n: int, rank: int = 0, world_size: int = 1, seed: int = 0):
        self.n, self.rank, self.world_size, self.seed = n, rank, world_size, seed
        self.per_rank = n // world_size
        if self.per_rank == 0:
            raise UserError(f"{n} images cannot be split over {world_size} processes")
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 7919 + self.epoch)
        perm = torch.randperm(self.n, generator=g)[: self.per_rank * self.world_size]
        mine = perm[self.rank :: self.world_size]
        return iter(mine[self.start :].tolist())

    def __len__(self) -> int:
        return self.per_rank - self.start


def iters_per_epoch(n_images: int, world_size: int, batch_size: int, accum: int) -> int:
    """Micro-batches per epoch per process, a multiple of ``accum`` (drop-last)."""
    it = (n_images // world_size) // batch_size
    it -= it % accum
    if it == 0:
        raise UserError(f"{n_images} images give no full step of batch {batch_size} x accum {accum} x "
                         f"{world_size} processes; lower --batch-size or --accum-iter")
    return it


def steps_per_epoch(n_images: int, world_size: int, batch_size: int, accum: int) -> int:
    return iters_per_epoch(n_images, world_size, batch_size, accum) // accum

