"""Every shipped detection LazyConfig loads, carries the ViTDet recipe, and builds its model."""

from __future__ import annotations

import pytest
from detection_helpers import CONFIG_DIR, TINY

pytest.importorskip("detectron2.modeling.backbone.vit", reason="detectron2 is not installed")
pytestmark = pytest.mark.detectron2

CONFIGS = sorted(p.stem for p in CONFIG_DIR.glob("mask_rcnn_*.py"))
# B and L at 1024 px would take seconds per build at full size: shrink the ViT, keep the rest.
SHRINK = ["model.backbone.net.embed_dim=192", "model.backbone.net.depth=1", "model.backbone.net.num_heads=3",
          "model.backbone.net.window_block_indexes.global_blocks=[0]"]


def load(name: str, opts=()):
    from detectron2.config import LazyConfig

    cfg = LazyConfig.load(str(CONFIG_DIR / f"{name}.py"))
    return LazyConfig.apply_overrides(cfg, list(opts))


VITDET = [c for c in CONFIGS if "vitdet" in c]
GENERIC = [c for c in CONFIGS if "timm" in c]


def test_the_shipped_configs():
    assert VITDET == ["mask_rcnn_vitdet_b_100ep", "mask_rcnn_vitdet_fmnist", "mask_rcnn_vitdet_l_100ep"]
    assert GENERIC == ["mask_rcnn_timm_fpn_b_100ep", "mask_rcnn_timm_fpn_fmnist", "mask_rcnn_timm_plain_b_100ep",
                       "mask_rcnn_timm_plain_fmnist"]


@pytest.mark.parametrize("name", GENERIC)
def test_generic_configs_build_their_backbone(name):
    """Each generic config builds (the COCO ones with their default ViT-B / ConvNeXt-B, random init)."""
    from detectron2.config import instantiate

    cfg = load(name)
    net = instantiate(cfg.model.backbone)
    shapes = net.output_shape()
    assert sorted(shapes) == (["p2", "p3", "p4", "p5", "p6"] if name.endswith("100ep") else ["p2", "p3", "p4", "p5"])
    assert [shapes[k].stride for k in sorted(shapes)] == [4, 8, 16, 32, 64][:len(shapes)]


@pytest.mark.parametrize("name", VITDET)
def test_config_instantiates(name):
    """Model (shrunk), optimizer with layer decay, schedule, and the train/test mappers build."""
    from detectron2.config import instantiate
    from detectron2.modeling import GeneralizedRCNN

    cfg = load(name, TINY if name.endswith("fmnist") else SHRINK)
    model = instantiate(cfg.model)
    assert isinstance(model, GeneralizedRCNN)
    depth = cfg.model.backbone.net.depth
    assert len(model.backbone.net.blocks) == depth
    cfg.optimizer.params.model = model
    opt = instantiate(cfg.optimizer)
    lrs = {round(g["lr"] / cfg.optimizer.lr, 6) for g in opt.param_groups}
    assert max(lrs) == 1.0 and min(lrs) < 1.0  # layer decay reaches the backbone
    sched = instantiate(cfg.lr_multiplier)
    assert sched(0.0) == pytest.approx(1e-3) and sched(0.5) == 1.0 and sched(0.999) == pytest.approx(0.01)
    augs = instantiate(cfg.dataloader.train.mapper.augmentations)
    assert [type(a).__name__ for a in augs] == ["RandomFlip", "ResizeScale", "FixedSizeCrop"]


def test_b_recipe():
    """The hyperparameters of detectron2's projects/ViTDet mask_rcnn_vitdet_b_100ep."""
    from detectron2.config import instantiate

    cfg = load("mask_rcnn_vitdet_b_100ep")
    net = cfg.model.backbone.net
    assert (net.embed_dim, net.depth, net.num_heads, net.patch_size, net.img_size) == (768, 12, 12, 16, 1024)
    assert net.drop_path_rate == 0.1 and net.window_size == 14 and net.use_rel_pos
    assert instantiate(net.window_block_indexes) == [0, 1, 3, 4, 6, 7, 9, 10]
    assert cfg.model.backbone.square_pad == 1024 and tuple(cfg.model.backbone.scale_factors) == (4.0, 2.0, 1.0, 0.5)
    assert cfg.optimizer.lr == 1e-4 and cfg.optimizer.weight_decay == 0.1
    assert cfg.optimizer.params.overrides == {"pos_embed": {"weight_decay": 0.0}}
    decay = instantiate(cfg.optimizer.params.lr_factor_func)
    assert decay("backbone.net.blocks.11.mlp.fc1.weight") == pytest.approx(0.7)
    assert decay("backbone.net.patch_embed.proj.weight") == pytest.approx(0.7 ** 13)
    assert cfg.train.max_iter == 184375 and cfg.train.amp.enabled and cfg.train.ddp.fp16_compression
    assert cfg.dataloader.train.total_batch_size == 64 and cfg.dataloader.train.mapper.recompute_boxes
    lsj = cfg.dataloader.train.mapper.augmentations
    assert (lsj.image_size, lsj.min_scale, lsj.max_scale) == (1024, 0.1, 2.0)
    sched = instantiate(cfg.lr_multiplier)
    at = lambda it: sched(it / 184375)  # noqa: E731
    assert at(0) == pytest.approx(1e-3) and at(250) == pytest.approx(1.0)
    assert at(163888) == 1.0 and at(163889) == pytest.approx(0.1)
    assert at(177545) == pytest.approx(0.1) and at(177546) == pytest.approx(0.01)
    assert cfg.datasets.prefix == "coco_2017" and cfg.dataloader.train.dataset.names == "coco_2017_train"


def test_l_overrides_only_the_backbone_and_decay():
    from detectron2.config import instantiate

    b, l_ = load("mask_rcnn_vitdet_b_100ep"), load("mask_rcnn_vitdet_l_100ep")
    net = l_.model.backbone.net
    assert (net.embed_dim, net.depth, net.num_heads, net.drop_path_rate) == (1024, 24, 16, 0.4)
    assert [i for i in range(24) if i not in instantiate(net.window_block_indexes)] == [5, 11, 17, 23]
    decay = instantiate(l_.optimizer.params.lr_factor_func)
    assert decay("backbone.net.blocks.0.attn.qkv.weight") == pytest.approx(0.8 ** 24)
    assert l_.train.max_iter == b.train.max_iter and l_.optimizer.lr == b.optimizer.lr
    assert l_.dataloader.train.total_batch_size == b.dataloader.train.total_batch_size


def test_schedule_follows_max_iter_override():
    from detectron2.config import instantiate

    sched = instantiate(load("mask_rcnn_vitdet_fmnist", ["train.max_iter=90"]).lr_multiplier)
    assert sched(79 / 90) == 1.0 and sched(80 / 90) == pytest.approx(0.1)  # 8/9 of 90


def test_config_saves_and_reloads(tmp_path):
    from detectron2.config import LazyConfig

    cfg = load("mask_rcnn_vitdet_l_100ep")
    LazyConfig.save(cfg, str(tmp_path / "config.yaml"))
    again = LazyConfig.load(str(tmp_path / "config.yaml"))
    assert again.model.backbone.net.depth == 24 and again.optimizer.params.lr_factor_func.decay_rate == 0.8
    assert not (tmp_path / "config.yaml.pkl").exists()


def test_recipe_helpers():
    from droppos.transfer.detection.recipe import step_milestones, window_block_indexes

    assert step_milestones(184375) == [163889, 177546]
    assert window_block_indexes(4, [1, 3]) == [0, 2]
    with pytest.raises(ValueError, match="outside a ViT of depth 2"):
        window_block_indexes(2, [5])


def test_shipped_names_resolve_and_unknown_names_fail(tmp_path):
    from droppos.transfer.detection.config import resolve_config_file

    assert resolve_config_file("mask_rcnn_vitdet_fmnist").is_file()
    assert resolve_config_file("mask_rcnn_vitdet_b_100ep.py").name == "mask_rcnn_vitdet_b_100ep.py"
    with pytest.raises(ValueError, match="mask_rcnn_vitdet_fmnist"):
        resolve_config_file("mask_rcnn_nope")
