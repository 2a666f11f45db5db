"""The ``dali`` backend of the pretraining input pipeline: NVIDIA DALI decodes only each sample's crop window
(nvJPEG on a GPU, libjpeg-turbo ROI decoding on the CPU); the window and flip come from :func:`.datapath.sample_crop`,
as on the other backends."""

from __future__ import annotations

import io
from collections import deque
from pathlib import Path

import numpy as np
import torch

from droppos.errors import UserError

from .datapath import IMAGENET_MEAN, IMAGENET_STD, ends_jpeg, sample_crop

DALI_PIP = "pip install nvidia-dali-cuda120 (CUDA 12; nvidia-dali-cuda130 for CUDA 13)"


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
