"""Reading every source format (droppos/backbones/source.py and readers/), its traps, and bad inputs."""

from __future__ import annotations

import argparse

import pytest
import torch
from convert_helpers import (
    HEADS,
    IMG,
    PATCH,
    WIDTH,
    droppos_official_state,
    tiny_encoder,
    write_droppos_official,
    write_mae_official,
)
from droppos.pretrain.droppos import DropPos
from droppos.backbones.readers import detect_layout
from droppos.backbones.source import load_backbone

from droppos.models.pos_embed import sincos_2d
from droppos.utils.checkpoint import save_encoder


def assert_same_encoder(bb, enc):
    ref = enc.state_dict()
    assert set(bb.state_dict) == set(ref)
    for k, v in ref.items():
        assert torch.equal(bb.state_dict[k], v), k


def test_own_encoder_file(tmp_path):
    enc = tiny_encoder()
    meta = {"method": "mae", "arch": enc.arch_args(), "epochs": 10, "epochs_done": 4, "config": {"lr": 1.0}}
    save_encoder(tmp_path / "encoder.pth", enc.state_dict(), meta)
    bb = load_backbone(tmp_path / "encoder.pth")
    assert bb.meta["format"] == "encoder" and bb.meta["method"] == "mae"
    assert bb.meta["epochs"] == 4  # an interrupted run's encoder is named by what it did
    assert bb.arch.to_dict() == enc.arch_args() and bb.dropped == []
    assert bb.backbone["id"] == "test_own_encoder_file0"  # named after the run folder (encoder.pth is generic)
    assert bb.backbone["method"] == "mae" and bb.backbone["epochs"] == 4 and bb.backbone["arch"] == "vit_d64x2_p4"
    assert len(bb.backbone["sha256"]) == 16
    assert_same_encoder(bb, enc)


def test_own_checkpoint_drops_pretext_keys(tmp_path):
    enc = tiny_encoder()
    method = DropPos(enc, decoder_dim=32, decoder_depth=1, decoder_heads=2, multi_task=True)
    torch.save({"meta": {"method": "droppos", "arch": enc.arch_args(), "epochs": 3, "epochs_done": 3},
                "model": method.state_dict(), "optimizer": {"state": {}, "param_groups": []}}, tmp_path / "checkpoint.pth")
    bb = load_backbone(tmp_path / "checkpoint.pth")
    assert bb.meta["format"] == "checkpoint" and bb.meta["method"] == "droppos"
    dropped = {k for k, _ in bb.dropped}
    assert "mask_pos_token" in dropped and any(k.startswith("pos_decoder.") for k in dropped)
    assert any(k.startswith("pixel_decoder.") for k in dropped)
    assert dropped == {k for k in method.state_dict() if not k.startswith("encoder.")}
    assert_same_encoder(bb, enc)


def test_official_droppos_module_prefix_and_string_model(tmp_path):
    enc = tiny_encoder()
    obj = write_droppos_official(tmp_path / "droppos.pth", enc)
    assert isinstance(obj["model"], str) and all(k.startswith("module.") for k in obj["state_dict"])
    bb = load_backbone(tmp_path / "droppos.pth", arch=f"num_heads={HEADS}")
    assert bb.meta["format"] == "droppos" and bb.meta["method"] == "droppos" and bb.meta["epochs"] == 200
    assert any("module." in n for n in bb.notes)
    assert any("does not match the weights" in n for n in bb.notes)  # the name says base, the weights are tiny
    expected_drop = {k for k in droppos_official_state(enc) if k not in enc.state_dict()}
    assert {k for k, _ in bb.dropped} == expected_drop
    assert {"mask_pos_token", "mask_token", "decoder_pred.weight", "aux_decoder_pos_embed"} <= expected_drop
    assert_same_encoder(bb, enc)


def test_official_droppos_needs_heads_for_unusual_width(tmp_path):
    write_droppos_official(tmp_path / "droppos.pth", tiny_encoder())
    with pytest.raises(ValueError, match=r"droppos.pth: cannot tell the number of attention heads.*--arch num_heads"):
        load_backbone(tmp_path / "droppos.pth")


def test_string_model_key_trap_is_named(tmp_path):
    """Forcing the MAE reader on a DropPos file must not silently load nothing."""
    write_droppos_official(tmp_path / "droppos.pth", tiny_encoder())
    with pytest.raises(ValueError, match="'model' holds a string.*--from droppos"):
        load_backbone(tmp_path / "droppos.pth", fmt="mae")


def test_forced_format_that_does_not_fit(tmp_path):
    torch.save(dict(tiny_encoder().state_dict()), tmp_path / "plain.pth")
    for fmt in ("droppos", "checkpoint", "mae"):
        with pytest.raises(ValueError, match=f"plain.pth: is not in the {fmt} layout.*drop --from"):
            load_backbone(tmp_path / "plain.pth", fmt=fmt, arch="num_heads=2")


def test_official_mae_args_namespace_reads_without_trust(tmp_path):
    """An argparse.Namespace is built by the restricted unpickler: no --trust-pickle needed."""
    enc = tiny_encoder()
    write_mae_official(tmp_path / "mae.pth", enc)
    bb = load_backbone(tmp_path / "mae.pth", arch="num_heads=2")
    assert bb.meta["format"] == "mae" and bb.meta["method"] == "mae" and bb.meta["epochs"] == 800
    assert {k for k, _ in bb.dropped} >= {"mask_token", "decoder_pos_embed", "decoder_pred.weight"}
    assert_same_encoder(bb, enc)


def test_official_mae_encoder_only_release_loads_safely(tmp_path):
    enc = tiny_encoder()
    torch.save({"model": enc.state_dict()}, tmp_path / "mae_pretrain.pth")
    bb = load_backbone(tmp_path / "mae_pretrain.pth", arch="num_heads=2")
    assert bb.meta["format"] == "deit" and bb.dropped == []
    assert bb.meta["method"] == "unknown"  # a {'model': ...} wrapper does not say who made it
    assert_same_encoder(bb, enc)


def test_heads_from_the_standard_table_and_model_name(tmp_path):
    enc = tiny_encoder(width=192, depth=1, heads=3)
    torch.save({"model": enc.state_dict(), "args": argparse.Namespace(model="mae_vit_tiny_patch4", input_size=IMG,
                                                                     epochs=5)}, tmp_path / "m.pth")
    bb = load_backbone(tmp_path / "m.pth")
    assert bb.arch.num_heads == 3 and bb.arch.depth == 1 and bb.arch.img_size == (IMG, IMG)
    torch.save(enc.state_dict(), tmp_path / "plain.pth")
    bb = load_backbone(tmp_path / "plain.pth")
    assert bb.arch.num_heads == 3 and any("every known ViT family has 3 heads at width 192" in n for n in bb.notes)


def test_head_count_is_never_guessed_where_families_disagree(tmp_path):
    """ViT-S: 6 heads in DeiT/DINO/timm, 12 in MoCo v3; a file of unknown family must say so."""
    torch.save(tiny_encoder(width=384, depth=1, heads=6).state_dict(), tmp_path / "vit_s.pth")
    with pytest.raises(ValueError, match=r"vit_s.pth: cannot tell the number of attention heads of a width-384 ViT "
                                         r"\(known families: .*mocov3 12.*--arch num_heads=N"):
        load_backbone(tmp_path / "vit_s.pth")
    assert load_backbone(tmp_path / "vit_s.pth", arch="num_heads=6").arch.num_heads == 6


def test_arch_override_must_agree_with_shapes(tmp_path):
    torch.save(tiny_encoder().state_dict(), tmp_path / "plain.pth")
    with pytest.raises(ValueError, match="embed_dim=768 but the weights have embed_dim=64"):
        load_backbone(tmp_path / "plain.pth", arch="base")
    with pytest.raises(ValueError, match="unknown field"):
        load_backbone(tmp_path / "plain.pth", arch="heads=2")


def test_timm_state_dict_head_and_safetensors(tmp_path):
    from safetensors.torch import save_file

    enc = tiny_encoder()
    sd = dict(enc.state_dict())
    sd["head.weight"], sd["head.bias"] = torch.randn(7, WIDTH), torch.randn(7)
    torch.save(sd, tmp_path / "deit.pth")
    save_file({k: v.half() for k, v in sd.items()}, tmp_path / "deit.safetensors")
    bb = load_backbone(tmp_path / "deit.pth", arch="num_heads=2")
    assert bb.meta["format"] == "timm" and bb.meta["method"] == "unknown"
    assert load_backbone(tmp_path / "deit.pth", arch="num_heads=2", method="supervised").backbone["method"] == "supervised"
    assert bb.head["weight"].shape == (7, WIDTH) and {k for k, _ in bb.dropped} == {"head.weight", "head.bias"}
    assert_same_encoder(bb, enc)
    bb16 = load_backbone(tmp_path / "deit.safetensors", arch="num_heads=2")
    assert bb16.state_dict["cls_token"].dtype == torch.float32 and any("float16" in n for n in bb16.notes)
    assert torch.allclose(bb16.state_dict["blocks.0.attn.qkv.weight"], enc.state_dict()["blocks.0.attn.qkv.weight"], atol=1e-2)


def test_timm_no_embed_class_pos_embed_gets_a_zero_cls_row(tmp_path):
    enc = tiny_encoder()
    sd = dict(enc.state_dict())
    sd["pos_embed"] = sd["pos_embed"][:, 1:]
    torch.save(sd, tmp_path / "noembed.pth")
    bb = load_backbone(tmp_path / "noembed.pth", arch="num_heads=2")
    assert bb.state_dict["pos_embed"].shape == enc.pos_embed.shape
    assert torch.equal(bb.state_dict["pos_embed"][:, 0], torch.zeros(1, WIDTH))


@pytest.mark.parametrize("extra, message", [
    ({"dist_token": (1, 1, WIDTH)}, "distilled DeiT"),
    ({"blocks.0.gamma_1": (WIDTH,)}, "BEiT/data2vec relative position bias and layer scale"),
    ({"norm_pre.weight": (WIDTH,)}, "CLIP-style pre-norm"),
    ({"blocks.0.attn.q_norm.weight": (WIDTH // 2,)}, "qk-norm"),
    ({"attn_pool.latent": (1, 1, WIDTH)}, "SigLIP attention-pooling"),
    ({"fc_norm.weight": (WIDTH,)}, "average pooling"),
    ({"blocks.0.attn.mystery": (3,)}, "neither encoder nor known pretext"),
])
def test_foreign_vit_parts_are_refused(tmp_path, extra, message):
    sd = dict(tiny_encoder().state_dict())
    sd.update({k: torch.zeros(s) for k, s in extra.items()})
    torch.save(sd, tmp_path / "x.pth")
    with pytest.raises(ValueError, match=f"x.pth: .*{message}"):
        load_backbone(tmp_path / "x.pth", arch="num_heads=2")


def test_missing_encoder_weight_is_an_error(tmp_path):
    sd = dict(tiny_encoder().state_dict())
    del sd["blocks.1.mlp.fc2.bias"]
    torch.save(sd, tmp_path / "x.pth")
    with pytest.raises(ValueError, match=r"x.pth: encoder weights do not match.*missing blocks.1.mlp.fc2.bias"):
        load_backbone(tmp_path / "x.pth", arch="num_heads=2")


def test_bad_files_get_one_line_errors(tmp_path):
    import torchvision

    (tmp_path / "text.pth").write_text("not a checkpoint\n")
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "cnn.pth")
    torch.save(dict(tiny_encoder().state_dict()), tmp_path / "full.pth")
    data = (tmp_path / "full.pth").read_bytes()
    (tmp_path / "truncated.pth").write_bytes(data[: len(data) // 2])
    torch.save([1, 2, 3], tmp_path / "list.pth")
    torch.save({"epoch": 3, "note": "hi"}, tmp_path / "dict.pth")
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    cases = {"text.pth": "not a readable PyTorch checkpoint", "cnn.pth": "a ResNet (key layer1.0.conv1.weight), not a ViT; read it as a generic backbone through timm: --backbone timm:resnet50:",
             "truncated.pth": "not a readable PyTorch checkpoint", "list.pth": "holds a list, not a checkpoint",
             "dict.pth": "no ViT encoder in this file (top-level keys: epoch, note)", "bad.safetensors": "not a readable safetensors",
             "absent.pth": "no such checkpoint file"}
    for name, message in cases.items():
        with pytest.raises((ValueError, FileNotFoundError)) as info:
            load_backbone(tmp_path / name)
        text = str(info.value)
        assert name in text and message in text and "\n" not in text, text
    with pytest.raises(ValueError, match="--from onnx: unknown layout"):
        load_backbone(tmp_path / "full.pth", fmt="onnx")


def test_scratch_is_deterministic_and_mae_initialised():
    a = load_backbone("scratch:tiny_p4_32")
    b = load_backbone("scratch:tiny_p4_32")
    c = load_backbone("scratch:tiny_p4_32_s1")
    assert a.arch.to_dict() == dict(img_size=[32, 32], patch_size=4, in_chans=3, embed_dim=192, depth=12, num_heads=3, mlp_ratio=4.0)
    assert a.meta["method"] == "scratch" and a.backbone["id"] == "scratch-tiny_p4_32"
    assert a.backbone["arch"] == "vit_tiny_p4"
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    assert not torch.equal(a.state_dict["blocks.0.attn.qkv.weight"], c.state_dict["blocks.0.attn.qkv.weight"])
    assert torch.allclose(a.state_dict["pos_embed"][0], sincos_2d(192, (8, 8)))
    with pytest.raises(ValueError, match="scratch:<size>_p<patch>_<img>"):
        load_backbone("scratch:enormous")


def test_detect_layout_on_dicts():
    enc = tiny_encoder()
    assert detect_layout({"state_dict": {}, "model": "name"}) == "droppos"
    assert detect_layout({"model": enc.state_dict()}) == "deit"
    assert detect_layout({"model": {**enc.state_dict(), "mask_token": enc.cls_token}}) == "mae"
    assert detect_layout(dict(enc.state_dict())) == "timm"
    assert detect_layout({"meta": {}, "model": {"encoder.cls_token": enc.cls_token}}) == "checkpoint"


def test_backbone_encoder_resamples(tmp_path):
    bb = load_backbone("scratch:tiny_p4_32")
    model = bb.encoder(img_size=48)
    assert model.pos_embed.shape == (1, 1 + 12 * 12, 192)
    with pytest.raises(ValueError, match="not divisible by the patch size 4"):
        bb.encoder(img_size=30)
    assert PATCH == 4


@pytest.mark.parametrize("model, family, timm_source", [
    ("swin_tiny_patch4_window7_224", "a Swin Transformer", "timm:swin_base_patch4_window7_224:"),
    ("convnext_atto", "a ConvNeXt", "timm:convnext_base:"),
    ("resnet18", "a ResNet", "timm:resnet50:"),
])
@pytest.mark.parametrize("wrap", ["flat", "model", "state_dict"])
def test_non_vit_files_name_their_family_and_the_generic_source(tmp_path, model, family, timm_source, wrap):
    """A Swin, ConvNeXt or ResNet file in timm's names (bare, or as DeiT / iBOT wrap it) is named as such, with
    the generic source that reads it; a Swin is not "BEiT relative position bias"."""
    import timm

    sd = timm.create_model(model, pretrained=False).state_dict()
    path = tmp_path / f"{model}.pth"
    torch.save(sd if wrap == "flat" else {wrap: sd}, path)
    with pytest.raises(ValueError) as info:
        load_backbone(path)
    text = str(info.value)
    assert f"{family} (key " in text and f"{timm_source}{path}" in text and "BEiT" not in text, text
