"""The converters' edges (``droppos/backbones/targets.py``): register tokens, what the key report says about
weights that have no place or are missing, when the position embedding is resampled, and mmseg's final norm.

References are independent of the converter: timm's own DINOv2-with-registers model, and sets of keys
written out here.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from convert_helpers import tiny_encoder
from layout_files import write_dinov2_hub

from droppos.backbones.source import load_backbone
from droppos.backbones.targets import CONVERTERS, mmseg_keys, timm_kwargs, to_mmseg, to_timm
from droppos.errors import UserError


def plain(tmp_path, **kw):
    enc = tiny_encoder(seed=5, **kw)
    torch.save(enc.state_dict(), tmp_path / "plain.pth")
    return load_backbone(tmp_path / "plain.pth", arch="num_heads=2")


def test_registers_go_to_timm_as_its_no_embed_class_model_and_nowhere_else(tmp_path):
    """A DINOv2 with 4 registers into timm is timm's own model (the [cls] position row folded into cls_token);
    the plain ViTs of detectron2 and mmseg are refused with one line naming the timm: source."""
    from timm.models.vision_transformer import VisionTransformer

    ref = write_dinov2_hub(tmp_path / "dinov2_vits14_reg4_pretrain.pth", reg=4).eval()  # [cls] position row != 0
    bb = load_backbone(tmp_path / "dinov2_vits14_reg4_pretrain.pth")
    assert bb.state_dict["pos_embed"][0, 0].abs().sum() > 0
    sd, report = to_timm(bb)
    assert report.ok and any("no_embed_class" in n for n in report.notes)
    kwargs = timm_kwargs(bb.arch)
    assert kwargs["reg_tokens"] == 4 and kwargs["no_embed_class"] is True
    model = VisionTransformer(**kwargs).eval()
    model.load_state_dict(sd, strict=True)
    x = torch.randn(2, 3, *bb.arch.img_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(x), ref.forward_features(x), atol=1e-4, rtol=0)  # layer scale folded: float rounding
    bigger = bb.arch.img_size[0] + 2 * bb.arch.patch_size
    sd_big, report = to_timm(bb, img_size=bigger)  # only the position table is resampled, never the registers
    assert [r.split(":")[0] for r in report.resampled] == ["pos_embed"]
    assert torch.equal(sd_big["reg_token"], sd["reg_token"]) and torch.equal(sd_big["cls_token"], sd["cls_token"])
    for convert in ("detectron2", "mmseg"):
        with pytest.raises(UserError) as e:
            CONVERTERS[convert](bb)
        msg = str(e.value)
        assert "4 register tokens" in msg and f"{convert}'s plain ViT has none; " in msg and "timm:" in msg
        assert "\n" not in msg


def test_a_weight_without_a_place_is_reported_and_left_out_and_the_others_still_convert(tmp_path):
    """An extra source weight first in the file: mmseg has no rule for it (unmapped), timm maps it to a name
    timm's ViT lacks (unmapped, removed from the output); neither stops the other keys nor counts as missing."""
    bb = plain(tmp_path)
    extra = {"extra.weight": torch.zeros(3)}
    bb = dataclasses.replace(bb, state_dict={**extra, **bb.state_dict})
    for convert in (to_mmseg, to_timm):
        sd, report = convert(bb)
        assert report.unmapped == ["extra.weight"] and report.missing == [], convert.__name__
        assert "extra.weight" not in sd and not report.ok
    sd, report = to_mmseg(bb)
    assert set(sd) == mmseg_keys(bb.arch)


def test_a_missing_weight_is_missing_not_unmapped(tmp_path):
    bb = plain(tmp_path)
    bb = dataclasses.replace(bb, state_dict={k: v for k, v in bb.state_dict.items() if k != "blocks.1.mlp.fc2.bias"})
    sd, report = to_timm(bb)
    assert report.missing == ["blocks.1.mlp.fc2.bias"] and report.unmapped == [] and not report.ok
    _, report = to_mmseg(bb)
    assert report.missing == ["layers.1.ffn.layers.1.bias"] and report.unmapped == []


def test_the_position_embedding_is_resampled_only_when_the_grid_changes_and_the_report_says_how(tmp_path):
    bb = plain(tmp_path)  # 32 px, patch 4: an 8 x 8 grid
    assert bb.arch.grid == (8, 8)
    sd, report = to_timm(bb, img_size=32)
    assert report.resampled == [] and torch.equal(sd["pos_embed"], bb.state_dict["pos_embed"])
    sd, report = to_timm(bb, img_size=(16, 48))  # smaller in one side, larger in the other
    assert report.resampled == ["pos_embed: grid 8x8 -> 4x12 (bicubic)"]
    assert sd["pos_embed"].shape == (1, 1 + 4 * 12, bb.arch.embed_dim)
    sd, report = to_timm(bb, img_size=16)  # smaller: a grid that compares below the source's
    assert report.resampled == ["pos_embed: grid 8x8 -> 4x4 (bicubic)"] and sd["pos_embed"].shape[1] == 1 + 16


def test_mmseg_leaves_the_final_norm_out_unless_asked(tmp_path):
    """mmseg's MAE configs use final_norm=False: the source's norm is dropped (listed) by default."""
    bb = plain(tmp_path)
    sd, report = to_mmseg(bb)
    assert "ln1.weight" not in sd and "ln1.weight" not in mmseg_keys(bb.arch)
    assert any(k == "norm.weight" for k, _ in report.dropped) and report.ok
    sd, report = to_mmseg(bb, final_norm=True)
    assert torch.equal(sd["ln1.weight"], bb.state_dict["norm.weight"]) and report.ok
