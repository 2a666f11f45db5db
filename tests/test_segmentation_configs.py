"""Every shipped segmentation config loads, holds the published recipe, and builds (tiny override)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("mmseg")

from droppos.transfer.segmentation.config import (  # noqa: E402
    adapt_to_machine,
    config_path,
    load_config,
    parse_cfg_options,
    set_data_root,
    shipped_configs,
)
from droppos.transfer.segmentation.mmcv_ops import ensure_mmcv_ops  # noqa: E402
from segmentation_helpers import HEADS, TINY_MODEL, WIDTH  # noqa: E402

ADE = ["upernet_mae_b16_ade20k_512", "upernet_mae_l16_ade20k_512"]


@pytest.fixture(autouse=True, scope="module")
def _mmcv_ops():
    ensure_mmcv_ops()  # mmcv-lite: before mmseg's models are imported (by the registry, lazily)


GENERIC = ["upernet_timm_fpn_b_ade20k_512", "upernet_timm_fpn_fmnist", "upernet_timm_plain_b_ade20k_512",
           "upernet_timm_plain_fmnist"]


PROBES = ["linear4_vit_fmnist", "linear_timm_fmnist", "linear_vit_fmnist"]  # the frozen dense probes


def test_shipped_configs_are_the_documented():
    assert shipped_configs() == sorted(ADE + ["upernet_vit_fmnist"] + GENERIC + PROBES)
    from droppos.transfer.segmentation import config

    assert all(f"    {name} " in config.__doc__ for name in shipped_configs() if name in PROBES)


@pytest.mark.parametrize("name,protocol", [("linear_vit_fmnist", "linear"), ("linear4_vit_fmnist", "linear4"),
                                           ("linear_timm_fmnist", "linear"), ("upernet_vit_fmnist", "upernet")])
def test_a_probe_config_is_frozen_with_a_bn_head_and_names_its_protocol(name, protocol):
    from droppos.transfer.segmentation.config import protocol_of

    cfg = load_config(name)
    assert protocol_of(name) == protocol
    if protocol != "upernet":
        assert cfg.frozen_backbone is True and cfg.model.decode_head.type == "BNHead"
        assert cfg.model.neck is None and cfg.model.auxiliary_head is None
        assert cfg.model.decode_head.channels == sum(cfg.model.decode_head.in_channels)


@pytest.mark.parametrize("name", GENERIC)
def test_generic_configs_build_and_fit_their_backbone(name):
    """The heads' input channels written in each generic config are those of its default backbone."""
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    from droppos.transfer.segmentation.adapter import fit_heads

    cfg = load_config(name)
    assert fit_heads(cfg) == []  # nothing to adapt: the config already fits its default backbone
    init_default_scope("mmseg")
    backbone = MODELS.build(cfg.model.backbone)
    assert len(backbone.plan.indices) == 4


@pytest.mark.parametrize("name", ADE)
def test_ade20k_configs_hold_the_published_recipe(name):
    cfg = load_config(name)
    large = "l16" in name
    bb = cfg.model.backbone
    assert cfg.model.pretrained is None  # weights only through --init
    assert bb.type == "MAE" and tuple(bb.img_size) == (512, 512) and bb.patch_size == 16
    assert (bb.embed_dims, bb.num_layers, bb.num_heads) == ((1024, 24, 16) if large else (768, 12, 12))
    assert list(bb.out_indices) == ([7, 11, 15, 23] if large else [3, 5, 7, 11])
    assert bb.drop_path_rate == 0.1 and bb.init_values == 1.0
    assert cfg.model.neck.type == "Feature2Pyramid" and list(cfg.model.neck.rescales) == [4, 2, 1, 0.5]
    assert cfg.model.decode_head.type == "UPerHead" and cfg.model.decode_head.num_classes == 150
    assert cfg.model.auxiliary_head.type == "FCNHead" and cfg.model.auxiliary_head.loss_decode.loss_weight == 0.4
    assert cfg.model.test_cfg.mode == "slide" and tuple(cfg.model.test_cfg.crop_size) == (512, 512)
    ow = cfg.optim_wrapper
    assert ow.type == "AmpOptimWrapper" and ow.constructor == "LayerDecayOptimizerConstructor"
    assert ow.optimizer.type == "AdamW" and ow.optimizer.lr == 1e-4 and ow.optimizer.weight_decay == 0.05
    assert ow.paramwise_cfg.layer_decay_rate == 0.65 and ow.paramwise_cfg.num_layers == bb.num_layers
    warm, poly = cfg.param_scheduler
    assert warm.type == "LinearLR" and warm.end == 1500 and poly.type == "PolyLR" and poly.begin == 1500
    assert cfg.train_cfg.max_iters == 160000 and poly.end == 160000
    assert cfg.train_dataloader.batch_size == 2  # x 8 GPUs = 16
    assert cfg.train_dataloader.dataset.type == "ADE20KDataset"
    assert cfg.get("fp16") is None  # mmseg 1.x ignores it; AMP is the wrapper


def test_machine_adaptation_and_data_root():
    cfg = load_config("upernet_mae_b16_ade20k_512", parse_cfg_options(["train_dataloader.num_workers=0"]))
    set_data_root(cfg, "/data/ADEChallengeData2016")
    changes = adapt_to_machine(cfg, cuda=False)
    assert cfg.optim_wrapper.type == "OptimWrapper" and "loss_scale" not in cfg.optim_wrapper
    assert cfg.env_cfg.dist_cfg.backend == "gloo" and any("AmpOptimWrapper" in c for c in changes)
    assert cfg.train_dataloader.persistent_workers is False
    assert {cfg[k].dataset.data_root for k in ("train_dataloader", "val_dataloader", "test_dataloader")} == {
        "/data/ADEChallengeData2016"}
    gpu = load_config("upernet_mae_b16_ade20k_512")
    adapt_to_machine(gpu, cuda=True)
    assert gpu.optim_wrapper.type == "AmpOptimWrapper"


def test_unknown_config_names_the_shipped_ones():
    with pytest.raises(ValueError, match="upernet_vit_fmnist"):
        config_path("upernet_nope")


def test_cfg_options_keys_must_exist_in_the_config():
    """A typo is one line naming the closest key; an argument of the built class is accepted."""
    with pytest.raises(ValueError, match=r"--cfg-options train_cfg.max_iterz: the config has no 'max_iterz' under "
                                         r"'train_cfg'; did you mean train_cfg.max_iters\?"):
        load_config("upernet_vit_fmnist", {"train_cfg.max_iterz": 3})
    with pytest.raises(ValueError, match=r"no 'embed_dimz' under 'model.backbone'; did you mean model.backbone.embed_dims"):
        load_config("upernet_vit_fmnist", {"model.backbone.embed_dimz": 8})
    cfg = load_config("upernet_vit_fmnist", {"param_scheduler.0.end": 5, "model.backbone.final_norm": True})
    assert cfg.param_scheduler[0].end == 5 and cfg.model.backbone.final_norm is True


def _tiny(name: str) -> dict:
    opts = dict(TINY_MODEL)
    bb = load_config(name).model.backbone
    opts["model.backbone.out_indices"] = [i for i in bb.out_indices]
    opts["model.backbone.num_layers"] = bb.num_layers  # keep the depth: layer decay is per block
    opts["optim_wrapper.paramwise_cfg.num_layers"] = bb.num_layers
    if "fmnist" not in name:
        opts["model.decode_head.num_classes"] = 150
        opts["model.backbone.img_size"] = (64, 64)
        opts["model.test_cfg.crop_size"] = (64, 64)
        opts["model.test_cfg.stride"] = (48, 48)
    return opts


@pytest.mark.parametrize("name", ADE + ["upernet_vit_fmnist"])
def test_every_config_builds_runs_and_decays_lr_per_layer(name):
    from mmengine.model import revert_sync_batchnorm
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    cfg = load_config(name, _tiny(name))
    adapt_to_machine(cfg, cuda=False)
    init_default_scope("mmseg")
    model = revert_sync_batchnorm(MODELS.build(cfg.model))
    model.init_weights()
    side = cfg.model.backbone.img_size[0]
    model.eval()
    with torch.no_grad():
        logits = model(torch.randn(1, 3, side, side), mode="tensor")
    assert logits.shape == (1, cfg.model.decode_head.num_classes, side // 4, side // 4)
    # layer-wise decay: block i's lr = lr * 0.65 ** (num_layers + 1 - (i + 1))
    ow = build_optim_wrapper(model, cfg.optim_wrapper)
    depth = cfg.model.backbone.num_layers
    lr_of = {}
    for group in ow.optimizer.param_groups:
        for p in group["params"]:
            lr_of[id(p)] = group["lr"]
    named = dict(model.named_parameters())
    base = cfg.optim_wrapper.optimizer.lr
    assert lr_of[id(named["backbone.layers.0.attn.qkv.weight"])] == pytest.approx(base * 0.65 ** depth)
    assert lr_of[id(named[f"backbone.layers.{depth - 1}.attn.qkv.weight"])] == pytest.approx(base * 0.65)
    assert lr_of[id(named["backbone.patch_embed.projection.weight"])] == pytest.approx(base * 0.65 ** (depth + 1))
    assert lr_of[id(named["decode_head.conv_seg.weight"])] == pytest.approx(base)
    assert model.backbone.embed_dims == WIDTH and model.backbone.layers[0].attn.num_heads == HEADS
