"""Edges of the DropPos and MAE modules that their mutation runs found untested: every per-sample draw a forward
makes is counted in ``noise_size`` (none missing, none wasted), a position-mask ratio that drops nothing is
refused at any grid size, and the constructors' defaults are the released decoders."""

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
