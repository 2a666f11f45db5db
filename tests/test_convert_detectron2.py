"""Converted weights in detectron2's ViTDet ``ViT`` give the source encoder's features.

ViTDet runs the patch tokens with their position embedding through the blocks, without the
[cls] token and without a final norm; the reference computes exactly that with the source
encoder's modules. Loading goes through ``DetectionCheckpointer``, which must report nothing.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from pos_reference import reference_resample
import torch.nn as nn
from convert_helpers import HEADS, tiny_encoder, vitdet_reference, write_droppos_official

from droppos.backbones.arch import ViTArch
from droppos.backbones.convert import convert
from droppos.backbones.targets import detectron2_kwargs

pytest.importorskip("detectron2.modeling.backbone.vit", reason="detectron2 is not installed")
pytestmark = pytest.mark.detectron2

DETECTION_CONFIG = Path(__file__).resolve().parents[1] / "transfer/detection/configs/mask_rcnn_vitdet_b_100ep.py"


class Holder(nn.Module):
    """Places a ViT at ``backbone.net`` as in detectron2's ViTDet models."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.backbone = nn.Module()
        self.backbone.net = net


def load_with_checkpointer(net: nn.Module, path: Path, caplog) -> nn.Module:
    from detectron2.checkpoint import DetectionCheckpointer

    holder = Holder(net)
    with caplog.at_level(logging.INFO):
        DetectionCheckpointer(holder).load(str(path))
    complaints = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not complaints, complaints
    return holder.backbone.net.eval()


def check_features(enc, net, img):
    """In float64, so that the two attention implementations (explicit softmax in detectron2,
    SDPA in ours) differ by rounding far below the tolerance and any mapping error shows."""
    x = torch.randn(2, 3, img, img, dtype=torch.float64)
    with torch.no_grad():
        out = net.double()(x)["last_feat"]
        ref = vitdet_reference(enc.double(), x)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_vitdet_features_match_source(tmp_path, caplog):
    from detectron2.modeling.backbone.vit import ViT

    enc = tiny_encoder(seed=7)
    write_droppos_official(tmp_path / "droppos.pth", enc)
    report = convert(tmp_path / "droppos.pth", "detectron2", tmp_path / "d2.pth", arch=f"num_heads={HEADS}")
    assert report.ok
    assert {k for k, why in report.dropped if "pretext" not in why} == {"cls_token", "norm.weight", "norm.bias"}
    loaded = torch.load(tmp_path / "d2.pth", weights_only=True)
    assert list(loaded) == ["model"] and all(isinstance(v, torch.Tensor) for v in loaded["model"].values())
    assert all(k.startswith("backbone.net.") for k in loaded["model"])
    net = ViT(**detectron2_kwargs(ViTArch.from_dict(enc.arch_args())))
    net = load_with_checkpointer(net, tmp_path / "d2.pth", caplog)
    check_features(enc, net, 32)


def test_vitdet_resampled_pretrain_grid(tmp_path, caplog):
    """--img-size sets the grid of the stored embedding (= pretrain_img_size); detectron2 resamples
    to the input itself, so an input of the source size gives the source features again only up
    to interpolation: check the stored table against the written-out reference instead."""
    from detectron2.modeling.backbone.vit import ViT


    enc = tiny_encoder(seed=8)
    torch.save(enc.state_dict(), tmp_path / "plain.pth")
    convert(tmp_path / "plain.pth", "detectron2", tmp_path / "d2.pth", img_size=64, arch="num_heads=2")
    arch = {**enc.arch_args(), "img_size": [64, 64]}
    net = load_with_checkpointer(ViT(**detectron2_kwargs(ViTArch.from_dict(arch))), tmp_path / "d2.pth", caplog)
    torch.testing.assert_close(net.pos_embed.data, reference_resample(enc.pos_embed.data, (8, 8), (16, 16)))
    big = tiny_encoder(seed=8, img=64)
    big.load_state_dict({**enc.state_dict(), "pos_embed": net.pos_embed.data})
    check_features(big, net, 64)


@pytest.mark.skipif(not DETECTION_CONFIG.is_file(), reason="the detection configs are not in this checkout")
def test_vitdet_from_the_project_detection_config(tmp_path, caplog):
    """The ViT of this project's ViTDet recipe, window attention and relative position off."""
    from detectron2.config import LazyConfig, instantiate

    enc = tiny_encoder(seed=9)
    torch.save(enc.state_dict(), tmp_path / "plain.pth")
    convert(tmp_path / "plain.pth", "detectron2", tmp_path / "d2.pth", arch="num_heads=2")
    cfg = LazyConfig.load(str(DETECTION_CONFIG))
    net_cfg = cfg.model.backbone.net
    a = enc.arch_args()
    net_cfg.update(img_size=32, patch_size=a["patch_size"], embed_dim=a["embed_dim"], depth=a["depth"],
                   num_heads=a["num_heads"], pretrain_img_size=32, window_size=0, window_block_indexes=[],
                   use_rel_pos=False, drop_path_rate=0.0)
    net = load_with_checkpointer(instantiate(net_cfg), tmp_path / "d2.pth", caplog)
    check_features(enc, net, 32)
