"""Pretraining input pipeline: images per second per CPU core, side by side in one run.

Pipelines (each: read the file, decode, random resized crop 0.2-1 to 224 px, flip, make the batch
element the model's input needs, then ``default_collate`` into batches of 32 as a DataLoader worker
does; one process, one thread, so the rate is per core):

- ``official``: a re-statement of the released DropPos sample (``mask_transform.py``): PIL
  decode of the whole image, ``RandomResizedCrop(224, (0.2, 1), bicubic)``, flip, ``ToTensor``,
  ``Normalize`` (float32 out), and its random 0/1 patch mask;
- ``torch``: this project's ``--data-backend torch`` sample (the same work, seeded per sample);
- ``fast``: ``--data-backend fast`` (libjpeg-turbo decode of the crop window only, uint8 antialiased
  bicubic resize, uint8 out; flip and normalisation left to the device, measured apart as
  ``device finish``);
- ``dali-cpu``: ``--data-backend dali``'s pipeline with DALI's CPU operators (window-only decode),
  when DALI is installed; ``dali-gpu`` when a GPU is visible too.

The images are generated, never downloaded: ``--images`` JPEGs of about 500 x 375 (ImageNet's
typical size), quality 90, each a 1/f colour-noise field (the power spectrum of natural images) plus
random ellipses and edges, from ``numpy.random.default_rng(seed + i)``; their mean file size is
printed beside ImageNet's (about 110 KB). Rounds alternate the pipelines (A B C A B C ...) and the
table gives the median round, so a busy machine slows all of them alike.

    python benchmarks/data_throughput.py                       # 64 images, 5 rounds
    python benchmarks/data_throughput.py --model-img-per-s 6400 --images 128 --rounds 7
    python benchmarks/data_throughput.py --data /path/to/imagenet/train   # real JPEGs instead
    python benchmarks/data_throughput.py --loader    # through a real DataLoader worker process

``--model-img-per-s``: what one GPU consumes; the default 6400 is ViT-B/16 DropPos (about 31 GMAC,
62 GFLOP per image and step: ``benchmarks/pretrain_step.py``) at 40% of an H100's 989 dense bf16
TFLOP/s. The last column is the CPU cores one GPU needs at that rate.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


# ------------------------------------------------------------------ data
def natural_image(seed: int, width: int = 500, height: int = 375) -> np.ndarray:
    """A deterministic RGB image with natural-image statistics: 1/f amplitude spectrum, shapes, edges."""
    rng = np.random.default_rng(seed)
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    f = np.sqrt(fx**2 + fy**2)
    f[0, 0] = 1.0
    shared = (rng.normal(size=f.shape) + 1j * rng.normal(size=f.shape)) / f
    chans = []
    for _ in range(3):  # correlated colour channels
        own = (rng.normal(size=f.shape) + 1j * rng.normal(size=f.shape)) / f
        x = np.fft.irfft2(0.8 * shared + 0.6 * own, s=(height, width))
        chans.append((x - x.mean()) / x.std())
    img = np.stack(chans, -1) * 45.0 + rng.uniform(80, 170, 3)
    yy, xx = np.mgrid[0:height, 0:width]
    for _ in range(rng.integers(3, 8)):  # objects: flat-ish ellipses with sharp edges
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        ry, rx = rng.uniform(height / 20, height / 2), rng.uniform(width / 20, width / 2)
        inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
        img[inside] = 0.5 * img[inside] + 0.5 * rng.uniform(0, 255, 3)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_jpegs(folder: Path, n: int, seed: int = 0) -> list[Path]:
    from PIL import Image

    (folder / "train" / "synthetic").mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n):
        p = folder / "train" / "synthetic" / f"{i:05d}.jpg"
        if not p.is_file():
            Image.fromarray(natural_image(seed + i)).save(p, "JPEG", quality=90)
        files.append(p)
    return files


# ------------------------------------------------------------------ pipelines
def official_pipeline(files, img_size, workers=0):
    """The released sample, as ``mask_transform.py`` writes it: the transform, then its
    ``RandomMaskingGenerator`` (a shuffled 0/1 vector of the patches, which the loader carries to the
    GPU though the model draws its own masks)."""
    from PIL import Image
    from torchvision import transforms as T

    tf = T.Compose([T.RandomResizedCrop(img_size, scale=(0.2, 1.0), interpolation=T.InterpolationMode.BICUBIC),
                    T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])])

    patches = (img_size // 16) ** 2

    def mask():
        m = np.hstack([np.zeros(patches - int(0.75 * patches)), np.ones(int(0.75 * patches))])
        np.random.shuffle(m)
        return m

    def sample(i):
        with open(files[i], "rb") as f:  # torchvision's pil_loader
            img = Image.open(f).convert("RGB")
        return (tf(img), mask()), 0
    return batched(sample, len(files), workers)


def dataset_pipeline(files, img_size, backend, workers=0):
    from droppos.pretrain.data import PretrainImages

    ds = PretrainImages(files[0].parent.parent.parent, img_size, backend=backend)
    return batched(ds.__getitem__, len(ds), workers)


def batched(sample, n, workers=0, batch=32):
    """What a DataLoader worker does: the samples, then ``default_collate`` into batches; with
    ``--loader``, a real ``DataLoader`` with one persistent worker process (batches cross processes
    through shared memory, as in training)."""
    from torch.utils.data import DataLoader, Dataset, default_collate

    if workers:
        class Samples(Dataset):
            def __len__(self):
                return n

            def __getitem__(self, i):
                return sample(i)

        loader = DataLoader(Samples(), batch_size=batch, num_workers=workers, drop_last=True,
                            persistent_workers=True, worker_init_fn=lambda _: torch.set_num_threads(1))

        def run():
            for _ in loader:
                pass
        return run

    def run():
        for start in range(0, n - batch + 1, batch):
            default_collate([sample(i) for i in range(start, start + batch)])
    return run


def dali_pipeline(files, img_size, device):
    from droppos.pretrain.dali import DaliBatches

    batch = 16
    dali = DaliBatches(files, [0] * len(files), img_size, batch, 0, 0.2, torch.device(device), threads=1)
    indices = list(range(len(files) // batch * batch))

    def run():
        for imgs, *_ in dali.epoch(0, indices):
            pass
        if device == "cuda":
            torch.cuda.synchronize()
    return run, len(indices)


def decode_only(files, kind):
    """The decode alone, to show the floor: Pillow, libjpeg-turbo through simplejpeg, or DALI's CPU window decode."""
    from droppos.pretrain.datapath import decode_rgb, sample_crop

    datas = [p.read_bytes() for p in files]
    if kind == "pillow":
        from PIL import Image

        def run():
            for d in datas:
                Image.open(io.BytesIO(d)).convert("RGB")
        return run, len(datas)
    if kind == "libjpeg-turbo":
        def run():
            for d in datas:
                decode_rgb(d)
        return run, len(datas)
    if kind == "window":
        from droppos.pretrain.datapath import decode_window, window_source

        sizes = [window_source(d) for d in datas]
        wins = [sample_crop(*size, 0, 0, k) for k, size in enumerate(sizes)]

        def run():
            for d, (i, j, h, w, _), size in zip(datas, wins, sizes):
                decode_window(d, i, j, h, w, size[1])
        return run, len(datas)
    from nvidia.dali import fn, pipeline_def, types

    wins = [sample_crop(*decode_rgb(d).shape[:2], 0, 0, k) for k, d in enumerate(datas)]
    arrays = [np.frombuffer(d, dtype=np.uint8) for d in datas]
    anchors = [np.array([w[1], w[0]], np.float32) for w in wins]
    shapes = [np.array([w[3], w[2]], np.float32) for w in wins]

    def feed():
        while True:
            yield arrays, anchors, shapes

    @pipeline_def(batch_size=len(datas), num_threads=1, device_id=None, exec_async=False, exec_pipelined=False,
                  prefetch_queue_depth=1)
    def pipe():
        j, a, s = fn.external_source(source=feed(), num_outputs=3, batch=True)
        return fn.decoders.image_slice(j, a, s, device="cpu", output_type=types.RGB, axis_names="WH",
                                       normalized_anchor=False, normalized_shape=False)

    p = pipe()
    p.build()
    return p.run, len(datas)


def device_finish(img_size, n):
    """The ``fast`` backend's device work (uint8 -> float, flip, normalise), here on the CPU, batch 64."""
    from droppos.pretrain.datapath import on_device

    x = torch.randint(0, 255, (64, 3, img_size, img_size), dtype=torch.uint8)
    flip = torch.randint(0, 2, (64,))

    def run():
        for _ in range(max(1, n // 64)):
            on_device(x, flip)
    return run, max(1, n // 64) * 64


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=64, help="generated JPEGs, a multiple of 32 (default %(default)s)")
    ap.add_argument("--data", type=Path, default=None, help="an ImageFolder of real JPEGs instead (first --images)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--model-img-per-s", type=float, default=6400.0,
                    help="images/s one GPU consumes (default: ViT-B/16 DropPos at 40%% of an H100's bf16 peak)")
    ap.add_argument("--loader", action="store_true",
                    help="run official, torch and fast through a real DataLoader worker process (one per pipeline)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    workers = 1 if args.loader else 0

    tmp = tempfile.TemporaryDirectory()
    if args.data:
        files = sorted(p for p in args.data.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))[: args.images]
        if not files:
            sys.exit(f"{args.data}: no JPEG files")
        origin = str(args.data)
    else:
        files = make_jpegs(Path(tmp.name), args.images)
        origin = "generated (1/f colour noise + shapes, quality 90)"
    sizes = [p.stat().st_size for p in files]
    from PIL import Image

    dims = [Image.open(p).size for p in files[:16]]
    print(f"{len(files)} JPEGs, {origin}: mean {np.mean(sizes) / 1024:.0f} KB "
          f"(ImageNet train: about 110 KB), e.g. {dims[0][0]} x {dims[0][1]} px")

    pipelines = {"official": (official_pipeline(files, args.img_size, workers), len(files))}
    if args.data is None:
        pipelines["torch"] = (dataset_pipeline(files, args.img_size, "torch", workers), len(files))
        pipelines["fast"] = (dataset_pipeline(files, args.img_size, "fast", workers), len(files))
    notes = []
    try:
        import nvidia.dali  # noqa: F401

        if args.data is None:
            pipelines["dali-cpu"] = dali_pipeline(files, args.img_size, "cpu")
            if torch.cuda.is_available():
                pipelines["dali-gpu"] = dali_pipeline(files, args.img_size, "cuda")
            else:
                notes.append("dali-gpu: not measured (no GPU visible)")
    except ImportError:
        notes.append("dali-cpu, dali-gpu: not measured (DALI not installed: pip install nvidia-dali-cuda120)")
    pipelines["decode only: Pillow, whole image"] = decode_only(files, "pillow")
    pipelines["decode only: libjpeg-turbo (simplejpeg), whole image"] = decode_only(files, "libjpeg-turbo")
    from droppos.pretrain.datapath import WINDOW_NOTE, window_decoder

    if window_decoder() is not None:
        pipelines["decode only: libjpeg-turbo, crop window (fast)"] = decode_only(files, "window")
    else:
        notes.append(WINDOW_NOTE)
    if "dali-cpu" in pipelines:
        pipelines["decode only: DALI CPU, crop window"] = decode_only(files, "dali-window")
    pipelines["device finish (fast, on CPU)"] = device_finish(args.img_size, len(files))

    for run, _ in pipelines.values():  # warm-up: imports, first decode, DALI build
        run()
    times = {k: [] for k in pipelines}
    for _ in range(args.rounds):
        for k, (run, n) in pipelines.items():
            t0 = time.perf_counter()
            run()
            times[k].append((time.perf_counter() - t0) / n)

    base = statistics.median(times["official"])
    where = "one DataLoader worker" if args.loader else "1 process, 1 thread"
    print(f"\nper core ({where}), {args.img_size} px, median of {args.rounds} rounds; "
          f"cores per GPU at {args.model_img_per_s:.0f} img/s")
    print("| pipeline | ms / image | img/s per core | vs official | cores per GPU |")
    print("|---|---|---|---|---|")
    for k, ts in times.items():
        t = statistics.median(ts)
        cores = "" if k.startswith(("device", "decode")) else f"{args.model_img_per_s * t:.1f}"
        print(f"| {k} | {t * 1e3:.2f} | {1 / t:.0f} | {base / t:.2f}x | {cores} |")
    for n in notes:
        print(f"- {n}")
    tmp.cleanup()


if __name__ == "__main__":
    main()
