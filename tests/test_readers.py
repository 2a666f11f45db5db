"""Every release layout reads into an encoder whose features equal the original model's (1e-5).

The reference is the original network built by timm (torchvision, transformers) from the same
random weights, in float64. Then each read backbone goes through the detectron2 and mmseg
converters into the real engines' ViTs, which must give the same features again.
"""

from __future__ import annotations

import pytest
import torch
from droppos.backbones.convert import ConversionError, convert_backbone
from droppos.backbones.source import load_backbone
from layout_files import (
    IMG,
    original_patch_tokens,
    timm_vit,
    write_augreg,
    write_deit,
    write_dino_full,
    write_dinov2_hub,
    write_dinov2_timm,
    write_hf,
    write_ibot_teacher,
    write_mocov3,
    write_torchvision,
)

from droppos.errors import UserError
from droppos.utils.checkpoint import safe_load


def x64(h: int = IMG, w: int = IMG) -> torch.Tensor:
    return torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def tokens_of(bb, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return bb.encoder().double().eval().forward_features(x)


def assert_features(bb, ref: torch.nn.Module, x: torch.Tensor | None = None) -> None:
    x = x64() if x is None else x
    with torch.no_grad():
        want = ref.double().eval().forward_features(x)
    torch.testing.assert_close(tokens_of(bb, x), want, atol=1e-5, rtol=0)


def dropped(bb) -> set[str]:
    return {k for k, _ in bb.dropped}


# ---------------------------------------------------------------------------------------- layouts
def test_dino_full_checkpoint_teacher_by_default_student_on_request(tmp_path):
    refs = write_dino_full(tmp_path / "checkpoint.pth")
    bb = load_backbone(tmp_path / "checkpoint.pth")
    assert bb.meta["format"] == "dino" and bb.meta["part"] == "teacher" and bb.arch.num_heads == 6
    assert any("read the teacher (default; --part student picks the other)" in n for n in bb.notes)
    assert {"head.mlp.0.weight", "head.last_layer.weight_g"} <= dropped(bb)
    assert bb.backbone["epochs"] == 100  # the file's own 'epoch' (DINO saves epoch + 1)
    assert bb.backbone["method"] == "unknown"  # how a file is packed does not say which method made it
    assert_features(bb, refs["teacher"])
    student = load_backbone(tmp_path / "checkpoint.pth", part="student", method="dino", epochs=100)
    assert student.backbone["method"] == "dino" and student.backbone["epochs"] == 100
    assert_features(student, refs["student"])
    with pytest.raises(UserError, match="--part momentum: choose one of|holds teacher and student"):
        load_backbone(tmp_path / "checkpoint.pth", part="momentum")


def test_ibot_full_and_teacher_files(tmp_path):
    refs = write_dino_full(tmp_path / "full.pth", ibot=True)
    bb = load_backbone(tmp_path / "full.pth", part="student")
    assert bb.meta["family"] == "ibot" and "masked_embed" in dropped(bb)
    assert_features(bb, refs["student"])
    ref = write_ibot_teacher(tmp_path / "checkpoint_teacher.pth")
    bb = load_backbone(tmp_path / "checkpoint_teacher.pth", arch="num_heads=6")
    assert bb.meta["format"] == "ibot"
    assert_features(bb, ref)


@pytest.mark.parametrize("ibot", [False, True])
def test_dino_and_ibot_networks_saved_alone(tmp_path, ibot):
    """``teacher.state_dict()`` (``backbone.*`` + ``head.*``) and the DDP student (``module.backbone.*``, iBOT's
    with ``masked_embed`` and a patch head ``last_layer2``), each saved alone as the repositories' scripts do."""
    refs = write_dino_full(tmp_path / "full.pth", ibot=ibot)
    full = safe_load(tmp_path / "full.pth")  # the args Namespace reads without trust
    student = dict(full["student"])
    if ibot:
        student["module.head.last_layer2.weight_g"] = torch.ones(256, 1)
    torch.save(full["teacher"], tmp_path / "teacher.pth")
    torch.save(student, tmp_path / "student.pth")
    for name in ("teacher", "student"):
        bb = load_backbone(tmp_path / f"{name}.pth")
        assert bb.meta["format"] == "dino_net" and bb.arch.num_heads == 6
        assert {"head.mlp.0.weight", "head.last_layer.weight_g"} <= dropped(bb)
        assert ("masked_embed" in dropped(bb)) == (ibot and name == "student")
        assert bb.meta["family"] == ("ibot" if ibot and name == "student" else "dino")
        assert_features(bb, refs[name])


def test_mocov3_has_12_heads_at_vit_s(tmp_path):
    ref = write_mocov3(tmp_path / "vit-s-300ep.pth.tar")
    bb = load_backbone(tmp_path / "vit-s-300ep.pth.tar")
    assert bb.meta["format"] == "mocov3" and bb.arch.num_heads == 12
    assert any("mocov3 family" in n for n in bb.notes)
    assert {k for k in dropped(bb) if "momentum_encoder" in k} and "module.predictor.0.weight" in dropped(bb)
    assert "module.base_encoder.head.0.weight" in dropped(bb)
    assert_features(bb, ref)
    assert load_backbone(tmp_path / "vit-s-300ep.pth.tar", part="momentum").arch.num_heads == 12


def test_mocov3_deit_converted_form_asks_for_heads(tmp_path):
    """``{'model': ...}`` at width 384 may be DeiT-S (6 heads) or MoCo v3 (12): never guessed."""
    ref = write_mocov3(tmp_path / "linear-vit-s.pth", converted=True)
    with pytest.raises(UserError, match=r"width-384 ViT \(known families: .*\); give it with --arch num_heads=N"):
        load_backbone(tmp_path / "linear-vit-s.pth")
    assert_features(load_backbone(tmp_path / "linear-vit-s.pth", arch="num_heads=12"), ref)


def test_official_deit_keeps_its_head_aside(tmp_path):
    ref = write_deit(tmp_path / "deit_tiny_patch16_224.pth")
    bb = load_backbone(tmp_path / "deit_tiny_patch16_224.pth")
    assert bb.meta["format"] == "deit" and bb.arch.num_heads == 3
    assert bb.head["weight"].shape == (10, 192) and dropped(bb) == {"head.weight", "head.bias"}
    assert_features(bb, ref)


@pytest.mark.parametrize("reg", [0, 4])
def test_dinov2_timm_layer_scale_folded_registers_kept(tmp_path, reg):
    ref = write_dinov2_timm(tmp_path / "model.safetensors", reg)
    bb = load_backbone(tmp_path / "model.safetensors")
    assert bb.meta["format"] == "dinov2" and bb.arch.num_heads == 6
    assert bb.arch.reg_tokens == reg
    assert any("layer scale folded" in n for n in bb.notes)
    assert_features(bb, ref)


def test_deit3_as_timm_publishes_it_named_by_its_timm_model(tmp_path):
    """DeiT III (paper's supervised ViT-L row, timm ``deit3_large_patch16_224.fb_in1k``): layer scale, no
    [cls] row in pos_embed, its classifier; ``arch:`` names the timm model, as the spec does."""
    import timm
    from layout_files import randomise
    from safetensors.torch import save_file

    ref = randomise(timm.create_model("deit3_small_patch16_224", pretrained=False, num_classes=10), seed=14)
    assert ref.pos_embed.shape[1] == 196 and hasattr(ref.blocks[0].ls1, "gamma")  # the layout under test
    path = tmp_path / "deit3_small_patch16_224.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    bb = load_backbone(path, arch="deit3_small_patch16_224")
    assert (bb.arch.num_heads, bb.arch.patch_size, bb.arch.grid) == (6, 16, (14, 14))
    assert bb.head["weight"].shape == (10, 384) and dropped(bb) == {"head.weight", "head.bias"}
    assert any("layer scale folded" in n for n in bb.notes) and any("zero row" in n for n in bb.notes)
    assert_features(bb, ref, x64(224, 224))


def test_dinov2_hub_names(tmp_path):
    ref = write_dinov2_hub(tmp_path / "dinov2_vits14_reg4_pretrain.pth")
    bb = load_backbone(tmp_path / "dinov2_vits14_reg4_pretrain.pth")
    assert bb.arch.reg_tokens == 4 and "mask_token" in dropped(bb)
    assert_features(bb, ref)


def test_registers_refused_by_plain_vit_engines_with_one_line(tmp_path):
    write_dinov2_timm(tmp_path / "reg.safetensors", reg=4)
    bb = load_backbone(tmp_path / "reg.safetensors")
    for target in ("detectron2", "mmseg"):
        with pytest.raises(UserError, match=r"4 register tokens.*timm:"):
            convert_backbone(bb, target)


@pytest.mark.parametrize("mae", [False, True])
def test_hugging_face_vit_and_vitmae(tmp_path, mae):
    ref = write_hf(tmp_path / "model.safetensors", mae=mae)
    bb = load_backbone(tmp_path / "model.safetensors")
    assert bb.meta["format"] == "hf" and bb.arch.num_heads == 3
    x = x64()
    with torch.no_grad():
        kw = {"noise": torch.arange(16.0, dtype=torch.float64).expand(2, 16)} if mae else {}
        want = ref.double().eval()(pixel_values=x, **kw).last_hidden_state
    torch.testing.assert_close(tokens_of(bb, x), want, atol=1e-5, rtol=0)
    if not mae:
        assert {k for k in dropped(bb) if k.startswith("pooler.")}


def test_torchvision_vit(tmp_path):
    ref = write_torchvision(tmp_path / "vit_b_16.pth").double()
    bb = load_backbone(tmp_path / "vit_b_16.pth")
    assert bb.meta["format"] == "torchvision" and bb.arch.num_heads == 12 and bb.head["weight"].shape == (10, 768)
    x = x64()
    with torch.no_grad():
        seq = ref._process_input(x)
        want = ref.encoder(torch.cat([ref.class_token.expand(2, -1, -1), seq], dim=1))
    torch.testing.assert_close(tokens_of(bb, x), want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("layout", [
    dict(),  # the AugReg release names
    dict(prefix="opt/target/"),
    dict(big_vision=True, prefix="params/", depth=3, mlp_ratio=1.5),  # big_vision, one block per key
    dict(big_vision=True, img_size=136),  # known by its top-level pos_embedding alone; 17 x 17 = 289 cells
    dict(big_vision=True, stacked=True, depth=4, mlp_ratio=1.5),  # big_vision, blocks stacked on axis 0
    dict(big_vision=True, stacked=True, prefix="params/img/", depth=5, heads=4, width=256),
])
def test_augreg_npz_through_timm_loader(tmp_path, layout):
    ref = write_augreg(tmp_path / "augreg.npz", **layout)
    bb = load_backbone(tmp_path / "augreg.npz")
    want = (layout.get("depth", 2), layout.get("heads", 3), layout.get("width", 192), layout.get("mlp_ratio", 4.0))
    assert bb.meta["format"] == "augreg"
    assert (bb.arch.depth, bb.arch.num_heads, bb.arch.embed_dim, bb.arch.mlp_ratio) == want
    assert bb.head["weight"].shape == (10, want[2])
    assert bb.arch.img_size == (layout.get("img_size", 32),) * 2
    assert_features(bb, ref, x64(*bb.arch.img_size))


def test_vit_without_qkv_bias_gets_an_exact_zero_bias(tmp_path):
    ref = timm_vit(width=192, heads=3, qkv_bias=False)
    torch.save(ref.state_dict(), tmp_path / "nobias.pth")
    bb = load_backbone(tmp_path / "nobias.pth")
    assert not bb.state_dict["blocks.0.attn.qkv.bias"].any() and any("zero bias" in n for n in bb.notes)
    assert_features(bb, ref)


def test_non_square_position_grid(tmp_path):
    ref = timm_vit(width=192, heads=3, img_size=(32, 64))
    torch.save(ref.state_dict(), tmp_path / "wide.pth")
    with pytest.raises(UserError, match=r"32 patch positions \(not a square grid\).*--arch img_size=HxW"):
        load_backbone(tmp_path / "wide.pth")
    bb = load_backbone(tmp_path / "wide.pth", arch="img_size=32x64")
    assert bb.arch.img_size == (32, 64)
    assert_features(bb, ref, x64(32, 64))


@pytest.mark.parametrize("model_name, kwargs, feature", [
    ("beit_base_patch16_224", dict(embed_dim=64, depth=1, num_heads=2, img_size=32), "relative position bias"),
    ("eva02_tiny_patch14_224", dict(depth=1, img_size=28), "RoPE"),
    ("vit_base_patch16_clip_224", dict(embed_dim=64, depth=1, num_heads=2, img_size=32), "CLIP-style pre-norm"),
    ("vit_base_patch16_siglip_224", dict(embed_dim=64, depth=1, num_heads=2, img_size=32), "attention-pooling"),
])
def test_architectures_that_are_not_a_plain_vit_get_one_line(tmp_path, model_name, kwargs, feature):
    import timm

    model = timm.create_model(model_name, pretrained=False, num_classes=0, **kwargs)
    torch.save(model.state_dict(), tmp_path / "m.pth")
    with pytest.raises(UserError) as info:
        load_backbone(tmp_path / "m.pth")
    text = str(info.value)
    assert feature in text and "timm:" in text and "\n" not in text, text


# ---------------------------------------------------------------------------------------- bad input
def test_prefixes_that_leave_no_encoder_list_the_top_level_keys(tmp_path):
    torch.save({"state_dict": {"module.base_encoder.head.0.weight": torch.zeros(2, 2)}, "epoch": 1}, tmp_path / "x.pth")
    with pytest.raises(UserError, match=r"x.pth: no ViT encoder left after the mocov3 layout's prefixes \(keys: "):
        load_backbone(tmp_path / "x.pth")
    torch.save({"teacher": {"head.mlp.0.weight": torch.zeros(2, 2)}}, tmp_path / "y.pth")
    with pytest.raises(UserError, match=r"y.pth: teacher has no 'backbone.' weights \(keys: head.mlp.0.weight\)"):
        load_backbone(tmp_path / "y.pth")


def test_nonfinite_weights_are_an_error_unless_allowed(tmp_path):
    ref = timm_vit(width=192, heads=3)
    sd = dict(ref.state_dict())
    sd["blocks.1.mlp.fc1.weight"] = sd["blocks.1.mlp.fc1.weight"].clone()
    sd["blocks.1.mlp.fc1.weight"][0, 0] = float("nan")
    torch.save(sd, tmp_path / "nan.pth")
    with pytest.raises(UserError, match=r"nan.pth: non-finite weights \(NaN/Inf\) in blocks.1.mlp.fc1.weight.*"
                                        r"--allow-nonfinite"):
        load_backbone(tmp_path / "nan.pth")
    assert torch.isnan(load_backbone(tmp_path / "nan.pth", allow_nonfinite=True).state_dict["blocks.1.mlp.fc1.weight"]).any()


def test_part_on_a_single_network_file_is_refused(tmp_path):
    write_deit(tmp_path / "deit.pth")
    with pytest.raises(UserError, match="--part teacher: this deit file holds one network; drop --part"):
        load_backbone(tmp_path / "deit.pth", part="teacher")


# ---------------------------------------------------------------------------------------- into the engines
@pytest.mark.detectron2
@pytest.mark.parametrize("writer", [write_dino_full, write_mocov3, write_dinov2_timm, write_hf, write_torchvision])
def test_read_layouts_give_the_original_networks_features_in_detectron2_and_mmseg(tmp_path, writer):
    """The engines' ViTs loaded strictly from a read layout compute what the original network computes (its own
    modules, in :func:`original_patch_tokens`): a reader that swapped q and k, or an engine load that kept the
    model's own init for a weight, gives other features."""
    pytest.importorskip("detectron2.modeling.backbone.vit")
    pytest.importorskip("mmseg")
    from detectron2.modeling.backbone.vit import ViT
    from droppos.backbones.targets import detectron2_kwargs, mmseg_kwargs
    from droppos.transfer.segmentation.mmcv_ops import ensure_mmcv_ops

    path = tmp_path / ("src.safetensors" if writer in (write_hf, write_dinov2_timm) else "src.pth")
    original = writer(path)
    original = (original["teacher"] if isinstance(original, dict) else original).double().eval()  # DINO: the teacher
    bb = load_backbone(path, arch="num_heads=12" if writer is write_mocov3 else None)
    x = x64()
    with torch.no_grad():
        plain, with_cls = original_patch_tokens(original, x, False), original_patch_tokens(original, x, True)
    sd, _ = convert_backbone(bb, "detectron2")
    net = ViT(**detectron2_kwargs(bb.arch)).double().eval()
    net.load_state_dict({k[len("backbone.net."):]: v for k, v in sd.items()}, strict=True)
    with torch.no_grad():
        torch.testing.assert_close(net(x)["last_feat"], plain, atol=1e-5, rtol=0)
    ensure_mmcv_ops()
    from mmseg.models.backbones import MAE

    sd, _ = convert_backbone(bb, "mmseg")
    model = MAE(**mmseg_kwargs(bb.arch))
    computed = {k: v for k, v in model.state_dict().items() if k.endswith("relative_position_index")}
    assert set(model.state_dict()) - set(sd) == set(computed)  # only the index buffers mmseg computes, no weight
    model.load_state_dict({**sd, **computed}, strict=True)
    model.double().eval()
    with torch.no_grad():
        (out,) = model(x)
    torch.testing.assert_close(out, with_cls, atol=1e-5, rtol=0)


def test_lost_weight_still_stops_conversion():
    bb = load_backbone("scratch:tiny_p8_32")
    del bb.state_dict["blocks.0.mlp.fc1.bias"]
    with pytest.raises(ConversionError):
        convert_backbone(bb, "timm")
