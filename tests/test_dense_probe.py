"""The frozen dense probe (``segment --config linear*_fmnist``, DINOv2's linear protocol) through mmseg's
real Runner: only BatchNorm + 1x1 conv train; the backbone ends as it started and gives the original
network's features (timm's own model from the same file); the head computes BN then the 1x1 conv on the
concatenated maps (checked with plain torch ops); metrics.json says protocol 'linear'."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("mmseg")

from segmentation_helpers import build_tiny_dataset  # noqa: E402

from droppos.cli import main  # noqa: E402

WIDTH, DEPTH, HEADS = 48, 4, 3
pytestmark = pytest.mark.slow


def _options(iters: int, last: list[int]) -> list[str]:
    opts = {"model.backbone.embed_dims": WIDTH, "model.backbone.num_layers": DEPTH, "model.backbone.num_heads": HEADS,
            "model.backbone.out_indices": last, "model.decode_head.in_channels": [WIDTH] * len(last),
            "model.decode_head.in_index": list(range(len(last))), "model.decode_head.channels": WIDTH * len(last),
            "train_dataloader.batch_size": 2, "train_dataloader.num_workers": 0, "val_dataloader.batch_size": 4,
            "val_dataloader.num_workers": 0, "test_dataloader.num_workers": 0, "train_cfg.max_iters": iters,
            "train_cfg.val_interval": iters, "default_hooks.checkpoint.interval": iters,
            "param_scheduler.0.end": 1, "param_scheduler.1.begin": 1, "param_scheduler.1.end": iters}
    return [f"{k}={'[' + ','.join(map(str, v)) + ']' if isinstance(v, list) else v}" for k, v in opts.items()]


@pytest.fixture(scope="module")
def vit_file(tmp_path_factory):
    from layout_files import randomise
    from safetensors.torch import save_file
    from timm.models.vision_transformer import VisionTransformer

    tmp = tmp_path_factory.mktemp("dense")
    ref = randomise(VisionTransformer(img_size=128, patch_size=16, embed_dim=WIDTH, depth=DEPTH, num_heads=HEADS,
                                      num_classes=0), seed=3)
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(tmp / "vit.safetensors"))
    return tmp, build_tiny_dataset(tmp / "ade"), ref


def test_linear4_trains_its_head_on_the_frozen_original_features(vit_file):
    from droppos.transfer.segmentation.mmcv_ops import ensure_mmcv_ops
    from droppos.transfer.segmentation.safe_load import allow_mmengine_checkpoints

    ensure_mmcv_ops()  # mmcv-lite: before the first mmseg import
    from mmseg.apis import init_model

    tmp, data, ref = vit_file
    out = tmp / "linear4"
    assert main(["segment", "--config", "linear4_vit_fmnist", "--backbone", str(tmp / "vit.safetensors"), "--arch", f"num_heads={HEADS}",
                 "--data", str(data), "--output", str(out), "--cfg-options", *_options(3, [0, 1, 2, 3])]) == 0
    record = json.loads((out / "metrics.json").read_text())
    assert (record["task"], record["protocol"]) == ("segmentation", "linear4") and 0 <= record["metrics"]["mIoU"] <= 100

    allow_mmengine_checkpoints()
    model = init_model(str(out / "linear4_vit_fmnist.py"), str(out / "iter_3.pth"), device="cpu").eval()
    x = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        feats = model.backbone(x)
        # frozen: the trained segmentor's backbone is still the file's network (the last block after its final norm)
        want = ref.eval().forward_intermediates(x, indices=[0, 1, 2, 3], intermediates_only=True, output_fmt="NCHW")
        want[-1] = ref.norm(want[-1].flatten(2).transpose(1, 2)).transpose(1, 2).reshape(want[-1].shape)
        for got, exp in zip(feats, want):
            torch.testing.assert_close(got, exp, atol=1e-4, rtol=1e-4)
        head = model.decode_head
        bn = head.bn
        assert bn.num_batches_tracked.item() == 3 and not torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))
        cat = torch.cat(list(feats), dim=1)
        manual = F.conv2d(F.batch_norm(cat, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps),
                          head.conv_seg.weight, head.conv_seg.bias)
        torch.testing.assert_close(head(feats), manual, atol=1e-5, rtol=1e-5)
    # nothing but the head is in the optimiser's updates: the checkpoint's backbone equals the converted init
    init = torch.load(out / "init" / "backbone.pth", weights_only=True)["model"]
    final = torch.load(out / "iter_3.pth", weights_only=True)["state_dict"]  # mmengine's objects allow-listed above
    backbone = {k: v for k, v in final.items() if k.startswith("backbone.")}
    assert backbone and all(torch.equal(v, init[k]) for k, v in backbone.items() if k in init)
    assert set(final) - set(backbone) == {k for k in final if k.startswith("decode_head.")}  # no neck, no aux head


def test_a_probe_config_without_frozen_backbone_is_one_line(vit_file, capsys):
    tmp, data, _ = vit_file
    rc = main(["segment", "--config", "linear_vit_fmnist", "--backbone", str(tmp / "vit.safetensors"), "--arch", f"num_heads={HEADS}", "--data",
               str(data), "--output", str(tmp / "unfrozen"), "--cfg-options", *_options(2, [3]),
               "frozen_backbone=False"])
    err = capsys.readouterr().err
    assert rc != 0 and "set frozen_backbone=True in the config" in err and "Traceback" not in err


def test_a_generic_backbone_gives_its_last_blocks_or_deepest_stage(vit_file):
    import timm

    from droppos.backbones.generic import dense_plan

    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=6)
    assert dense_plan(vit, maps=4, last=True).indices == [2, 3, 4, 5]
    assert dense_plan(vit, maps=1, last=True).indices == [5]
    resnet = timm.create_model("resnet18", pretrained=False)
    plan = dense_plan(resnet, maps=1, last=True)
    assert plan.strides == [32] and plan.channels == [512]
    tmp, data, _ = vit_file
    out = tmp / "generic"
    assert main(["segment", "--config", "linear_timm_fmnist", "--backbone", "timm:resnet18", "--data", str(data),
                 "--output", str(out), "--cfg-options", "train_dataloader.batch_size=2", "train_dataloader.num_workers=0",
                 "val_dataloader.num_workers=0", "test_dataloader.num_workers=0", "train_cfg.max_iters=2",
                 "train_cfg.val_interval=2", "default_hooks.checkpoint.interval=2", "param_scheduler.0.end=1",
                 "param_scheduler.1.begin=1", "param_scheduler.1.end=2"]) == 0
    assert json.loads((out / "metrics.json").read_text())["protocol"] == "linear"
    from droppos.transfer.segmentation.safe_load import allow_mmengine_checkpoints

    allow_mmengine_checkpoints()
    final = torch.load(out / "iter_2.pth", weights_only=True)["state_dict"]
    assert final["decode_head.conv_seg.weight"].shape[1] == 512  # the deepest stage's width, set by `segment`
