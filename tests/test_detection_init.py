"""Initial weights of the detector: converted on the fly or read as is, loaded with a report.

The tensors in the built detectron2 model are compared with the source encoder's, so a weight
that silently stays at its random init fails the test.
"""

from __future__ import annotations

import pytest
import torch
from pos_reference import reference_resample
from detection_helpers import CONFIG_DIR, DEPTH, FMNIST, TINY, WIDTH, write_encoder

pytest.importorskip("detectron2.modeling.backbone.vit", reason="detectron2 is not installed")
pytestmark = pytest.mark.detectron2


def tiny_cfg(extra=()):
    from detectron2.config import LazyConfig

    cfg = LazyConfig.load(str(CONFIG_DIR / f"{FMNIST}.py"))
    return LazyConfig.apply_overrides(cfg, TINY + list(extra))


def build(cfg):
    from detectron2.config import instantiate

    return instantiate(cfg.model)


def resolve(src, cfg, **kw):
    from droppos.transfer.detection.adapter import target

    from droppos.backbones import into_engine
    from droppos.backbones.options import BackboneOptions

    return into_engine.resolve(BackboneOptions(backbone=str(src), **kw), target(cfg))


def load_file(model, path, cfg, **kw):
    from droppos.transfer.detection.adapter import target

    from droppos.backbones import into_engine

    return into_engine.load_file(model, path, target(cfg), **kw)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    path = tmp_path_factory.mktemp("enc") / "encoder.pth"
    return path, write_encoder(path)


def test_converted_weights_land_in_the_model(encoder, tmp_path):
    from droppos.backbones import into_engine

    path, enc = encoder
    cfg = tiny_cfg()
    init = resolve(path, cfg)
    assert init.kind == "converted" and init.record["method"] == "droppos"
    saved = into_engine.save(tmp_path, init)
    assert saved == tmp_path / "init" / "backbone.pth" and into_engine.read(tmp_path)["backbone"] == init.record
    model = build(cfg)
    before = model.backbone.net.blocks[0].attn.qkv.weight.clone()
    rep = load_file(model, saved, cfg)
    net, src = model.backbone.net, enc.state_dict()
    assert not torch.equal(before, net.blocks[0].attn.qkv.weight)
    for i in range(DEPTH):
        for name in ("norm1.weight", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "mlp.fc1.weight",
                     "mlp.fc2.bias", "norm2.bias"):
            assert torch.equal(net.state_dict()[f"blocks.{i}.{name}"], src[f"blocks.{i}.{name}"]), name
    assert torch.equal(net.patch_embed.proj.weight, src["patch_embed.proj.weight"])
    # the 8x8 table of the 64-px pretraining, resampled to the config's 128-px grid (16x16), [cls] row kept
    torch.testing.assert_close(net.pos_embed.data, reference_resample(src["pos_embed"], (8, 8), (16, 16)))
    assert net.pos_embed.shape == (1, 1 + 16 * 16, WIDTH)
    assert rep.ok and len([k for k in rep.loaded if k.startswith("backbone.net.")]) == 2 + 1 + 12 * DEPTH
    assert sorted(rep.recipe_init) == sorted(f"backbone.net.blocks.{i}.attn.rel_pos_{a}" for i in range(DEPTH) for a in "hw")
    assert any(k.startswith("roi_heads.") for k in rep.random_init) and not rep.missing and not rep.unmapped
    assert any("ViTDet relative position tables" in line for line in rep.lines())


def test_a_ready_detectron2_file_is_used_as_is(encoder, tmp_path):
    from droppos.backbones.convert import convert

    path, enc = encoder
    convert(path, "detectron2", tmp_path / "d2.pth", img_size=128)
    cfg = tiny_cfg()
    init = resolve(tmp_path / "d2.pth", cfg)
    assert init.kind == "native" and init.source == str(tmp_path / "d2.pth")
    assert init.record["method"] == "droppos"  # from the converter's sidecar json
    model = build(cfg)
    assert load_file(model, tmp_path / "d2.pth", cfg).ok
    assert torch.equal(model.backbone.net.blocks[1].mlp.fc1.weight, enc.state_dict()["blocks.1.mlp.fc1.weight"])


def test_scratch_loads_nothing():
    init = resolve("scratch", tiny_cfg())
    assert init.state_dict is None and init.kind == "scratch" and init.record["method"] == "scratch"


def test_wrong_width_is_refused_before_conversion(tmp_path):
    from droppos.transfer.detection.adapter import InitError

    write_encoder(tmp_path / "wide.pth", width=96, heads=2)
    with pytest.raises(InitError, match=r"embed_dim=96 but the config builds embed_dim=64.*model.backbone.net.embed_dim=96"):
        resolve(tmp_path / "wide.pth", tiny_cfg())


def test_following_the_patch_size_advice_loads(tmp_path):
    """The override advice for another patch size includes the pyramid's scale factors, and works."""
    from detectron2.config import LazyConfig
    from droppos.transfer.detection.adapter import InitError

    write_encoder(tmp_path / "p16.pth", patch=16, img=64)
    with pytest.raises(InitError) as err:
        resolve(tmp_path / "p16.pth", tiny_cfg())
    fix = str(err.value).split("pass ", 1)[1].split()
    assert "model.backbone.net.patch_size=16" in fix and "model.backbone.scale_factors=[4,2,1]" in fix
    cfg = LazyConfig.apply_overrides(tiny_cfg(), fix)
    init = resolve(tmp_path / "p16.pth", cfg)
    model = build(cfg)
    from droppos.transfer.detection.adapter import target

    from droppos.backbones import into_engine

    assert into_engine.load(model, init, target(cfg)).ok
    with torch.no_grad():
        model.eval()(  # the pyramid runs with the new strides
            [{"image": torch.zeros(3, 128, 128), "height": 128, "width": 128}])


@pytest.mark.parametrize("change,message", [
    ({"width": 96}, r"width 96, patch 8\), the config's ViT has embed_dim=64"),
    ({"depth": 3}, r"file weights have no place in the model: backbone.net.blocks.2"),
    ({"depth": 1}, r"backbone weights are not in the file: backbone.net.blocks.1"),
])
def test_a_detectron2_file_of_the_wrong_size_is_an_error(tmp_path, change, message):
    from droppos.backbones.convert import convert
    from droppos.transfer.detection.adapter import InitError

    write_encoder(tmp_path / "enc.pth", **change)
    convert(tmp_path / "enc.pth", "detectron2", tmp_path / "d2.pth", img_size=128)
    with pytest.raises(InitError, match=message):
        load_file(build(tiny_cfg()), tmp_path / "d2.pth", tiny_cfg())


def test_unexpected_and_missing_backbone_keys_are_errors(encoder, tmp_path):
    from droppos.backbones.convert import convert
    from droppos.transfer.detection.adapter import InitError

    from droppos.utils.checkpoint import safe_load

    path, _ = encoder
    convert(path, "detectron2", tmp_path / "d2.pth", img_size=128)
    sd = safe_load(tmp_path / "d2.pth")["model"]
    extra = dict(sd, **{"backbone.net.cls_token": torch.zeros(1, 1, WIDTH)})
    torch.save({"model": extra}, tmp_path / "extra.pth")
    with pytest.raises(InitError, match="1 file weights have no place in the model: backbone.net.cls_token"):
        load_file(build(tiny_cfg()), tmp_path / "extra.pth", tiny_cfg())
    fewer = {k: v for k, v in sd.items() if "blocks.1.mlp" not in k}
    torch.save({"model": fewer}, tmp_path / "fewer.pth")
    model = build(tiny_cfg())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(InitError, match=r"4 backbone weights are not in the file: backbone.net.blocks.1.mlp"):
        load_file(model, tmp_path / "fewer.pth", tiny_cfg())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing half-loaded


def test_evaluation_needs_a_whole_detector(encoder, tmp_path):
    from droppos.transfer.detection.adapter import InitError

    from droppos.backbones import into_engine

    path, _ = encoder
    cfg = tiny_cfg()
    saved = into_engine.save(tmp_path, resolve(path, cfg))
    with pytest.raises(InitError, match="evaluation needs a trained model"):
        load_file(build(cfg), saved, cfg, require_full=True)


def test_unreadable_sources_fail_with_the_file_name(tmp_path):
    cfg = tiny_cfg()
    (tmp_path / "notes.pth").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="notes.pth"):
        resolve(tmp_path / "notes.pth", cfg)
    with pytest.raises(ValueError, match="missing.pth: no such checkpoint file"):
        resolve(tmp_path / "missing.pth", cfg)
