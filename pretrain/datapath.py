"""The pretraining input pipeline: three backends, one crop distribution, one seed rule (the crop sampling and
the CPU decoders here; DALI's feeder in :mod:`.dali`, the backend's choice in :mod:`.backends`).

``--data-backend``:

- ``torch`` (default; the official pipeline): PIL decodes the whole image, RandomResizedCrop
  (bicubic), flip, float32 conversion and ImageNet normalisation in the loader workers.
- ``fast`` (the best CPU-only path): libjpeg-turbo decodes only the crop window (the optional compiled
  ``_jpeg_window``: rows above the window skipped, columns outside it not reconstructed, nothing
  decoded below it; accurate DCT and fancy upsampling, as Pillow decodes, and the window's pixels are
  bit-identical to the same window of a whole decode), resized in uint8 (torchvision's antialiased
  bicubic kernel); uint8 batches (a quarter of the bytes to collate, pin and copy); flip and
  normalisation on the training device. Without the compiled decoder, and for CMYK JPEGs, whole
  images are decoded by ``simplejpeg`` (same pixels, slower); other formats by Pillow.
- ``dali`` (NVIDIA DALI): only the crop window is decoded (nvJPEG on a GPU, libjpeg-turbo ROI
  decoding on the CPU), resize, flip and normalisation run in the DALI pipeline on the device.

Every backend draws each sample's crop window and flip from (seed, epoch, index) with torchvision's
own ``RandomResizedCrop.get_params`` on the original image size, then one ``torch.rand`` for the
flip, in that order: the windows are the same whatever the backend (and the same as the
``torch`` transform always drew), so exact resume holds for each. What differs is resampling: PIL's
bicubic (``torch``), torch's antialiased bicubic on uint8 (``fast``, within a few grey levels of
PIL), DALI's cubic resize of the decoded window (``dali``).
"""

from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from timm.data import IMAGENET_DEFAULT_MEAN as IMAGENET_MEAN
from timm.data import IMAGENET_DEFAULT_STD as IMAGENET_STD

from droppos.errors import UserError
from droppos.utils.rng import sample_seed, seeded  # noqa: F401 - the seed rule, re-exported

RATIO = (3.0 / 4.0, 4.0 / 3.0)


def sample_crop(height: int, width: int, seed: int, epoch: int, index: int,
                min_scale: float = 0.2) -> tuple[int, int, int, int, bool]:
    """(top, left, height, width, flip) of one sample: torchvision's RandomResizedCrop window on the
    original size, then RandomHorizontalFlip's draw, from the sample's own seed."""
    from torchvision import transforms as T

    shape = torch.empty(1, 1, 1).expand(1, height, width)  # the size only, nothing allocated
    with torch.random.fork_rng(devices=[]):
        # the CPU generator only: torch.manual_seed would also queue a CUDA seeding with its call stack
        # (half a millisecond per sample on a machine without a GPU)
        torch.default_generator.manual_seed(sample_seed(seed, epoch, index))
        i, j, h, w = T.RandomResizedCrop.get_params(shape, [min_scale, 1.0], list(RATIO))
        flip = bool(torch.rand(1) < 0.5)
    return i, j, h, w, flip


# ------------------------------------------------------------------ per-sample decoders (torch, fast)
def decode_torch(path: Path, img_size: int, crop) -> tuple[torch.Tensor, int]:
    """The official transform on a PIL image: float32, normalised, flipped here (nothing left for the device)."""
    from PIL import Image
    from torchvision.transforms import functional as F

    with Image.open(path) as im:
        img = im.convert("RGB")
    i, j, h, w, flip = crop(img.height, img.width)
    img = F.resized_crop(img, i, j, h, w, [img_size, img_size], F.InterpolationMode.BICUBIC)
    if flip:
        img = F.hflip(img)
    return F.normalize(F.to_tensor(img), IMAGENET_MEAN, IMAGENET_STD), 0


def decode_rgb(data: bytes):
    """HWC uint8 RGB array: libjpeg-turbo (simplejpeg) for JPEG, Pillow for the other formats."""
    if data[:2] == b"\xff\xd8":
        import simplejpeg

        refuse_bomb(*simplejpeg.decode_jpeg_header(data)[:2])
        return simplejpeg.decode_jpeg(data, colorspace="RGB")  # ValueError when corrupt
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.array(im.convert("RGB"))


def refuse_bomb(height: int, width: int) -> None:
    """ValueError for a header claiming more pixels than Pillow would decode (its DecompressionBombError
    limit, which the ``torch`` backend meets as an unreadable file)."""
    from PIL import Image

    if Image.MAX_IMAGE_PIXELS and height * width > 2 * Image.MAX_IMAGE_PIXELS:
        raise ValueError(f"{height} x {width} pixels: a decompression bomb (Pillow's limit)")


def ends_jpeg(data: bytes) -> bool:
    """Whether a JPEG stream ends with its end-of-image marker (trailing zero padding allowed)."""
    return data.rstrip(b"\x00")[-2:] == b"\xff\xd9"


@lru_cache(maxsize=None)
def window_decoder():
    """The compiled window decoder, or None where it was not built (no C compiler or libjpeg headers)."""
    try:
        from . import _jpeg_window
    except ImportError:
        return None
    return _jpeg_window


WINDOW_NOTE = ("--data-backend fast: the JPEG window decoder was not built (it needs a C compiler and "
               "libjpeg-turbo's headers: apt-get install libjpeg62-turbo-dev, then pip install -e . again); "
               "decoding whole images instead (same pixels, slower)")
FANCY_CONTEXT = 2  # columns decoded beyond each side: fancy upsampling of subsampled chroma reads a neighbour


def window_source(data: bytes) -> tuple[int, int] | None:
    """(height, width) of a JPEG whose window the compiled decoder reads; None for what it leaves to
    :func:`decode_rgb` (other formats, CMYK, or no decoder). A JPEG without its end marker is refused
    (ValueError), as a whole decode would refuse it, so a truncated file is replaced whatever the window."""
    if data[:2] != b"\xff\xd8" or window_decoder() is None:
        return None
    import simplejpeg

    height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)  # ValueError when unreadable
    refuse_bomb(height, width)
    if colorspace in ("CMYK", "YCCK"):
        return None
    if not ends_jpeg(data):
        raise ValueError("truncated JPEG (no end-of-image marker)")
    return height, width


def decode_window(data: bytes, top: int, left: int, height: int, width: int, image_width: int) -> np.ndarray:
    """HWC uint8 RGB view of one window of a JPEG, decoding that window only (see :func:`window_source`)."""
    start, stop = max(left - FANCY_CONTEXT, 0), min(left + width + FANCY_CONTEXT, image_width)
    pixels, x0, row = window_decoder().decode_window(data, top, start, height, stop - start)
    rows = np.frombuffer(pixels, np.uint8, height * row * 3).reshape(height, row, 3)
    return rows[:, left - x0:left - x0 + width]


def decode_fast(path: Path, img_size: int, crop) -> tuple[torch.Tensor, int]:
    """Decode the window (or the whole image, then cut the window as a view), uint8 antialiased bicubic
    resize; the flip is left to the device.

    The resize is ``torch.nn.functional.interpolate`` on a channels-last copy of the window (the kernel
    torchvision's v2 ``resize`` dispatches to for uint8 images, without its per-call dispatch; its
    vectorised path wants channels-last contiguous input)."""
    data = Path(path).read_bytes()
    size = window_source(data)
    if size is not None:
        i, j, h, w, flip = crop(*size)
        window = decode_window(data, i, j, h, w, size[1])
    else:
        img = decode_rgb(data)
        i, j, h, w, flip = crop(img.shape[0], img.shape[1])
        window = img[i:i + h, j:j + w]
    x = torch.from_numpy(window).permute(2, 0, 1)[None].contiguous(memory_format=torch.channels_last)
    out = F.interpolate(x, size=(img_size, img_size), mode="bicubic", antialias=True)
    return out[0], int(flip)


DECODERS = {"torch": decode_torch, "fast": decode_fast}


@lru_cache(maxsize=None)
def _scale_shift(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """ImageNet normalisation of 0-255 values as one multiply-add, ``x * scale + shift`` (scale =
    1 / (255 std), shift = -mean / std), made once per device (not a host-to-device copy per batch)."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float64).view(1, 3, 1, 1)
    return (1.0 / (255.0 * std)).float().to(device), (-mean / std).float().to(device)


def on_device(imgs: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Finish a ``fast`` batch on its device: pending flips (on the uint8 pixels), then uint8 -> float
    and ImageNet normalisation in one multiply-add.

    No host synchronisation: the flip is a ``torch.where``. A float batch (``torch``) is returned as is."""
    if imgs.dtype != torch.uint8:
        return imgs
    scale, shift = _scale_shift(imgs.device)
    x = torch.where(flip.view(-1, 1, 1, 1).bool(), imgs.flip(-1), imgs)
    return torch.addcmul(shift, x.float(), scale)
