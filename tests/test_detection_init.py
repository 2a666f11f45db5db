"""Initial weights of the detector: converted on the fly or read as is, loaded with a report.

The tensors in the built detectron2 model are compared with the source encoder's, so a weight
that silently stays at its random init fails the test.
"""

from __future__ import annotations

import pytest
import torch
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


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    path = tmp_path_factory.mktemp("enc") / "encoder.pth"
    return path, write_encoder(path)


def test_converted_weights_land_in_the_model(encoder, tmp_path, capsys):
    from droppos.models.pos_embed import resample_pos_embed
    from droppos.transfer.detection.init import load_weights, prepare_init

    path, enc = encoder
    cfg = tiny_cfg()
    init = prepare_init(str(path), cfg.model.backbone.net, tmp_path)
    assert init.kind == "converted" and init.backbone["method"] == "droppos"
    assert (tmp_path / "init" / "backbone_detectron2.pth").is_file()
    model = build(cfg)
    before = model.backbone.net.blocks[0].attn.qkv.weight.clone()
    rep = load_weights(model, init.path)
    net, src = model.backbone.net, enc.state_dict()
    assert not torch.equal(before, net.blocks[0].attn.qkv.weight)
    for i in range(DEPTH):
        for name in ("norm1.weight", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "mlp.fc1.weight",
                     "mlp.fc2.bias", "norm2.bias"):
            assert torch.equal(net.state_dict()[f"blocks.{i}.{name}"], src[f"blocks.{i}.{name}"]), name
    assert torch.equal(net.patch_embed.proj.weight, src["patch_embed.proj.weight"])
    # the 8x8 table of the 64-px pretraining, resampled to the config's 128-px grid (16x16), [cls] row kept
    assert torch.allclose(net.pos_embed, resample_pos_embed(src["pos_embed"], (16, 16), 1, (8, 8)))
    assert net.pos_embed.shape == (1, 1 + 16 * 16, WIDTH)
    assert rep.ok and len(rep.backbone_loaded) == 2 + 1 + 12 * DEPTH
    assert rep.expected_missing == [f"backbone.net.blocks.{i}.attn.rel_pos_{a}" for i in range(DEPTH) for a in "hw"]
    assert any(k.startswith("roi_heads.") for k in rep.random_init) and not rep.missing and not rep.unexpected
    out = capsys.readouterr().out
    assert "expected missing (ViTDet relative position" in out and "blocks 0-1" in out


def test_a_ready_detectron2_file_is_used_as_is(encoder, tmp_path):
    from droppos.tools.convert.main import convert
    from droppos.transfer.detection.init import load_weights, prepare_init

    path, enc = encoder
    convert(path, "detectron2", tmp_path / "d2.pth", img_size=128)
    cfg = tiny_cfg()
    init = prepare_init(str(tmp_path / "d2.pth"), cfg.model.backbone.net, tmp_path / "run")
    assert init.kind == "detectron2" and init.path == str(tmp_path / "d2.pth")
    assert init.backbone["method"] == "droppos"  # from the converter's sidecar json
    assert not (tmp_path / "run" / "init").exists()
    model = build(cfg)
    assert load_weights(model, init.path).ok
    assert torch.equal(model.backbone.net.blocks[1].mlp.fc1.weight, enc.state_dict()["blocks.1.mlp.fc1.weight"])


def test_scratch_loads_nothing(tmp_path):
    from droppos.transfer.detection.init import prepare_init

    init = prepare_init("scratch", tiny_cfg().model.backbone.net, tmp_path)
    assert init.path == "" and init.kind == "scratch" and init.backbone["method"] == "scratch"


def test_wrong_width_is_refused_before_conversion(tmp_path):
    from droppos.transfer.detection.init import InitError, prepare_init

    write_encoder(tmp_path / "wide.pth", width=96, heads=2)
    with pytest.raises(InitError, match=r"embed_dim 96.*embed_dim 64.*model.backbone.net.embed_dim=96"):
        prepare_init(str(tmp_path / "wide.pth"), tiny_cfg().model.backbone.net, tmp_path)


@pytest.mark.parametrize("change,message", [
    ({"width": 96}, r"width 96 vs model.backbone.net.embed_dim=64"),
    ({"depth": 3}, r"depth 3 vs model.backbone.net.depth=2"),
    ({"depth": 1}, r"depth 1 vs model.backbone.net.depth=2"),
])
def test_a_detectron2_file_of_the_wrong_size_is_an_error(tmp_path, change, message):
    from droppos.tools.convert.main import convert
    from droppos.transfer.detection.init import InitError, load_weights

    write_encoder(tmp_path / "enc.pth", **change)
    convert(tmp_path / "enc.pth", "detectron2", tmp_path / "d2.pth", img_size=128)
    with pytest.raises(InitError, match=message):
        load_weights(build(tiny_cfg()), str(tmp_path / "d2.pth"))


def test_unexpected_and_missing_backbone_keys_are_errors(encoder, tmp_path):
    from droppos.transfer.detection.init import InitError, load_weights
    from droppos.utils.checkpoint import safe_load

    from droppos.tools.convert.main import convert

    path, _ = encoder
    convert(path, "detectron2", tmp_path / "d2.pth", img_size=128)
    sd = safe_load(tmp_path / "d2.pth")["model"]
    extra = dict(sd, **{"backbone.net.cls_token": torch.zeros(1, 1, WIDTH)})
    torch.save({"model": extra}, tmp_path / "extra.pth")
    with pytest.raises(InitError, match="1 checkpoint weights have no place in the model: backbone.net.cls_token"):
        load_weights(build(tiny_cfg()), str(tmp_path / "extra.pth"))
    fewer = {k: v for k, v in sd.items() if "blocks.1.mlp" not in k}
    torch.save({"model": fewer}, tmp_path / "fewer.pth")
    model = build(tiny_cfg())
    with pytest.raises(InitError, match=r"4 backbone weights are not in the checkpoint: backbone.net.blocks.1.mlp"):
        load_weights(model, str(tmp_path / "fewer.pth"))


def test_evaluation_needs_a_whole_detector(encoder, tmp_path):
    from droppos.transfer.detection.init import InitError, load_weights, prepare_init

    path, _ = encoder
    cfg = tiny_cfg()
    init = prepare_init(str(path), cfg.model.backbone.net, tmp_path)
    with pytest.raises(InitError, match="evaluation needs a trained detector"):
        load_weights(build(cfg), init.path, require_full=True)


def test_unreadable_sources_fail_with_the_file_name(tmp_path):
    from droppos.transfer.detection.init import prepare_init

    net = tiny_cfg().model.backbone.net
    (tmp_path / "notes.pth").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="notes.pth"):
        prepare_init(str(tmp_path / "notes.pth"), net, tmp_path)
    with pytest.raises(ValueError, match="missing.pth: no such checkpoint file"):
        prepare_init(str(tmp_path / "missing.pth"), net, tmp_path)
