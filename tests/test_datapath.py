"""The pretraining data backends: torchvision's crop distribution, the same windows on every backend,
resampling within a few grey levels, DALI (skipped without it), and a step without host syncs."""

import io
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from droppos.errors import UserError
from droppos.pretrain.data import PretrainImages
from droppos.pretrain.backends import check_backend
from droppos.pretrain.datapath import decode_fast, decode_torch, on_device, sample_crop

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from data_throughput import natural_image  # noqa: E402  (the benchmark's deterministic JPEG content)


def jpeg_folder(root: Path, n: int = 12, size=(120, 90)) -> Path:
    d = root / "train" / "a"
    d.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(natural_image(i, *size)).save(d / f"{i:03d}.jpg", "JPEG", quality=90)
    return root


# ------------------------------------------------------------------ crop distribution
def test_crop_windows_follow_torchvisions_random_resized_crop():
    """20000 windows drawn per (seed, epoch, index) against 20000 from torchvision's RandomResizedCrop with
    one running generator: area fraction and log aspect have the same distribution (two-sample KS test),
    and the same histograms to within sampling noise."""
    from scipy.stats import ks_2samp

    h, w, n = 375, 500, 20000
    ours = np.array([sample_crop(h, w, seed=3, epoch=k // 5000, index=k % 5000)[:4] for k in range(n)], dtype=float)
    torch.manual_seed(1234)
    shape = torch.empty(1, h, w)
    ref = np.array([T.RandomResizedCrop.get_params(shape, [0.2, 1.0], [3 / 4, 4 / 3]) for _ in range(n)], dtype=float)
    for arr in (ours, ref):
        assert (arr[:, 0] >= 0).all() and (arr[:, 0] + arr[:, 2] <= h).all() and (arr[:, 1] + arr[:, 3] <= w).all()
    area = lambda a: a[:, 2] * a[:, 3] / (h * w)  # noqa: E731
    aspect = lambda a: np.log(a[:, 3] / a[:, 2])  # noqa: E731
    for stat in (area, aspect):
        assert ks_2samp(stat(ours), stat(ref)).pvalue > 1e-3
        bins = np.histogram_bin_edges(stat(ref), bins=10)
        a, _ = np.histogram(stat(ours), bins)
        b, _ = np.histogram(stat(ref), bins)
        assert np.all(np.abs(a - b) <= 5 * np.sqrt(np.maximum(a + b, 1)))
    assert 0.19 <= area(ours).min() and area(ours).max() <= 1.0  # torchvision rounds the sides
    flips = np.array([sample_crop(h, w, 3, 0, k)[4] for k in range(4000)])
    assert abs(flips.mean() - 0.5) < 0.04


def test_a_sample_draws_the_same_window_whatever_its_neighbours():
    assert sample_crop(300, 400, 0, 2, 17) == sample_crop(300, 400, 0, 2, 17)
    assert sample_crop(300, 400, 0, 2, 17) != sample_crop(300, 400, 0, 3, 17)
    torch.manual_seed(0)
    before = torch.rand(3)
    torch.manual_seed(0)
    sample_crop(300, 400, 0, 0, 0)
    assert torch.equal(torch.rand(3), before)  # the caller's generator is left alone


# ------------------------------------------------------------------ backends agree
def test_fast_decodes_as_pillow_and_resamples_within_a_few_grey_levels(tmp_path):
    root = jpeg_folder(tmp_path, n=6, size=(500, 375))
    files = sorted((root / "train" / "a").glob("*.jpg"))
    from droppos.pretrain.datapath import decode_rgb

    for p in files[:2]:  # libjpeg-turbo with accurate DCT and fancy upsampling: Pillow's pixels exactly
        assert np.array_equal(decode_rgb(p.read_bytes()), np.asarray(Image.open(p).convert("RGB")))
    diffs = []
    for k, p in enumerate(files):
        seen = []

        def crop(h, w, k=k):
            seen.append((h, w))
            return sample_crop(h, w, 0, 0, k)

        a, pending_a = decode_torch(p, 224, crop)
        b, pending_b = decode_fast(p, 224, crop)
        assert seen[0] == seen[1] == (375, 500) and pending_a == 0 and b.dtype == torch.uint8
        assert pending_b == int(sample_crop(375, 500, 0, 0, k)[4])
        b = on_device(b[None], torch.tensor([pending_b]))[0]
        diffs.append((a - b).abs().mean().item() * 0.226 * 255)  # in grey levels (std ~ 0.226)
    assert max(diffs) < 2.0, diffs  # PIL's bicubic vs torch's antialiased bicubic


ENCODINGS = {  # Pillow's JPEG options: chroma 4:2:0, 4:2:2, 4:4:4, grey, progressive, an odd size
    "420": dict(subsampling=2), "422": dict(subsampling=1), "444": dict(subsampling=0),
    "grey": dict(mode="L"), "progressive": dict(progressive=True, subsampling=2), "odd": dict(size=(333, 251)),
}


def encoded(kind: str) -> bytes:
    opts = dict(ENCODINGS[kind])
    size, mode = opts.pop("size", (200, 150)), opts.pop("mode", "RGB")
    buf = io.BytesIO()
    Image.fromarray(natural_image(7, *size)).convert(mode).save(buf, "JPEG", quality=90, **opts)
    return buf.getvalue()


def needs_window_decoder():
    from droppos.pretrain.datapath import window_decoder

    if window_decoder() is None:
        if os.environ.get("CI"):
            pytest.fail("the _jpeg_window extension was not built (setup.sh builds it: gcc, libjpeg62-turbo-dev)")
        pytest.skip("the _jpeg_window extension is not built here")


@pytest.mark.parametrize("kind", list(ENCODINGS))
def test_window_decode_gives_the_whole_decodes_pixels_exactly(kind):
    """Every window (random ones, corners, 1-pixel ones, ones starting on the 16-pixel iMCU grid) is
    bit-identical to the same window of simplejpeg's whole decode."""
    from droppos.pretrain.datapath import decode_rgb, decode_window, window_source

    needs_window_decoder()
    data = encoded(kind)
    full = decode_rgb(data)
    h, w = window_source(data)
    assert (h, w) == full.shape[:2]
    windows = [sample_crop(h, w, 0, 0, k)[:4] for k in range(12)]
    windows += [(0, 0, h, w), (0, 0, 1, 1), (h - 1, w - 1, 1, 1), (h - 17, w - 33, 17, 33), (5, 16, 40, 32),
                (16, 32, 16, 16), (0, w - 1, h, 1), (h // 2, 0, h - h // 2, 17)]
    for i, j, hh, ww in windows:
        got = decode_window(data, i, j, hh, ww, w)
        assert got.shape == (hh, ww, 3) and np.array_equal(got, full[i:i + hh, j:j + ww]), (kind, i, j, hh, ww)


def test_window_decoder_refuses_bad_windows_and_corrupt_data():
    from droppos.pretrain.datapath import decode_rgb, window_decoder, window_source

    needs_window_decoder()
    data = encoded("420")
    for window in [(-1, 0, 10, 10), (0, 0, 151, 10), (0, 190, 10, 11), (0, 0, 0, 5)]:
        with pytest.raises(ValueError, match="outside the image"):
            window_decoder().decode_window(data, *window)
    with pytest.raises(ValueError, match="truncated"):
        window_source(data[: len(data) // 2])
    sof = data.index(b"\xff\xc0") + 5  # the frame header: precision, then height and width
    bomb = data[:sof] + (60000).to_bytes(2, "big") + (60000).to_bytes(2, "big") + data[sof + 4:]
    for read in (window_source, decode_rgb):  # refused from the header, as Pillow refuses it, before any allocation
        with pytest.raises(ValueError, match="decompression bomb"):
            read(bomb)
    scrambled = data[:400] + bytes(255 - b for b in data[400:-2]) + data[-2:]
    with pytest.raises(ValueError):
        window_decoder().decode_window(scrambled, 100, 0, 50, 200)


def test_window_decoder_survives_mutated_files():
    """2000 randomly mutated JPEGs (bytes overwritten, cut out, inserted) with random windows: each one
    decodes or raises ValueError, never crashes the process (checked here also under valgrind with no
    error in the decoder)."""
    import random

    from droppos.pretrain.datapath import decode_window, window_source

    needs_window_decoder()
    rng = random.Random(0)
    sources = [encoded(kind) for kind in ("420", "progressive", "444")]
    outcomes = {"decoded": 0, "refused": 0}
    for _ in range(2000):
        data = bytearray(rng.choice(sources))
        for _ in range(rng.randint(1, 8)):
            k, op = rng.randrange(len(data)), rng.random()
            if op < 0.6:
                data[k] = rng.randrange(256)
            elif op < 0.8:
                del data[k:k + rng.randint(1, 50)]
            else:
                data[k:k] = rng.randbytes(rng.randint(1, 20))
        try:
            size = window_source(bytes(data))
            if size is None or min(size) < 1:
                continue
            i, j = rng.randrange(size[0]), rng.randrange(size[1])
            hh, ww = rng.randint(1, size[0] - i), rng.randint(1, size[1] - j)
            assert decode_window(bytes(data), i, j, hh, ww, size[1]).shape == (hh, ww, 3)
            outcomes["decoded"] += 1
        except ValueError:
            outcomes["refused"] += 1
    assert outcomes["decoded"] > 100 and outcomes["refused"] > 100, outcomes


def test_fast_gives_the_same_batch_with_or_without_the_window_decoder(tmp_path, monkeypatch):
    """The compiled decoder changes the speed only: the same uint8 images, bit for bit; without it
    ``fast`` says so in one note."""
    from droppos.pretrain import datapath

    needs_window_decoder()
    root = jpeg_folder(tmp_path, n=4, size=(160, 120))
    cmyk = root / "train" / "a" / "cmyk.jpg"
    Image.fromarray(natural_image(5, 160, 120)).convert("CMYK").save(cmyk, "JPEG", quality=90)
    files = sorted((root / "train" / "a").glob("*.jpg"))

    def batch():
        return [datapath.decode_fast(p, 64, lambda h, w, k=k: sample_crop(h, w, 0, 0, k)) for k, p in enumerate(files)]

    with_decoder = batch()
    assert check_backend("fast", "droppos", []) == ("fast", "")
    monkeypatch.setattr(datapath, "window_decoder", lambda: None)
    without = batch()
    for (a, fa), (b, fb) in zip(with_decoder, without):
        assert fa == fb and torch.equal(a, b)
    backend, note = check_backend("fast", "droppos", [])
    assert backend == "fast" and "libjpeg62-turbo-dev" in note and "\n" not in note


def test_on_device_normalises_and_flips_like_the_torch_transform():
    x = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    out = on_device(x, torch.tensor([1, 0]))
    ref = T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))(x.float() / 255)
    assert torch.allclose(out[0], ref[0].flip(-1), atol=1e-5) and torch.allclose(out[1], ref[1], atol=1e-5)
    f = torch.randn(2, 3, 4, 4)
    assert on_device(f, torch.tensor([1, 1])) is f  # a torch batch is already finished


def test_fast_dataset_replaces_corrupt_files_and_reads_pngs(tmp_path):
    root = jpeg_folder(tmp_path, n=4)
    (root / "train" / "a" / "001.jpg").write_bytes((root / "train" / "a" / "000.jpg").read_bytes()[:500])  # truncated
    Image.fromarray(natural_image(9, 64, 48)).save(root / "train" / "a" / "png.png")
    ds = PretrainImages(root, 32, backend="fast")
    out = [ds[i] for i in range(len(ds))]
    assert [o[2] for o in out] == [0, 1, 0, 0, 0]  # the truncated JPEG replaced and counted
    assert all(o[0].shape == (3, 32, 32) and o[0].dtype == torch.uint8 for o in out)


def test_bad_backend_choices_are_one_line(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="supervised pretraining runs the DeiT transform"):
        check_backend("fast", "supervised", [])
    monkeypatch.setitem(sys.modules, "nvidia.dali", None)  # as if not installed
    with pytest.raises(UserError, match="pip install nvidia-dali-cuda120") as e:
        check_backend("dali", "droppos", [Path("a.jpg")])
    assert "\n" not in str(e.value)


# ------------------------------------------------------------------ DALI
def _dali_or_skip():
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        pytest.skip("NVIDIA DALI not installed (pip install nvidia-dali-cuda120): the dali backend is not tested here")


def test_dali_windows_match_the_fast_backend(tmp_path):
    _dali_or_skip()
    from droppos.pretrain.dali import DaliBatches

    root = jpeg_folder(tmp_path, n=8, size=(160, 120))
    files = sorted((root / "train" / "a").glob("*.jpg"))
    (files[2]).write_bytes(files[2].read_bytes()[:400])  # truncated: replaced by the next, counted
    batches = DaliBatches(files, list(range(8)), 64, 4, seed=0, min_scale=0.2, device=torch.device("cpu"), threads=1)
    got = list(batches.epoch(1, [5, 2, 7, 0, 1, 3, 4, 6]))
    assert len(got) == 2
    imgs, labels, bad, index = got[0]
    assert index.tolist() == [5, 2, 7, 0]  # each sample's index: its masks' seed
    assert imgs.shape == (4, 3, 64, 64) and imgs.dtype == torch.float32
    assert labels.tolist() == [5, 3, 7, 0] and bad.tolist() == [0, 1, 0, 0]
    for k, index in enumerate([5, 7, 0]):  # same window and flip as the fast backend, DALI's own resampling
        pos = [5, 2, 7, 0].index(index)
        ref, flip = decode_fast(files[index], 64, lambda h, w, index=index: sample_crop(h, w, 0, 1, index))
        ref = on_device(ref[None], torch.tensor([flip]))[0]
        assert (imgs[pos] - ref).abs().mean() < 0.05, index


def test_dali_backend_falls_back_on_non_jpeg_data(tmp_path):
    _dali_or_skip()
    backend, note = check_backend("dali", "droppos", [Path("a.jpg"), Path("b.png")])
    assert backend == "fast" and "1 of 2 images are not JPEG" in note


# ------------------------------------------------------------------ the step: no host sync, compile
class NoHostSync:
    """Fails on any device-to-host read inside the block (on a CPU, where nothing really syncs)."""

    NAMES = ("item", "cpu", "tolist", "numpy", "__bool__", "__float__", "__int__")

    def __enter__(self):
        self.saved = {n: getattr(torch.Tensor, n) for n in self.NAMES}
        for n in self.NAMES:
            def trap(*a, _n=n, **k):
                raise AssertionError(f"host sync in the step: Tensor.{_n}")
            setattr(torch.Tensor, n, trap)

    def __exit__(self, *exc):
        for n, f in self.saved.items():
            setattr(torch.Tensor, n, f)


def test_the_training_step_reads_nothing_back_to_the_host():
    from droppos.models import build_vit
    from droppos.pretrain.build import decay_groups
    from droppos.pretrain.droppos import DropPos
    from droppos.utils.optim import clip_gradients

    torch.manual_seed(0)
    m = DropPos(build_vit("tiny", patch_size=8, img_size=32, depth=1), decoder_dim=32, decoder_depth=1,
                decoder_heads=2, conf_ignore=True)
    params = [p for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(decay_groups(m, 0.05), lr=1e-3)
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    with NoHostSync():  # the optimiser aside: on a CPU AdamW reads its step count; on a GPU it is fused
        imgs = on_device(x, torch.tensor([0, 1, 0, 1]))
        out = m(imgs)
        out["loss"].backward()
        clip_gradients(params, 1.0, "official")
        clip_gradients(params, 1.0, "global")
    opt.step()
    opt.zero_grad(set_to_none=True)
    assert torch.isfinite(out["loss"]).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA sync debug mode needs a GPU")
def test_the_step_on_a_gpu_raises_on_no_sync():  # pragma: no cover - run where a GPU is lent
    from droppos.models import build_vit
    from droppos.pretrain.droppos import DropPos

    m = DropPos(build_vit("tiny", patch_size=8, img_size=32, depth=1), decoder_dim=32, decoder_depth=1,
                decoder_heads=2).cuda()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3, fused=True)
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, device="cuda")
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = m(on_device(x, torch.zeros(4, dtype=torch.long, device="cuda")))["loss"]
        loss.backward()
        opt.step()
    finally:
        torch.cuda.set_sync_debug_mode(0)


def test_attention_runs_through_sdpa_with_unit_stride_heads():
    from droppos.models import build_vit
    from droppos.pretrain.droppos import DropPos

    m = DropPos(build_vit("tiny", patch_size=8, img_size=32, depth=2), decoder_dim=32, decoder_depth=1,
                decoder_heads=2)
    assert all(blk.attn.fused_attn for blk in m.encoder.blocks)
    seen = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, *a, **kw):
        seen.append(all(t.stride(-1) == 1 for t in (q, k, v)))
        return real(q, k, v, *a, **kw)

    torch.nn.functional.scaled_dot_product_attention = spy
    try:
        m(torch.randn(2, 3, 32, 32))["loss"].backward()
    finally:
        torch.nn.functional.scaled_dot_product_attention = real
    assert seen and all(seen)


def test_torch_compile_of_the_method_on_cpu():
    """The whole DropPos step compiles as one graph (no graph break) and computes the eager loss."""
    from droppos.models import build_vit
    from droppos.pretrain.droppos import DropPos

    torch.manual_seed(0)
    m = DropPos(build_vit("tiny", patch_size=8, img_size=32, depth=1), decoder_dim=32, decoder_depth=1,
                decoder_heads=2)
    imgs = torch.randn(2, 3, 32, 32)
    torch.manual_seed(5)
    eager = m(imgs)["loss"]
    compiled = torch.compile(m, fullgraph=True, backend="aot_eager")
    torch.manual_seed(5)
    loss = compiled(imgs)["loss"]
    loss.backward()
    assert torch.allclose(loss, eager, atol=1e-5)
    assert all(p.grad is not None for p in m.encoder.parameters() if p.requires_grad)


def test_dali_pretraining_resumes_exactly(tmp_path):
    _dali_or_skip()
    from droppos.pretrain.config import PretrainConfig
    from droppos.pretrain.engine import PretrainRun

    data = jpeg_folder(tmp_path / "data", n=16, size=(40, 30))

    def cfg(out, **kw):
        return PretrainConfig(data=str(data), output=str(out), model="tiny", patch_size=4, img_size=16, epochs=2,
                              warmup_epochs=1, batch_size=4, decoder_dim=32, decoder_heads=2, workers=1,
                              data_backend="dali", **kw)

    PretrainRun(cfg(tmp_path / "a")).train()
    assert PretrainRun(cfg(tmp_path / "b", save_every_iters=1, stop_after=5)).train() == {"stopped_at_step": 5}
    PretrainRun(cfg(tmp_path / "b"), resume=True).train()
    a = torch.load(tmp_path / "a" / "encoder.pth", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "b" / "encoder.pth", weights_only=True)["state_dict"]
    assert all(torch.equal(v, b[k]) for k, v in a.items())


@pytest.mark.slow
def test_the_throughput_benchmark_prints_every_pipeline():
    """The benchmark itself runs (tiny: 32 images, one round, through a DataLoader worker); its figures
    are for the README, not asserted here."""
    import subprocess

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "data_throughput.py"
    out = subprocess.run([sys.executable, str(script), "--images", "32", "--rounds", "1", "--loader"],
                         capture_output=True, text=True, timeout=300, check=True).stdout
    rows = {line.split("|")[1].strip() for line in out.splitlines() if line.startswith("| ")}
    assert {"official", "torch", "fast", "device finish (fast, on CPU)"} <= rows, out
    assert "one DataLoader worker" in out
