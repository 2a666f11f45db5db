"""--init resolution and strict loading: converted weights land, wrong files fail loudly."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("mmseg")

from droppos.transfer.segmentation.mmcv_ops import ensure_mmcv_ops  # noqa: E402
from droppos.transfer.segmentation.weights import (  # noqa: E402
    InitError,
    backbone_info,
    load_init,
    resolve_init,
)
from segmentation_helpers import DEPTH, HEADS, WIDTH, tiny_segmentor  # noqa: E402

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
    init = resolve_init(str(path), img_size=(IMG, IMG))
    assert init.kind == "backbone"
    report = load_init(model, init, dict(cfg.model.backbone))
    _check_landed(model, sd, "backbone.")
    assert len(report.loaded) == len(sd)
    if layout == "state_dict_key":
        rec = backbone_info(init, cfg.model.backbone)
        assert (rec["method"], rec["epochs"], rec["arch"]) == ("mae", 5, f"vit_d{WIDTH}x{DEPTH}_p16")


def test_converted_pretraining_encoder_lands_in_the_model(tmp_path, model_and_cfg):
    """A droppos encoder.pth (another grid: 64 px) converted on the fly for the 128 px config."""
    pytest.importorskip("droppos.tools.convert.targets")
    from droppos.models.pos_embed import resample_pos_embed
    from droppos.models.vit import VisionTransformer
    from droppos.utils.checkpoint import save_encoder

    model, cfg = model_and_cfg
    enc = VisionTransformer(img_size=64, patch_size=16, embed_dim=WIDTH, depth=DEPTH, num_heads=HEADS)
    with torch.no_grad():
        for p in enc.parameters():
            p.add_(0.1 * torch.randn_like(p))
    save_encoder(tmp_path / "encoder.pth", enc.state_dict(), {"arch": enc.arch_args(), "method": "droppos", "epochs": 7})
    init = resolve_init(str(tmp_path / "encoder.pth"), img_size=(IMG, IMG))
    report = load_init(model, init, dict(cfg.model.backbone))
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
    torch.testing.assert_close(bb.pos_embed, resample_pos_embed(src["pos_embed"], (8, 8), 1, (4, 4)))
    assert any("resampled" in line for line in report.lines())
    record = backbone_info(init, cfg.model.backbone)
    assert (record["method"], record["arch"], record["epochs"]) == ("droppos", f"vit_d{WIDTH}x{DEPTH}_p16", 7)


def test_whole_segmentor_file_loads_everything(tmp_path, model_and_cfg):
    model, cfg = model_and_cfg
    sd = {k: v for k, v in _random_like(model.state_dict(), seed=2).items()}
    torch.save({"meta": {"iter": 10}, "state_dict": sd}, tmp_path / "iter_10.pth")
    init = resolve_init(str(tmp_path / "iter_10.pth"))
    assert init.kind == "segmentor"
    load_init(model, init)
    _check_landed(model, {k: v for k, v in sd.items() if v.is_floating_point()})


def test_wrong_architecture_is_a_clear_error(tmp_path, model_and_cfg):
    from mmseg.models.backbones import MAE

    model, cfg = model_and_cfg
    other = MAE(img_size=(IMG, IMG), patch_size=16, embed_dims=2 * WIDTH, num_layers=DEPTH, num_heads=HEADS)
    path = tmp_path / "wide.pth"
    torch.save(other.state_dict(), path)
    with pytest.raises(InitError, match=r"wide\.pth: wrong architecture.*embed_dims=48"):
        load_init(model, resolve_init(str(path)), dict(cfg.model.backbone))


def test_missing_and_unexpected_backbone_weights_are_errors(tmp_path, model_and_cfg):
    model, cfg = model_and_cfg
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sd = _random_like(model.backbone.state_dict(), seed=3)
    missing = {k: v for k, v in sd.items() if k != "layers.1.ln1.weight"}
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(InitError, match=r"missing\.pth: 1 model weights are not in the file.*layers\.1\.ln1\.weight"):
        load_init(model, resolve_init(str(tmp_path / "missing.pth")))
    extra = {**sd, "layers.9.ln1.weight": torch.ones(WIDTH)}
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(InitError, match=r"extra\.pth: 1 weights have no place.*layers\.9\.ln1\.weight"):
        load_init(model, resolve_init(str(tmp_path / "extra.pth")))
    # a doubled prefix is not silently stripped: the backbone would otherwise stay random
    doubled = {f"backbone.backbone.{k}": v for k, v in sd.items()}
    torch.save(doubled, tmp_path / "doubled.pth")
    with pytest.raises(InitError):
        init = resolve_init(str(tmp_path / "doubled.pth"), fmt="mmseg")
        load_init(model, init)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # nothing half-loaded


def test_recipe_initialised_keys_may_be_absent(tmp_path, model_and_cfg):
    model, cfg = model_and_cfg
    sd = _random_like(model.backbone.state_dict(), seed=4)
    sd = {k: v for k, v in sd.items() if not ("gamma" in k or "relative_position" in k)}
    torch.save(sd, tmp_path / "plain.pth")
    report = load_init(model, resolve_init(str(tmp_path / "plain.pth")))
    _check_landed(model, sd, "backbone.")
    assert len(report.recipe_init) == 4 * DEPTH  # gamma_1, gamma_2, bias table, index per block
    assert any("layer scale" in line for line in report.lines())


def test_not_a_checkpoint_and_scratch(tmp_path):
    bad = tmp_path / "notes.pth"
    bad.write_text("hello")
    with pytest.raises(InitError, match="notes.pth"):
        resolve_init(str(bad), fmt="mmseg")
    with pytest.raises(InitError, match="nope.pth"):
        resolve_init(str(tmp_path / "nope.pth"))
    assert resolve_init("scratch").kind == "scratch"


def test_converted_source_of_another_architecture_names_the_fix(tmp_path, model_and_cfg):
    pytest.importorskip("droppos.tools.convert.targets")
    from droppos.models.vit import VisionTransformer
    from droppos.transfer.segmentation.config import load_config
    from droppos.transfer.segmentation.weights import check_arch
    from droppos.utils.checkpoint import save_encoder
    from segmentation_helpers import TINY_MODEL

    enc = VisionTransformer(img_size=64, patch_size=8, embed_dim=2 * WIDTH, depth=2 * DEPTH, num_heads=HEADS)
    save_encoder(tmp_path / "wide.pth", enc.state_dict(), {"arch": enc.arch_args(), "method": "mae"})
    init = resolve_init(str(tmp_path / "wide.pth"), img_size=(IMG, IMG))
    cfg = load_config("upernet_vit_fmnist", dict(TINY_MODEL))
    with pytest.raises(InitError, match="wrong architecture") as err:
        check_arch(init, cfg)
    fix = str(err.value).split("--cfg-options ", 1)[1].split()
    assert f"model.backbone.embed_dims={2 * WIDTH}" in fix and "model.backbone.out_indices=[1,3,5,7]" in fix
    assert "model.backbone.patch_size=8" in fix and "model.neck.rescales=[2,1,0.5,0.25]" in fix  # same strides
    # applying the suggested options makes the config fit, and the weights load
    from droppos.transfer.segmentation.config import parse_cfg_options

    fitted = load_config("upernet_vit_fmnist", {**TINY_MODEL, **parse_cfg_options(fix)})
    check_arch(init, fitted)
    from mmengine.model import revert_sync_batchnorm
    from mmseg.registry import MODELS

    model = revert_sync_batchnorm(MODELS.build(fitted.model))
    model.init_weights()
    load_init(model, init, dict(fitted.model.backbone))
    assert torch.equal(model.backbone.layers[7].attn.proj.weight, enc.state_dict()["blocks.7.attn.proj.weight"])
