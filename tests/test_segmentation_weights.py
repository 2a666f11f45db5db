"""--backbone through the one init path into mmseg: converted weights land, wrong files fail loudly."""

from __future__ import annotations

import pytest
import torch
from pos_reference import reference_resample

pytest.importorskip("mmseg")

from droppos.transfer.segmentation.mmcv_ops import ensure_mmcv_ops  # noqa: E402
from droppos.transfer.segmentation.adapter import InitError, target  # noqa: E402
from segmentation_helpers import DEPTH, HEADS, WIDTH, tiny_segmentor  # noqa: E402

from droppos.backbones import into_engine  # noqa: E402
from droppos.backbones.options import BackboneOptions  # noqa: E402

IMG = 128


@pytest.fixture(autouse=True, scope="module")
def _mmcv_ops():
    ensure_mmcv_ops()  # mmcv-lite: before mmseg's models are imported


def _random_like(sd: dict, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {k: (torch.randn(v.shape, generator=g) if v.is_floating_point() else v.clone()) for k, v in sd.items()}


@pytest.fixture(scope="module")
def model_and_cfg():
    return tiny_segmentor(IMG)


def resolve_init(src, cfg, **kw):
    return into_engine.resolve(BackboneOptions(backbone=str(src), **kw), target(cfg))


def load_init(model, init, cfg):
    return into_engine.load(model, init, target(cfg))


def _check_landed(model, expected: dict, prefix: str = ""):
    own = model.state_dict()
    for k, v in expected.items():
        assert torch.equal(own[prefix + k], v), k


@pytest.mark.parametrize("layout", ["bare", "backbone_prefix", "ddp_prefix", "state_dict_key"])
def test_mmseg_backbone_file_lands_whatever_its_prefix(tmp_path, model_and_cfg, layout):
    model, cfg = model_and_cfg
    sd = _random_like(model.backbone.state_dict(), seed=1)
    sd = {k: v for k, v in sd.items() if "relative_position_index" not in k}
    stored = {"bare": sd, "backbone_prefix": {f"backbone.{k}": v for k, v in sd.items()},
              "ddp_prefix": {f"module.backbone.{k}": v for k, v in sd.items()},
              "state_dict_key": {"state_dict": sd, "meta": {"method": "mae", "epochs": 5}}}[layout]
    path = tmp_path / "bb.pth"
    torch.save(stored, path)
    init = resolve_init(path, cfg, method="mae", pretrain_epochs=5)
    assert init.kind == "native"
    report = load_init(model, init, cfg)
    _check_landed(model, sd, "backbone.")
    assert len(report.loaded) == len(sd)
    rec = init.record
    assert (rec["method"], rec["epochs"], rec["arch"]) == ("mae", 5, f"vit_d{WIDTH}x{DEPTH}_p16")


def test_converted_pretraining_encoder_lands_in_the_model(tmp_path, model_and_cfg):
    """A droppos encoder.pth (another grid: 64 px) converted on the fly for the 128 px config."""
    pytest.importorskip("droppos.backbones.targets")
    from droppos.models.vit import VisionTransformer
    from droppos.utils.checkpoint import save_encoder

    model, cfg = model_and_cfg
    enc = VisionTransformer(img_size=64, patch_size=16, embed_dim=WIDTH, depth=DEPTH, num_heads=HEADS)
    with torch.no_grad():
        for p in enc.parameters():
            p.add_(0.1 * torch.randn_like(p))
    save_encoder(tmp_path / "encoder.pth", enc.state_dict(), {"arch": enc.arch_args(), "method": "droppos", "epochs": 7})
    init = resolve_init(tmp_path / "encoder.pth", cfg)
    report = load_init(model, init, cfg)
    src, bb = enc.state_dict(), model.backbone
    assert torch.equal(bb.cls_token, src["cls_token"])
    assert torch.equal(bb.patch_embed.projection.weight, src["patch_embed.proj.weight"])
    for i in range(DEPTH):
        layer = bb.layers[i]
        assert torch.equal(layer.attn.qkv.weight, src[f"blocks.{i}.attn.qkv.weight"])
        assert torch.equal(layer.attn.qkv.bias, src[f"blocks.{i}.attn.qkv.bias"])
        assert torch.equal(layer.ln1.weight, src[f"blocks.{i}.norm1.weight"])
        assert torch.equal(layer.ffn.layers[0][0].weight, src[f"blocks.{i}.mlp.fc1.weight"])
        assert torch.equal(layer.ffn.layers[1].bias, src[f"blocks.{i}.mlp.fc2.bias"])
        assert torch.equal(layer.gamma_1, torch.ones(WIDTH))  # identity layer scale
        assert not layer.attn.relative_position_bias_table.any()  # zero relative bias
    torch.testing.assert_close(bb.pos_embed.data, reference_resample(src["pos_embed"], (4, 4), (8, 8)))
    assert any("resampled" in line for line in report.lines())
    record = init.record
    assert (record["method"], record["arch"], record["epochs"]) == ("droppos", f"vit_d{WIDTH}x{DEPTH}_p16", 7)


def test_whole_segmentor_file_loads_everything(tmp_path, model_and_cfg):
    model, cfg = model_and_cfg
    sd = {k: v for k, v in _random_like(model.state_dict(), seed=2).items()}
    torch.save({"meta": {"iter": 10}, "state_dict": sd}, tmp_path / "iter_10.pth")
    init = resolve_init(tmp_path / "iter_10.pth", cfg)
    assert init.kind == "native"
    load_init(model, init, cfg)
    _check_landed(model, {k: v for k, v in sd.items() if v.is_floating_point()})


def test_wrong_architecture_is_a_clear_error(tmp_path, model_and_cfg):
    from mmseg.models.backbones import MAE

    model, cfg = model_and_cfg
    other = MAE(img_size=(IMG, IMG), patch_size=16, embed_dims=2 * WIDTH, num_layers=DEPTH, num_heads=HEADS)
    path = tmp_path / "wide.pth"
    torch.save(other.state_dict(), path)
    with pytest.raises(InitError, match=r"wide\.pth: does not fit the model: .*width 96, patch 16\), the config's ViT "
                                        r"has embed_dim=48"):
        load_init(model, resolve_init(path, cfg), cfg)


def test_missing_and_unexpected_backbone_weights_are_errors(tmp_path, model_and_cfg):
    model, cfg = model_and_cfg
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sd = _random_like(model.backbone.state_dict(), seed=3)
    missing = {k: v for k, v in sd.items() if k != "layers.1.ln1.weight"}
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(InitError, match=r"missing\.pth: .*1 backbone weights are not in the file: backbone\.layers\.1\.ln1"):
        load_init(model, resolve_init(tmp_path / "missing.pth", cfg), cfg)
    extra = {**sd, "layers.9.ln1.weight": torch.ones(WIDTH)}
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(InitError, match=r"extra\.pth: .*1 file weights have no place in the model: backbone\.layers\.9"):
        load_init(model, resolve_init(tmp_path / "extra.pth", cfg), cfg)
    # a doubled prefix is not silently stripped: the backbone would otherwise stay random
    doubled = {f"backbone.backbone.{k}": v for k, v in sd.items()}
    torch.save(doubled, tmp_path / "doubled.pth")
    with pytest.raises(InitError):
        init = resolve_init(tmp_path / "doubled.pth", cfg, source_format="mmseg")
        load_init(model, init, cfg)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # nothing half-loaded


def test_target_only_weights_have_one_policy(tmp_path, model_and_cfg):
    """mmseg's layer scale and relative bias are written by the converter, never allowed missing at load:
    a file in mmseg names without them is an error (only the fixed index buffers may be absent)."""
    model, cfg = model_and_cfg
    sd = _random_like(model.backbone.state_dict(), seed=4)
    sd = {k: v for k, v in sd.items() if not ("gamma" in k or "relative_position" in k)}
    torch.save(sd, tmp_path / "plain.pth")
    with pytest.raises(InitError, match=r"plain\.pth: .*backbone weights are not in the file: backbone\.layers\.0\.gamma_1"):
        load_init(model, resolve_init(tmp_path / "plain.pth", cfg), cfg)
    sd = {k: v for k, v in _random_like(model.backbone.state_dict(), seed=4).items() if "relative_position_index" not in k}
    torch.save(sd, tmp_path / "full.pth")
    report = load_init(model, resolve_init(tmp_path / "full.pth", cfg), cfg)
    assert set(report.recipe_init.values()) == {"fixed index buffer"} and len(report.recipe_init) == DEPTH


def test_not_a_checkpoint_and_scratch(tmp_path):
    bad = tmp_path / "notes.pth"
    bad.write_text("hello")
    cfg = tiny_segmentor(IMG)[1]
    with pytest.raises(ValueError, match="notes.pth"):
        resolve_init(bad, cfg, source_format="mmseg")
    with pytest.raises(ValueError, match="nope.pth"):
        resolve_init(tmp_path / "nope.pth", cfg)
    assert resolve_init("scratch", cfg).kind == "scratch"


def test_converted_source_of_another_architecture_names_the_fix(tmp_path, model_and_cfg):
    pytest.importorskip("droppos.backbones.targets")
    from droppos.transfer.segmentation.config import load_config
    from segmentation_helpers import TINY_MODEL

    from droppos.models.vit import VisionTransformer
    from droppos.utils.checkpoint import save_encoder

    enc = VisionTransformer(img_size=64, patch_size=8, embed_dim=2 * WIDTH, depth=2 * DEPTH, num_heads=HEADS)
    save_encoder(tmp_path / "wide.pth", enc.state_dict(), {"arch": enc.arch_args(), "method": "mae"})
    cfg = load_config("upernet_vit_fmnist", dict(TINY_MODEL))
    with pytest.raises(InitError, match="the weights are a ViT with embed_dim=96") as err:
        resolve_init(tmp_path / "wide.pth", cfg)
    fix = str(err.value).split("--cfg-options ", 1)[1].split()
    assert f"model.backbone.embed_dims={2 * WIDTH}" in fix and "model.backbone.out_indices=[1,3,5,7]" in fix
    assert "model.backbone.patch_size=8" in fix and "model.neck.rescales=[2,1,0.5,0.25]" in fix  # same strides
    # applying the suggested options makes the config fit, and the weights load
    from droppos.transfer.segmentation.config import parse_cfg_options

    fitted = load_config("upernet_vit_fmnist", {**TINY_MODEL, **parse_cfg_options(fix)})
    init = resolve_init(tmp_path / "wide.pth", fitted)
    from mmengine.model import revert_sync_batchnorm
    from mmseg.registry import MODELS

    model = revert_sync_batchnorm(MODELS.build(fitted.model))
    model.init_weights()
    assert load_init(model, init, fitted).ok
    assert torch.equal(model.backbone.layers[7].attn.proj.weight, enc.state_dict()["blocks.7.attn.proj.weight"])
