"""What a planned run will cost on a cluster: fvcore FLOPs of its whole model at its real input, times the
images of its real schedule, at a stated fraction of a named GPU's peak.

FLOPs are counted by fvcore (a fused multiply-add is one operation, fvcore's convention; doubled here to
count floating-point operations as GPU peaks do) on one image at the run's real size:

* ``pretrain``: the pretraining method's forward (DropPos's or MAE's encoder on the visible patches with
  their decoders, DropPos's attentive full forward included; supervised: the classifier);
* ``classify``/``probe``: the backbone's pooled feature (the head is negligible); the run's metrics.json;
* ``detect``: the whole Mask R-CNN in inference (detectron2's ``FlopCountAnalysis``);
* ``segment``: the whole segmentor on one crop (UperNet: backbone, neck, decode and auxiliary heads; a
  frozen dense probe: backbone and its BatchNorm + 1x1 head).

A training step costs 3 forwards (forward + backward); a frozen encoder (linear probing, k-NN, probes,
the frozen dense probes ``linear``/``linear4``, whose head is negligible) one. Images per run: the real
schedule (epochs x the data set's train images, or iterations x the global batch) plus, for fine-tuning and linear probing, one evaluation of the validation images per
epoch. Data-set sizes are the public ones (ImageNet-1K 1,281,167 / 50,000; COCO 2017 118,287 /
5,000; ADE20K 20,210 / 2,000).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

#: dense bf16 peak FLOP/s of the GPUs an estimate can be stated for (NVIDIA's data sheets, SXM)
GPUS = {"A100": 312e12, "H100": 989e12, "H200": 989e12, "V100": 125e12}
#: segment protocols whose backbone is frozen (``droppos.transfer.segmentation.linear``): one forward per image
FROZEN_SEGMENT = ("linear", "linear4")
#: (train, val) images of the public data sets
DATASETS = {"imagenet": (1_281_167, 50_000), "coco": (118_287, 5_000), "ade20k": (20_210, 2_000)}


def gpu_hours(gflops_per_image: float | None, images: float | None, gpu: str, mfu: float) -> float | None:
    """GPU-hours of ``images`` forwards-equivalent of ``gflops_per_image`` (fvcore GFLOPs: multiply-adds)."""
    if gflops_per_image is None or images is None:
        return None
    flops = 2 * gflops_per_image * 1e9 * images
    return flops / (GPUS[gpu] * mfu) / 3600


def schedule_images(kind: str, protocol: str | None, schedule: dict | None, dataset: str, global_batch: int | None,
                    options: dict) -> tuple[float | None, str]:
    """(forward-equivalent images of the real schedule, how they were counted)."""
    train, val = DATASETS.get(dataset, (None, None))
    schedule = schedule or {}
    if kind == "pretrain" or (kind == "classify" and protocol == "finetune"):
        epochs = schedule.get("epochs")
        if epochs is None or train is None:
            return None, f"{dataset}: size unknown"
        extra = epochs * val if kind == "classify" else 0
        return 3 * epochs * train + extra, f"3 x {epochs} ep x {train:,}" + (f" + {epochs} x {val:,} val" if extra else "")
    if kind == "classify" and protocol == "linear":
        epochs = schedule.get("epochs")
        if epochs is None or train is None:
            return None, f"{dataset}: size unknown"
        return epochs * (train + val), f"{epochs} ep x ({train:,} + {val:,}) frozen"
    if kind == "classify":  # knn
        return (train + val, f"{train:,} + {val:,} frozen") if train else (None, f"{dataset}: size unknown")
    if kind == "probe":
        n = int(options.get("train_images", 1000)) + int(options.get("val_images", 500))
        return 2 * n, f"2 x {n:,} frozen"
    iters = schedule.get("iters")
    if iters is None or global_batch is None:
        return None, "schedule unknown"
    if kind == "segment" and protocol in FROZEN_SEGMENT:
        return iters * global_batch, f"{iters:,} it x {global_batch} frozen"
    return 3 * iters * global_batch, f"3 x {iters:,} it x {global_batch}"


# ---------------------------------------------------------------------------------------- whole-model FLOPs
def _fvcore(model: torch.nn.Module, inputs: tuple) -> float | None:
    from fvcore.nn import FlopCountAnalysis

    from droppos.utils.cost import _sdpa_flops

    counter = FlopCountAnalysis(model, inputs)
    counter.set_op_handle("aten::scaled_dot_product_attention", _sdpa_flops)
    counter.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return counter.total() / 1e9


def pretrain_gflops(config: dict) -> float | None:
    """GFLOPs of one image through the pretraining method (its ``config.json``)."""
    from droppos.models.vit import build_vit
    from droppos.pretrain.build import build_method
    from droppos.pretrain.config import PretrainConfig

    cfg = PretrainConfig(**{k: v for k, v in config.items() if k in PretrainConfig.__dataclass_fields__})
    encoder = build_vit(cfg.model, patch_size=cfg.patch_size, img_size=cfg.img_size)
    method = build_method(cfg, encoder, num_classes=1000).eval()
    imgs = torch.zeros(1, 3, cfg.img_size, cfg.img_size)
    with torch.no_grad():
        return _fvcore(method, (imgs, torch.zeros(1, dtype=torch.long)))


def detection_gflops(config_file: str, overrides: list[str]) -> float | None:
    """GFLOPs of one image at the config's size through the whole detector (inference)."""
    from detectron2.config import LazyConfig, instantiate
    from detectron2.utils.analysis import FlopCountAnalysis

    cfg = LazyConfig.apply_overrides(LazyConfig.load(config_file), overrides)
    cfg.train.device = "cpu"
    model = instantiate(cfg.model).eval()
    size = int(cfg.model.backbone.get("square_pad") or 1024)
    with torch.no_grad():
        counter = FlopCountAnalysis(model, [{"image": torch.zeros(3, size, size), "height": size, "width": size}])
        counter.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        return counter.total() / 1e9


class _Tensor(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model._forward(x)


def segmentation_gflops(config: str, options: dict) -> float | None:
    """GFLOPs of one training crop through the whole segmentor (backbone, neck, heads)."""
    from mmseg.registry import MODELS

    from droppos.transfer.segmentation.config import load_config
    from droppos.transfer.segmentation.mmcv_ops import ensure_mmcv_ops

    ensure_mmcv_ops()
    from mmseg.utils import register_all_modules

    register_all_modules()
    cfg = load_config(config, options)
    cfg.model.pop("pretrained", None)
    model = MODELS.build(cfg.model).eval()
    h, w = tuple(cfg.get("crop_size") or (512, 512))
    with torch.no_grad():
        return _fvcore(_Tensor(model), (torch.zeros(1, 3, h, w),))


def metrics_gflops(folder: Path) -> float | None:
    """The backbone GFLOPs a run wrote in its metrics.json (classification, probes)."""
    try:
        return json.loads((folder / "metrics.json").read_text())["cost"]["GFLOPs"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
