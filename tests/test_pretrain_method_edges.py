"""Edges of the DropPos and MAE modules that their mutation runs found untested: every per-sample draw a forward
makes is counted in ``noise_size`` (none missing, none wasted), a position-mask ratio that drops nothing is
refused at any grid size, the constructors' defaults are the released decoders, and MAE's pixel loss and decoder width
against the released formula."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from droppos.errors import UserError
from droppos.models import build_vit
from droppos.pretrain import droppos as droppos_module
from droppos.pretrain import mae as mae_module
from droppos.pretrain.droppos import DropPos
from droppos.pretrain.mae import MAE
from droppos.pretrain.masking import SampleNoise

SOURCES = json.loads((Path(__file__).parent / "fixtures" / "recipe_sources.json").read_text())["lines"]


def tiny(img=16, patch=4):
    torch.manual_seed(0)
    return build_vit("tiny", patch_size=patch, img_size=img, depth=1)


class CountingNoise(SampleNoise):
    calls: list = []

    def __init__(self, rows=None):
        super().__init__(rows)
        CountingNoise.calls.append(self)


@pytest.mark.parametrize("module, build", [
    (droppos_module, lambda: DropPos(tiny(), decoder_dim=32, decoder_depth=1, decoder_heads=2)),
    (droppos_module, lambda: DropPos(tiny(), mask_token="wrong_pos", decoder_dim=32, decoder_depth=1, decoder_heads=2)),
    (droppos_module, lambda: DropPos(tiny(), shuffle=True, decoder_dim=32, decoder_depth=1, decoder_heads=2)),
    (droppos_module, lambda: DropPos(tiny(), mask_token="wrong_pos", shuffle=True, pos_mask_ratio=0.5,
                                     decoder_dim=32, decoder_depth=1, decoder_heads=2)),
    (mae_module, lambda: MAE(tiny(), decoder_dim=32, decoder_depth=1, decoder_heads=2)),
])
def test_noise_size_is_every_draw_of_a_forward(monkeypatch, module, build):
    model = build()
    monkeypatch.setattr(module, "SampleNoise", CountingNoise)
    CountingNoise.calls = []
    rows = torch.rand(2, model.noise_size)
    model(torch.randn(2, 3, 16, 16), noise=rows)
    (draws,) = CountingNoise.calls
    assert draws.used == model.noise_size  # all used: none missing (it would raise), none wasted


def test_a_position_ratio_that_drops_nothing_is_refused_on_a_large_grid():
    enc = tiny(img=80)  # 400 patches; mask_ratio 0.25 keeps 300
    with pytest.raises(UserError, match="drops no position of the 300 visible patches"):
        DropPos(enc, mask_ratio=0.25, pos_mask_ratio=1e-17, decoder_dim=32, decoder_depth=1, decoder_heads=2)


def _decoder_shape(head) -> tuple[int, int, int]:
    blocks = list(head.blocks)
    return head.embed.out_features, len(blocks), blocks[0].attn.num_heads


def test_the_defaults_are_the_released_decoders():
    # MAE's mae_vit_base_patch16_dec512d8b; DropPos's models_DropPos_mae.py (the cited line holds the three)
    assert _decoder_shape(MAE(tiny()).decoder.head) == (512, 8, 16)
    line = SOURCES["Haochen-Wang409/DropPos models_DropPos_mae.py:457"]
    assert "decoder_embed_dim=512, decoder_depth=2, decoder_num_heads=16" in line
    assert _decoder_shape(DropPos(tiny()).pos_decoder) == (512, 2, 16)


def _released_pixel_loss(imgs, pred, mask, p):
    """MAE's ``forward_loss`` with ``norm_pix_loss`` (models_mae.py), written out: patchify 'nchpwq->nhwpqc', per-patch
    mean and unbiased variance, + 1e-6 under the root, the squared error averaged over the removed patches."""
    n, c, hh, ww = imgs.shape
    h, w = hh // p, ww // p
    x = torch.einsum("nchpwq->nhwpqc", imgs.reshape(n, c, h, p, w, p)).reshape(n, h * w, p * p * c)
    x = (x - x.mean(dim=-1, keepdim=True)) / (x.var(dim=-1, keepdim=True) + 1.0e-6) ** 0.5
    loss = ((pred - x) ** 2).mean(dim=-1)
    return (loss * mask).sum() / mask.sum()


def test_mae_pixel_loss_normalises_by_default_and_stays_finite_on_flat_patches():
    """A flat patch (variance 0) is where the 1e-6 under the root matters: the loss stays finite and equal to the
    released formula; the default normalises patches as the released recipe does (``--norm_pix_loss``)."""
    torch.manual_seed(0)
    imgs = torch.rand(2, 3, 16, 16)
    imgs[0, :, :4, :4] = 0.25  # one flat patch
    pred, mask = torch.randn(2, 16, 48), (torch.rand(2, 16) < 0.75).float()
    mask[0, 0] = 1.0
    want = _released_pixel_loss(imgs, pred, mask, 4)
    assert torch.isfinite(want)
    torch.testing.assert_close(mae_module.pixel_loss(imgs, pred, mask, 4), want)


def test_the_mae_decoder_predicts_every_pixel_of_a_patch():
    """The pixel decoder's output is p * p * C wide (one value per pixel and channel of the patch), not a
    width that would silently broadcast against the target."""
    model = MAE(tiny(), decoder_dim=32, decoder_depth=1, decoder_heads=2)
    assert model.decoder.head.pred.out_features == 4 * 4 * 3
