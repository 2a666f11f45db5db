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


def _dp(**kw):
    return DropPos(tiny(), **{"decoder_dim": 32, "decoder_depth": 1, "decoder_heads": 2, **kw})


def fresh(text: str) -> str:
    """The same text as a new string object, as a YAML file or the command line gives it (not the interned literal)."""
    out = "".join(list(text))
    assert out == text and out is not text
    return out


def test_the_class_defaults_are_the_command_lines():
    """``DropPos(...)`` built in Python behaves as ``droppos pretrain`` with no flag: every argument the two share has
    one default (the released main_pretrain.py: --shuffle and --conf_ignore are store_true, off)."""
    import dataclasses
    import inspect

    from droppos.pretrain.config import PretrainConfig

    cli = {f.name: f.default for f in dataclasses.fields(PretrainConfig)}
    ours = {k: p.default for k, p in inspect.signature(DropPos).parameters.items() if p.default is not p.empty}
    shared = sorted(set(cli) & set(ours) - {"decoder_depth"})  # the config's None means "the method's own"
    assert {"norm_pix_loss", "pos_weight", "conf_ignore", "shuffle", "mask_token", "sigma"} <= set(shared)
    assert {k: ours[k] for k in shared} == {k: cli[k] for k in shared}
    assert "action='store_true'" in SOURCES["Haochen-Wang409/DropPos main_pretrain.py:86"]  # --shuffle
    assert "action='store_true'" in SOURCES["Haochen-Wang409/DropPos main_pretrain.py:96"]  # --conf_ignore


@pytest.mark.parametrize("build", [
    lambda: _dp(mask_token="zeros"),  # 'zeros' draws no permutation ('zeros' > 'wrong_pos' as text)
    lambda: _dp(mask_token=fresh("wrong_pos")),  # a token from a config file, not the literal
    lambda: DropPos(tiny(img=20), mask_ratio=0.5, decoder_dim=32, decoder_depth=1, decoder_heads=2),  # 25 | 12 != 25 + 12
])
def test_noise_size_counts_every_draw_for_any_token_and_grid(monkeypatch, build):
    model = build()
    monkeypatch.setattr(droppos_module, "SampleNoise", CountingNoise)
    CountingNoise.calls = []
    img = model.encoder.grid_size[0] * model.encoder.patch_size
    model(torch.randn(2, 3, img, img), noise=torch.rand(2, model.noise_size))
    (draws,) = CountingNoise.calls
    assert draws.used == model.noise_size


def test_mask_tokens_given_as_new_strings_act_as_the_literals():
    """Tokens compared by value, not identity: a token read from a file is a new string object."""
    param, zeros = _dp(mask_token=fresh("param")), _dp(mask_token=fresh("zeros"))
    assert param.mask_pos_token.requires_grad and not zeros.mask_pos_token.requires_grad
    pos = torch.randn(2, 4, param.encoder.embed_dim)
    for model, fill in ((param, param.mask_pos_token[0, 0].detach()), (zeros, torch.zeros(pos.shape[-1]))):
        out, dropped = model.drop_positions(pos, SampleNoise(torch.rand(2, 4)))
        assert dropped.sum() == 2 * (4 - model.n_keep_pos)
        assert torch.equal(out[dropped].detach(), fill.expand(int(dropped.sum()), -1))
        assert torch.equal(out[~dropped], pos[~dropped])
    for aux, token, trained in (("trained", "zeros", True), ("official", "param", True), ("official", "zeros", False)):
        model = _dp(multi_task=True, aux_mask_token=fresh(aux), mask_token=fresh(token))
        assert model.pixel_decoder.mask_token.requires_grad is trained, (aux, token)


def test_multi_task_pixel_decoder_predicts_every_pixel_of_a_patch():
    assert _dp(multi_task=True).pixel_decoder.head.pred.out_features == 4 * 4 * 3


def test_the_smoothing_map_follows_sigma_both_ways_and_stays_out_of_checkpoints():
    model = _dp()
    for sigma in (2.0, 0.5, 3.0):
        model.set_sigma(sigma)
        torch.testing.assert_close(model.smooth, model._smoothing(sigma), rtol=0, atol=0)
    assert "smooth" not in model.state_dict()  # derived from sigma: a released checkpoint has no such key


def test_the_position_mask_token_starts_at_the_released_init_and_attention_weights_carry_no_gradient():
    model = DropPos(tiny(), decoder_dim=32, decoder_depth=1, decoder_heads=2)
    assert abs(model.mask_pos_token.std().item() - 0.02) < 0.005  # N(0, 0.02): 192 draws
    imgs = torch.randn(2, 3, 16, 16)
    w = model.attentive_weights(imgs, torch.arange(4).expand(2, 4))
    assert not w.requires_grad  # a full forward that only weighs the loss: no gradient through it


def test_position_loss_divides_by_the_weights_sum_whatever_it_is():
    """The released loss is sum(l * w) / sum(w): attentive weights over the dropped patches sum to less than 1, and a
    loss whose every weight is ignored (conf_ignore) is 0, not NaN; the accuracy of one dropped position is 0 or 1."""
    model = _dp(attn_guide=True)
    torch.manual_seed(1)
    logits, labels = torch.randn(1, 4, 16), torch.tensor([[3, 7, 9, 12]])
    logits[0, 0, 3] = 10.0  # the dropped patch is placed right: accuracies 1, whatever its weight
    mask_pos = torch.tensor([[True, False, False, False]])
    attn = torch.tensor([[0.3, 0.2, 0.25, 0.25]])
    loss, acc, acc_released = model.position_loss(logits, labels, mask_pos, attn)
    per_token = -(model.smooth[labels] * torch.log_softmax(logits, -1)).sum(-1)
    torch.testing.assert_close(loss, per_token[0, 0])  # (l0 * 0.3) / 0.3
    assert acc.item() == 1.0 and acc_released.item() == pytest.approx(1.0)  # (1 * 0.3) / 0.3
    confident = _dp(conf_ignore=True)
    sure = torch.full((1, 4, 16), -30.0).scatter(-1, labels.unsqueeze(-1), 30.0)
    loss, acc, acc_released = confident.position_loss(sure, labels, mask_pos, None)
    assert loss.item() == 0.0 and acc_released.item() == 0.0 and acc.item() == 1.0
    _, acc, _ = model.position_loss(logits, labels, torch.zeros(1, 4, dtype=torch.bool), None)
    assert acc.item() == 0.0  # nothing dropped: 0, not 0 / 0
