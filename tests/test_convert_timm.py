"""Converted weights in timm's own VisionTransformer give the source encoder's features."""

from __future__ import annotations

import pytest
import torch
from convert_helpers import HEADS, tiny_encoder, write_droppos_official, write_mae_official

from droppos.backbones.arch import ViTArch
from droppos.backbones.convert import convert, convert_backbone
from droppos.backbones.source import load_backbone
from droppos.backbones.targets import timm_kwargs


def timm_vit(arch: dict, sd: dict):
    from timm.models.vision_transformer import VisionTransformer

    model = VisionTransformer(**timm_kwargs(ViTArch.from_dict(arch))).eval()
    model.load_state_dict(sd, strict=True)
    return model


@pytest.mark.parametrize("kind", ["droppos", "mae", "encoder"])
def test_timm_features_match_source(tmp_path, kind):
    enc = tiny_encoder(seed=3)
    if kind == "droppos":
        write_droppos_official(tmp_path / "src.pth", enc)
    elif kind == "mae":
        write_mae_official(tmp_path / "src.pth", enc)
    else:
        from droppos.utils.checkpoint import save_encoder

        save_encoder(tmp_path / "src.pth", enc.state_dict(), {"method": "droppos", "arch": enc.arch_args()})
    report = convert(tmp_path / "src.pth", "timm", tmp_path / "out.pth", trust_pickle=kind == "mae",
                     arch=f"num_heads={HEADS}")
    assert report.ok and not report.unmapped and not report.missing
    sd = torch.load(tmp_path / "out.pth", weights_only=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = enc.forward_features(x)
        out = timm_vit(enc.arch_args(), sd).forward_features(x)
    assert out.shape == ref.shape == (2, 65, 64)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_timm_resampled_grid(tmp_path):
    enc = tiny_encoder(seed=4)
    bb = load_backbone_from(enc, tmp_path)
    sd, report = convert_backbone(bb, "timm", img_size=48)
    assert report.resampled and sd["pos_embed"].shape == (1, 1 + 12 * 12, 64)
    model = timm_vit({**enc.arch_args(), "img_size": [48, 48]}, sd)
    ref = bb.encoder(img_size=48).eval()
    x = torch.randn(1, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(x), ref.forward_features(x), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="not divisible by the patch size"):
        convert_backbone(bb, "timm", img_size=50)


def test_safetensors_output(tmp_path):
    from safetensors.torch import load_file

    enc = tiny_encoder(seed=5)
    torch.save(enc.state_dict(), tmp_path / "plain.pth")
    convert(tmp_path / "plain.pth", "timm", tmp_path / "out.safetensors", arch="num_heads=2")
    sd = load_file(tmp_path / "out.safetensors")
    assert torch.equal(sd["blocks.1.mlp.fc1.weight"], enc.state_dict()["blocks.1.mlp.fc1.weight"])


def load_backbone_from(enc, tmp_path):
    torch.save(enc.state_dict(), tmp_path / "plain.pth")
    return load_backbone(tmp_path / "plain.pth", arch="num_heads=2")
