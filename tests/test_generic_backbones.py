"""Generic backbones (``timm:<model>[:<weights>]`` and registered plug-ins) through classification.

timm's own tiny test models (``test_vit``, ``test_convnext``, ``test_resnet``) stand for the
families; weights loaded from a file are compared tensor by tensor with the model they came from.
"""

from __future__ import annotations

import json

import pytest
import timm
import torch
import torch.nn as nn
from imagefolders import make_colour_imagefolder

from droppos.backbones.generic import load_generic, register
from droppos.cli import main


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_colour_imagefolder(tmp_path_factory.mktemp("imgs"))


def run(protocol, backbone, data, out, *extra):
    return main(["classify", protocol, "--backbone", backbone, "--data", str(data), "--output", str(out),
                 "--workers", "0", "--batch-size", "8", "--img-size", "32", *extra])


def assert_linear_features_are_the_models(run_dir, model: nn.Module, data) -> None:
    """The features a linear run trained its head on are ``model``'s pooled features of the validation images
    (torchvision's ImageFolder through timm's evaluation transform at the run's 32 px, 0.875 crop): the weights
    the run used are the file's, not a fresh init, and the pooling is the model's own."""
    from timm.data import create_transform
    from torchvision.datasets import ImageFolder

    cached = torch.load(run_dir / "features.pth", weights_only=True)
    ds = ImageFolder(str(data / "val"), create_transform(input_size=32, is_training=False, interpolation="bicubic",
                                                         crop_pct=0.875))
    x = torch.stack([img for img, _ in ds])
    with torch.no_grad():
        want = model.eval().forward_head(model.forward_features(x), pre_logits=True)
    assert cached["val_y"].tolist() == [y for _, y in ds.samples]
    torch.testing.assert_close(cached["val_x"].float(), want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("model", ["test_vit", "test_convnext", "test_resnet"])
def test_timm_models_run_knn_linear_and_finetune(tmp_path, data, model):
    ref = timm.create_model(model, num_classes=0)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn_like(p, generator=torch.Generator().manual_seed(p.numel())) * 0.1)
    torch.save(ref.state_dict(), tmp_path / "w.pth")
    src = f"timm:{model}:{tmp_path / 'w.pth'}"
    assert run("knn", src, data, tmp_path / "knn", "--k", "3") == 0
    assert run("linear", src, data, tmp_path / "lin", "--epochs", "2", "--lr", "0.1") == 0
    assert run("finetune", src, data, tmp_path / "ft", "--epochs", "1", "--warmup-epochs", "0", "--mixup", "0",
               "--cutmix", "0") == 0
    for name in ("knn", "lin", "ft"):
        m = json.loads((tmp_path / name / "metrics.json").read_text())
        assert m["backbone"]["arch"] == model and 0 <= m["metrics"]["top1"] <= 100
    assert m["backbone"]["id"] == f"{model}-w"  # the model and the file's name, not the file's whole path
    assert_linear_features_are_the_models(tmp_path / "lin", ref, data)


def test_weights_file_loads_through_timms_filter_and_lands(tmp_path):
    ref = timm.create_model("test_resnet", num_classes=7)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn_like(p))
    torch.save({"state_dict": ref.state_dict(), "epoch": 3}, tmp_path / "r.pth")
    bb = load_generic(f"timm:test_resnet:{tmp_path / 'r.pth'}", name="mine", method="supervised", epochs=3)
    enc = bb.encoder()
    own = enc.state_dict()
    for k, v in ref.state_dict().items():
        if not k.startswith("fc."):
            assert torch.equal(own[k], v), k
    assert any("classifier head" in n for n in bb.notes)
    assert bb.backbone["id"] == "mine" and bb.backbone["method"] == "supervised" and bb.backbone["sha256"]
    # without --name: the model and the file's name, not the file's whole path (tmp_path's folders)
    assert load_generic(f"timm:test_resnet:{tmp_path / 'r.pth'}").backbone["id"] == "test_resnet-r"
    x = torch.randn(2, 3, 32, 32)
    ref.eval(), enc.eval()
    torch.testing.assert_close(enc.forward_head(enc.forward_features(x), pre_logits=True),
                               ref.forward_head(ref.forward_features(x), pre_logits=True))


def test_bad_generic_inputs_are_one_line(tmp_path, data, capsys):
    torch.save(timm.create_model("test_convnext").state_dict(), tmp_path / "convnext.pth")
    cases = [
        (["timm:test_resnett"], 2, "timm has no model of that name; closest: test_resnet"),
        ([f"timm:test_resnet:{tmp_path / 'convnext.pth'}"], 1, "the weights do not fit the model"),
        (["timm:test_resnet", "--arch", "num_heads=2"], 2, "--arch applies to checkpoint files"),
    ]
    for extra, code, message in cases:
        assert run("knn", extra[0], data, tmp_path / "o", *extra[1:]) == code
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    assert main(["probe", "position", "--backbone", "timm:test_convnext", "--data", str(data), "--output",
                 str(tmp_path / "p"), "--img-size", "32"]) == 2
    assert "ConvNeXt adds no absolute position table to patch tokens" in capsys.readouterr().err


class TinyEncoder(nn.Module):
    """The README's plug-in: a stride-16 convolution in timm's contract (pooled feature, feature maps)."""

    def __init__(self, num_classes: int = 0, width: int = 16):
        super().__init__()
        self.num_features, self.feature_info = width, [dict(num_chs=width, reduction=16, module="stem")]
        self.stem = nn.Sequential(nn.Conv2d(3, width, 16, 16), nn.GELU())
        self.head = nn.Linear(width, num_classes) if num_classes else nn.Identity()

    def forward_features(self, x):
        return self.stem(x)

    def forward_head(self, x, pre_logits: bool = False):
        return x.mean(dim=(2, 3)) if pre_logits else self.head(x.mean(dim=(2, 3)))

    def forward_intermediates(self, x, indices=None, intermediates_only=True, output_fmt="NCHW"):
        return [self.stem(x)]

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


@pytest.mark.slow
@pytest.mark.detectron2
@pytest.mark.mmseg
def test_a_registered_plugin_runs_through_every_task(tmp_path, data):
    pytest.importorskip("detectron2")
    pytest.importorskip("mmseg")
    from detection_helpers import build_tiny_coco
    from segmentation_helpers import build_tiny_dataset

    register("tiny_encoder", TinyEncoder)
    plugin = TinyEncoder()
    torch.save(plugin.state_dict(), tmp_path / "tiny.pth")
    src = f"tiny_encoder:{tmp_path / 'tiny.pth'}"
    assert run("knn", src, data, tmp_path / "knn", "--k", "3") == 0
    assert run("linear", src, data, tmp_path / "lin", "--epochs", "2", "--lr", "0.1") == 0
    assert run("finetune", src, data, tmp_path / "ft", "--epochs", "1", "--warmup-epochs", "0", "--mixup", "0",
               "--cutmix", "0", "--layer-decay", "1.0") == 0
    m = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    assert m["backbone"]["arch"] == "tiny_encoder" and m["backbone"]["sha256"]
    assert_linear_features_are_the_models(tmp_path / "lin", plugin, data)
    coco = build_tiny_coco(tmp_path / "coco", train=2, val=1)
    assert main(["detect", "--config-file", "mask_rcnn_timm_plain_fmnist", "--backbone", src, "--data", str(coco),
                 "--output", str(tmp_path / "det"), "dataloader.train.total_batch_size=2", "train.max_iter=1"]) == 0
    ade = build_tiny_dataset(tmp_path / "ade", train=2, val=1)
    assert main(["segment", "--config", "upernet_timm_plain_fmnist", "--backbone", src, "--data", str(ade),
                 "--output", str(tmp_path / "seg"), "--cfg-options", "train_dataloader.batch_size=2",
                 "train_dataloader.num_workers=0", "val_dataloader.num_workers=0", "train_cfg.max_iters=1",
                 "train_cfg.val_interval=1"]) == 0
    assert main(["probe", "order", "--backbone", src, "--data", str(data), "--output", str(tmp_path / "order"),
                 "--workers", "0", "--img-size", "64", "--train-images", "12", "--val-images", "6", "--epochs", "1",
                 "--head-batch-size", "8"]) == 0
    for run_dir in ("det", "seg", "order"):
        assert json.loads((tmp_path / run_dir / "metrics.json").read_text())["backbone"]["arch"] == "tiny_encoder"


def weights_file(model: str, path):
    """A timm test model with perturbed weights saved at ``path`` (128-px input), and its source."""
    ref = timm.create_model(model, num_classes=0, **({"img_size": 128} if "vit" in model else {}))
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn_like(p))
    torch.save(ref.state_dict(), path)
    return ref, f"timm:{model}:{path}"


# ---------------------------------------------------------------------------------------- detection
@pytest.mark.detectron2
@pytest.mark.slow
@pytest.mark.parametrize("config, model", [("mask_rcnn_timm_plain_fmnist", "test_vit"),
                                           ("mask_rcnn_timm_fpn_fmnist", "test_convnext")])
def test_generic_backbones_train_and_resume_in_detectron2(tmp_path, config, model, capsys):
    pytest.importorskip("detectron2")
    from detection_helpers import build_tiny_coco

    ref, src = weights_file(model, tmp_path / "w.pth")
    coco = build_tiny_coco(tmp_path / "coco", train=2, val=1)
    base = ["detect", "--config-file", config, "--data", str(coco), "--output", str(tmp_path / "det")]
    run_opts = ["dataloader.train.total_batch_size=2", "train.checkpointer.period=1"]
    assert main([*base, "--backbone", src, "--name", "mine", *run_opts, "train.max_iter=1"]) == 0
    assert "init: generic backbone" in capsys.readouterr().out
    record = json.loads((tmp_path / "det" / "metrics.json").read_text())
    assert record["backbone"]["id"] == "mine" and record["backbone"]["arch"] == model
    # the weights landed in detectron2's model: compare tensor by tensor before training moved them
    from detectron2.config import LazyConfig, instantiate
    from droppos.transfer.detection.configs import __file__ as configs_init

    cfg = LazyConfig.load(configs_init.replace("__init__.py", f"{config}.py"))
    key = "net" if "net" in cfg.model.backbone else "bottom_up"
    cfg.model.backbone[key].source = src
    built = instantiate(cfg.model).backbone
    inner = (built.net if key == "net" else built.bottom_up).model.state_dict()
    for k, v in ref.state_dict().items():
        assert torch.equal(inner[k], v), k
    assert main([*base, "--resume", *run_opts, "train.max_iter=2"]) == 0  # the source comes from the run's init.json
    assert json.loads((tmp_path / "det" / "metrics.json").read_text())["iterations"] == 2


# ---------------------------------------------------------------------------------------- segmentation
@pytest.mark.mmseg
@pytest.mark.slow
@pytest.mark.parametrize("config, model", [("upernet_timm_plain_fmnist", "test_vit"),
                                           ("upernet_timm_fpn_fmnist", "test_resnet")])
def test_generic_backbones_train_and_resume_in_mmseg(tmp_path, config, model):
    pytest.importorskip("mmseg")
    from segmentation_helpers import build_tiny_dataset

    ref, src = weights_file(model, tmp_path / "w.pth")
    data = build_tiny_dataset(tmp_path / "ade", train=2, val=1)
    opts = ["train_dataloader.batch_size=2", "train_dataloader.num_workers=0", "val_dataloader.num_workers=0",
            "default_hooks.logger.interval=1"]
    base = ["segment", "--config", config, "--data", str(data), "--output", str(tmp_path / "seg")]
    assert main([*base, "--backbone", src, "--name", "mine", "--cfg-options", *opts, "train_cfg.max_iters=1",
                 "train_cfg.val_interval=1", "default_hooks.checkpoint.interval=1"]) == 0
    record = json.loads((tmp_path / "seg" / "metrics.json").read_text())
    assert record["backbone"]["id"] == "mine" and record["backbone"]["arch"] == model
    assert "generic backbone: weights loaded when it was built" in record["load_report"]["notes"]
    # the weights landed in mmseg's backbone: compare tensor by tensor right after building it
    import droppos.transfer.segmentation.generic  # noqa: F401 - registers TimmGenericBackbone
    from droppos.transfer.segmentation.safe_load import allow_mmengine_checkpoints
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    init_default_scope("mmseg")
    built = MODELS.build(dict(type="TimmGenericBackbone", source=src, img_size=(128, 128)))
    built.init_weights()
    own = built.model.state_dict()
    for k, v in ref.state_dict().items():
        assert torch.equal(own[k], v), k
    allow_mmengine_checkpoints()
    # 1 iteration at warm-up lr barely moves the weights: the file's weights were in the model
    trained = torch.load(tmp_path / "seg" / "iter_1.pth")["state_dict"]
    for k, v in ref.named_parameters():  # (BatchNorm's running statistics do move: buffers are left out)
        torch.testing.assert_close(trained[f"backbone.model.{k}"], v.detach(), atol=1e-3, rtol=0)
    assert main([*base, "--resume", "--cfg-options", *opts, "train_cfg.max_iters=2", "train_cfg.val_interval=2",
                 "default_hooks.checkpoint.interval=1"]) == 0
    assert json.loads((tmp_path / "seg" / "metrics.json").read_text())["iterations"] == 2


# ---------------------------------------------------------------------------------------- families x tasks
#: tiny versions of the families (timm's own classes with small kwargs), registered as plug-ins so that
#: the generic path builds them exactly as it builds `timm:<name>`; ConvNeXt and ResNet are timm's tests
TINY_FAMILIES = {
    "tiny_dinov2_reg": ("vit_small_patch14_reg4_dinov2", dict(depth=2, embed_dim=64, num_heads=2), "plain", 112),
    "tiny_eva02": ("eva02_tiny_patch14_224", dict(depth=2, embed_dim=64, num_heads=2), "plain", 112),
    "tiny_clip": ("vit_base_patch16_clip_224", dict(depth=2, embed_dim=64, num_heads=2), "plain", 128),
    "tiny_beit": ("beit_base_patch16_224", dict(depth=2, embed_dim=64, num_heads=2), "plain", 128),
    "tiny_swin": ("swin_tiny_patch4_window7_224", dict(depths=(1, 1, 1, 1), embed_dim=24, num_heads=(1, 1, 1, 1),
                                                       window_size=4), "fpn", 128),
    "timm:test_convnext": (None, None, "fpn", 128),
    "timm:test_resnet": (None, None, "fpn", 128),
}


def _source(family: str) -> str:
    name, kwargs, _, _ = TINY_FAMILIES[family]
    if name is None:
        return family
    register(family, lambda num_classes=0, drop_path_rate=0.0, img_size=None, name=name, kw=kwargs:
             timm.create_model(name, num_classes=num_classes, drop_path_rate=drop_path_rate,
                               **({"img_size": img_size} if img_size else {}), **kw))
    return f"{family}:"


@pytest.mark.slow
@pytest.mark.detectron2
@pytest.mark.mmseg
@pytest.mark.parametrize("family", sorted(TINY_FAMILIES))
def test_every_family_runs_every_task(tmp_path, data, family):
    pytest.importorskip("detectron2")
    pytest.importorskip("mmseg")
    from detection_helpers import build_tiny_coco
    from segmentation_helpers import build_tiny_dataset

    src, (_, _, kind, size) = _source(family), TINY_FAMILIES[family]
    assert main(["classify", "knn", "--backbone", src, "--data", str(data), "--output", str(tmp_path / "knn"),
                 "--workers", "0", "--img-size", str(size), "--k", "3"]) == 0
    assert main(["classify", "finetune", "--backbone", src, "--data", str(data), "--output", str(tmp_path / "ft"),
                 "--workers", "0", "--img-size", str(size), "--batch-size", "8", "--epochs", "1", "--warmup-epochs",
                 "0", "--mixup", "0", "--cutmix", "0", "--aa", ""]) == 0
    coco = build_tiny_coco(tmp_path / "coco", train=2, val=1)
    assert main(["detect", "--config-file", f"mask_rcnn_timm_{kind}_fmnist", "--backbone", src, "--data", str(coco),
                 "--output", str(tmp_path / "det"), "dataloader.train.total_batch_size=2", "train.max_iter=1"]) == 0
    ade = build_tiny_dataset(tmp_path / "ade", train=2, val=1)
    assert main(["segment", "--config", f"upernet_timm_{kind}_fmnist", "--backbone", src, "--data", str(ade),
                 "--output", str(tmp_path / "seg"), "--cfg-options", "train_dataloader.batch_size=2",
                 "train_dataloader.num_workers=0", "val_dataloader.num_workers=0", "train_cfg.max_iters=1",
                 "train_cfg.val_interval=1"]) == 0
    probe = ["--data", str(data), "--workers", "0", "--img-size", str(size), "--train-images", "12", "--val-images",
             "6", "--epochs", "1", "--head-batch-size", "8"]
    assert main(["probe", "order", "--backbone", src, "--output", str(tmp_path / "order"), *probe]) == 0
    tokens = family in ("tiny_dinov2_reg", "tiny_clip")  # timm ViTs with an absolute position table
    assert main(["probe", "position", "--backbone", src, "--output", str(tmp_path / "pos"), *probe]) == (0 if tokens else 2)
    for run in ("knn", "ft", "det", "seg", "order") + (("pos",) if tokens else ()):
        assert json.loads((tmp_path / run / "metrics.json").read_text())["status"] == "finished"


# ---------------------------------------------------------------------------------------- probes
def test_the_jigsaw_of_a_vit_is_its_token_shuffle():
    """Cells of the patch size: the image jigsaw gives a ViT the token shuffle x_pi(i) + p_i exactly."""
    from droppos.transfer.probes import tokens
    from droppos.transfer.probes.generic import TokenView, jigsaw

    vit = timm.create_model("test_vit", num_classes=0, img_size=32).eval()
    view = TokenView(vit)
    imgs = torch.randn(2, 3, 32, 32)
    perm = tokens.permutations(2, view.num_patches, torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = tokens.encode(view, imgs, "shuffle_content", perm)
        b = view.forward_features(jigsaw(imgs, perm, 16))
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(view.forward_features(imgs)[:, 1:], vit.forward_features(imgs)[:, 1:])


@pytest.mark.parametrize("family", ["tiny_dinov2_reg", "tiny_clip", "timm:test_convnext"])
def test_probes_on_generic_backbones(tmp_path, data, family):
    src = _source(family)
    opts = ["--data", str(data), "--workers", "0", "--img-size", "112" if "dinov2" in family else "64",
            "--train-images", "12", "--val-images", "6", "--epochs", "2", "--head-batch-size", "8"]
    assert main(["probe", "order", "--backbone", src, "--output", str(tmp_path / "order"), *opts]) == 0
    m = json.loads((tmp_path / "order" / "metrics.json").read_text())
    assert m["pool"] == "feature" and 0 <= m["metrics"]["cos_dist"] <= 2
    if "convnext" in family:
        return
    assert main(["probe", "position", "--backbone", src, "--output", str(tmp_path / "pos"), *opts]) == 0
    m = json.loads((tmp_path / "pos" / "metrics.json").read_text())
    assert m["num_tokens"] == (64 if "dinov2" in family else 16) and 0 <= m["metrics"]["top1"] <= 100
