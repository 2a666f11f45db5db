"""Converted weights in mmseg's ``MAE`` backbone give the source encoder's features.

The backbone is built with mmseg's defaults for what the source lacks (``init_values=0.1`` layer
scale, relative position bias tables) and loaded the way mmseg configs load it
(``init_cfg=dict(type='Pretrained', checkpoint=...)``): the converter writes layer scale = 1 and a
zero relative bias, so the loaded network must be the source network.
"""

from __future__ import annotations

import pytest
import torch
from convert_helpers import HEADS, mmseg_reference, tiny_encoder, write_droppos_official, write_mae_official

from droppos.backbones.arch import ViTArch
from droppos.backbones.convert import convert
from droppos.backbones.targets import mmseg_kwargs

pytest.importorskip("mmseg", reason="mmsegmentation is not installed")
pytestmark = pytest.mark.mmseg


@pytest.fixture(scope="module")
def mmseg_mae():
    shim = pytest.importorskip("droppos.transfer.segmentation.mmcv_ops", reason="needs the mmcv.ops shim of transfer/segmentation")
    shim.ensure_mmcv_ops()
    from mmseg.models.backbones import MAE

    return MAE


def build_loaded(MAE, arch, path, final_norm=False):
    kw = mmseg_kwargs(ViTArch.from_dict(arch))
    kw.update(init_values=0.1, final_norm=final_norm)  # mmseg's default layer scale: the file must override it
    model = MAE(**kw, init_cfg=dict(type="Pretrained", checkpoint=str(path)))
    for layer in model.layers:  # non-identity starting values, as BEiT's init would leave them
        torch.nn.init.trunc_normal_(layer.attn.relative_position_bias_table, std=0.02)
    model.init_weights()
    model.eval()  # BEiT.train() returns None: no chaining
    return model


@pytest.mark.parametrize("final_norm", [False, True])
def test_mmseg_mae_features_match_source(tmp_path, mmseg_mae, final_norm):
    enc = tiny_encoder(seed=11, depth=3)  # 3 blocks: the output is the last one (depth - 1), not depth // 2
    write_droppos_official(tmp_path / "droppos.pth", enc)
    report = convert(tmp_path / "droppos.pth", "mmseg", tmp_path / "mmseg.pth", arch=f"num_heads={HEADS}",
                     final_norm=final_norm)
    assert report.ok and len(report.filled) == 3 * enc.arch_args()["depth"]
    loaded = torch.load(tmp_path / "mmseg.pth", weights_only=True)
    assert list(loaded) == ["state_dict"]
    model = build_loaded(mmseg_mae, enc.arch_args(), tmp_path / "mmseg.pth", final_norm)
    model_keys = {k for k in model.state_dict() if not k.endswith("relative_position_index")}
    assert set(loaded["state_dict"]) == model_keys  # every backbone key, nothing else
    for layer in model.layers:
        assert torch.equal(layer.gamma_1.data, torch.ones_like(layer.gamma_1))
        assert not layer.attn.relative_position_bias_table.any()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        (out,) = model.double()(x)
        ref = mmseg_reference(enc.double(), x, final_norm)
    assert out.shape == ref.shape == (2, 64, 8, 8)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_mmseg_resampled_for_segmentation_size(tmp_path, mmseg_mae):
    enc = tiny_encoder(seed=12)
    write_mae_official(tmp_path / "mae.pth", enc)
    report = convert(tmp_path / "mae.pth", "mmseg", tmp_path / "mmseg.pth", img_size=64, trust_pickle=True,
                     arch="num_heads=2")
    assert report.resampled
    arch = {**enc.arch_args(), "img_size": [64, 64]}
    model = build_loaded(mmseg_mae, arch, tmp_path / "mmseg.pth")
    assert model.pos_embed.shape == (1, 1 + 16 * 16, 64)
    assert model.layers[0].attn.relative_position_bias_table.shape == (31 * 31 + 3, HEADS)
