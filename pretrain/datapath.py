"""The pretraining input pipeline: three backends, one crop distribution, one seed rule.

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
from collections import deque
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from timm.data import IMAGENET_DEFAULT_MEAN as IMAGENET_MEAN
from timm.data import IMAGENET_DEFAULT_STD as IMAGENET_STD

from droppos.errors import UserError
from droppos.utils.rng import sample_seed, seeded  # noqa: F401 - the seed rule, re-exported

BACKENDS = ("torch", "fast", "dali")
RATIO = (3.0 / 4.0, 4.0 / 3.0)
JPEG_SUFFIXES = (".jpg", ".jpeg")
DALI_PIP = "pip install nvidia-dali-cuda120 (CUDA 12; nvidia-dali-cuda130 for CUDA 13)"


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


# ------------------------------------------------------------------ DALI
def import_dali():
    try:
        import nvidia.dali  # noqa: F401
        from nvidia.dali import fn, pipeline_def, types
    except ImportError:
        raise UserError(f"--data-backend dali needs NVIDIA DALI, which is not installed: {DALI_PIP}; "
                        "or use --data-backend fast") from None
    return fn, pipeline_def, types


def jpeg_header(data: bytes) -> tuple[int, int] | None:
    """(height, width) of a complete-looking JPEG (SOI at the start, EOI at the end), else None."""
    from PIL import Image

    if data[:2] != b"\xff\xd8" or not ends_jpeg(data):
        return None
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format != "JPEG":
                return None
            return im.height, im.width
    except (OSError, ValueError):
        return None


class DaliBatches:
    """Batches decoded by DALI, in the sampler's order, each sample's window and flip from its seed.

    A Python feeder reads each file, checks that it is a complete JPEG (start and end markers, a
    readable header; otherwise the next readable file replaces it and the replacement is counted, as
    on the other backends), computes the window and flip, and passes bytes, window and flip to
    ``decoders.image_slice`` (decodes only the window), ``resize`` and ``crop_mirror_normalize``.
    Output: normalised float batches on ``device``.
    """

    def __init__(self, files: list[Path], labels: list[int], img_size: int, batch_size: int, seed: int,
                 min_scale: float, device: torch.device, threads: int = 4):
        self.fn, self.pipeline_def, self.types = import_dali()
        self.files, self.labels = files, labels
        self.img_size, self.batch_size, self.seed, self.min_scale = img_size, batch_size, seed, min_scale
        self.device, self.threads = device, max(1, threads)

    def _read(self, index: int) -> tuple[bytes, int, int, int, int]:
        """(bytes, height, width, file index, replaced) of sample ``index`` or its first readable successor."""
        for offset in range(min(16, len(self.files))):
            k = (index + offset) % len(self.files)
            data = Path(self.files[k]).read_bytes()
            hw = jpeg_header(data)
            if hw is not None:
                return data, hw[0], hw[1], k, int(offset > 0)
        raise RuntimeError(f"16 consecutive unreadable images from {self.files[index]}; is the data folder corrupt?")

    def epoch(self, epoch: int, indices: list[int]):
        """Yield (images, labels, replaced, sample indices) for the batches of ``indices`` (drop-last)."""
        fn, types = self.fn, self.types
        n_batches = len(indices) // self.batch_size
        meta: deque = deque()

        def feed():
            for b in range(n_batches):
                datas, anchors, shapes, flips, labels, bad = [], [], [], [], [], []
                for index in indices[b * self.batch_size:(b + 1) * self.batch_size]:
                    data, height, width, k, replaced = self._read(index)
                    i, j, h, w, flip = sample_crop(height, width, self.seed, epoch, index, self.min_scale)
                    datas.append(np.frombuffer(data, dtype=np.uint8))
                    anchors.append(np.array([j, i], dtype=np.float32))
                    shapes.append(np.array([w, h], dtype=np.float32))
                    flips.append(np.array(flip, dtype=np.int32))
                    labels.append(self.labels[k])
                    bad.append(replaced)
                meta.append((labels, bad, indices[b * self.batch_size:(b + 1) * self.batch_size]))
                yield datas, anchors, shapes, flips

        gpu = self.device.type == "cuda"

        @self.pipeline_def(batch_size=self.batch_size, num_threads=self.threads,
                           device_id=(self.device.index or 0) if gpu else None, seed=self.seed,
                           prefetch_queue_depth=2, exec_dynamic=True)
        def pipe():
            jpegs, anchor, shape, flip = fn.external_source(source=feed(), num_outputs=4, batch=True, no_copy=False)
            img = fn.decoders.image_slice(jpegs, anchor, shape, device="mixed" if gpu else "cpu",
                                          output_type=types.RGB, axis_names="WH",
                                          normalized_anchor=False, normalized_shape=False)
            img = fn.resize(img, resize_x=self.img_size, resize_y=self.img_size, interp_type=types.INTERP_CUBIC,
                            antialias=True)
            return fn.crop_mirror_normalize(img, mirror=flip, dtype=types.FLOAT, output_layout="CHW",
                                            mean=[255.0 * m for m in IMAGENET_MEAN],
                                            std=[255.0 * s for s in IMAGENET_STD])

        p = pipe()
        p.build()
        for _ in range(n_batches):
            (out,) = p.run()
            labels, bad, batch = meta.popleft()
            arr = out.as_tensor()
            if gpu:
                from nvidia.dali.plugin.pytorch import feed_ndarray

                imgs = torch.empty(arr.shape(), dtype=torch.float32, device=self.device)
                feed_ndarray(arr, imgs, cuda_stream=torch.cuda.current_stream(self.device))
            else:
                imgs = torch.from_numpy(np.array(arr))
            yield (imgs, torch.tensor(labels).to(self.device, non_blocking=True), torch.tensor(bad).to(self.device),
                   torch.tensor(batch))
        del p


def check_backend(backend: str, method: str, files: list[Path]) -> tuple[str, str]:
    """(the backend to use, a note to print or ''): one line for what cannot work."""
    if backend not in BACKENDS:
        raise UserError(f"--data-backend must be one of {list(BACKENDS)}, got {backend!r}")
    if backend != "torch" and method == "supervised":
        raise UserError(f"--data-backend {backend}: supervised pretraining runs the DeiT transform "
                        "(RandAugment, random erasing) in the loader; use --data-backend torch")
    if backend == "dali":
        import_dali()
        other = [p for p in files if p.suffix.lower() not in JPEG_SUFFIXES]
        if other:
            return "fast", (f"--data-backend dali decodes JPEG windows only; {len(other)} of {len(files)} images "
                            f"are not JPEG (e.g. {other[0].name}): using --data-backend fast instead")
    if backend == "fast" and window_decoder() is None:
        return backend, WINDOW_NOTE
    return backend, ""
