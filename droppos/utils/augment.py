"""timm's RandAugment on Pillow >= 13, for every transform that uses it (fine-tuning, supervised pretraining)."""

from __future__ import annotations


def _posterize_any_bits(img, bits_to_keep, **_):
    """timm's posterize, with 0 bits giving a black image as Pillow < 13 did (Pillow 13 raises)."""
    from PIL import Image, ImageOps

    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        return Image.new(img.mode, img.size, 0)
    return ImageOps.posterize(img, bits_to_keep)


def allow_zero_bit_posterize(transform):
    """Make timm's RandAugment run on Pillow >= 13.

    RandAugment ``rand-m9-mstd0.5-inc1`` samples magnitudes up to 10, where ``PosterizeIncreasing``
    keeps 0 bits; Pillow 13 refuses ``ImageOps.posterize(img, 0)`` ("bits must be between or equal
    to 1 and 8") where older Pillow returned a black image. This swaps in a posterize with the old
    result, in this transform only; with a Pillow that accepts 0 bits it changes nothing.
    """
    from PIL import Image, ImageOps
    from timm.data.auto_augment import RandAugment

    try:
        ImageOps.posterize(Image.new("RGB", (1, 1)), 0)
        return transform
    except ValueError:
        pass
    for t in getattr(transform, "transforms", []):
        if isinstance(t, RandAugment):
            for op in t.ops:
                if op.name.startswith("Posterize"):
                    op.aug_fn = _posterize_any_bits
    return transform
