"""What enters the backbone layer: files the project wrote itself read back, and every bad size in one line.

References are the original networks: the encoder the file was converted from, or mmseg's own ``MAE``
built from the file; never the reader's own output.
"""

from __future__ import annotations

import pytest
import torch
from convert_helpers import HEADS, tiny_encoder, write_droppos_official

from droppos.backbones.arch import ViTArch
from droppos.backbones.convert import convert
from droppos.backbones.source import load_backbone
from droppos.cli import main
from droppos.errors import UserError


def _one_line_error(capsys, argv: list[str], *needles: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


# ---------------------------------------------------------------------------------------- read back
def test_mmseg_output_with_final_norm_reads_back_as_the_source_encoder(tmp_path):
    enc = tiny_encoder(seed=21)
    write_droppos_official(tmp_path / "droppos.pth", enc)
    convert(tmp_path / "droppos.pth", "mmseg", tmp_path / "m.pth", arch=f"num_heads={HEADS}", final_norm=True)
    bb = load_backbone(tmp_path / "m.pth", arch=f"num_heads={HEADS}")
    assert bb.meta["format"] == "mmseg" and bb.arch.to_dict() == enc.arch_args()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(bb.encoder().double().forward_features(x), enc.double().forward_features(x),
                                   atol=1e-10, rtol=0)


def test_mmseg_segmentor_with_layer_scale_reads_back_as_mmseg_computes_it(tmp_path):
    """A whole segmentor's state dict (``backbone.*`` + heads) whose layer scale is not one: the encoder read
    from it gives mmseg's own ``MAE`` features (gamma folded exactly, zero relative bias dropped)."""
    shim = pytest.importorskip("droppos.transfer.segmentation.mmcv_ops")
    shim.ensure_mmcv_ops()
    from mmseg.models.backbones import MAE

    torch.manual_seed(3)
    net = MAE(img_size=32, patch_size=4, embed_dims=64, num_layers=2, num_heads=HEADS, mlp_ratio=4,
              norm_cfg=dict(type="LN", eps=1e-6), init_values=0.5, final_norm=True, out_indices=[1])
    net.eval()  # BEiT.train() returns None: no chaining
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "relative_position_bias_table" in name:
                p.zero_()
            else:
                p.add_(0.1 * torch.randn_like(p))
    sd = {f"backbone.{k}": v for k, v in net.state_dict().items()}
    sd["decode_head.conv_seg.weight"] = torch.randn(5, 64, 1, 1)
    torch.save({"state_dict": sd, "meta": {}}, tmp_path / "segmentor.pth")
    bb = load_backbone(tmp_path / "segmentor.pth", arch=f"num_heads={HEADS}")
    assert {k for k, why in bb.dropped if "heads" in why} == {"decode_head.conv_seg.weight"}
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        (ref,) = net.double()(x)  # (N, D, 8, 8): the patch tokens after the final norm
        out = bb.encoder().double().forward_features(x)[:, 1:].transpose(1, 2).reshape(ref.shape)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)  # mmseg resamples its table even at the same size


def test_mmseg_output_without_final_norm_and_detectron2_output_name_their_source(tmp_path):
    enc = tiny_encoder(seed=22)
    write_droppos_official(tmp_path / "droppos.pth", enc)
    convert(tmp_path / "droppos.pth", "mmseg", tmp_path / "m.pth", arch=f"num_heads={HEADS}")
    convert(tmp_path / "droppos.pth", "detectron2", tmp_path / "d.pth", arch=f"num_heads={HEADS}")
    for name, what in (("m.pth", "without the final norm"), ("d.pth", "detectron2 ViTDet weights")):
        with pytest.raises(UserError) as info:
            load_backbone(tmp_path / name)
        text = str(info.value)
        assert what in text and f"converted from {tmp_path / 'droppos.pth'}" in text and "\n" not in text, text


def test_mmseg_file_with_a_relative_position_bias_is_refused(tmp_path):
    enc = tiny_encoder(seed=23)
    write_droppos_official(tmp_path / "droppos.pth", enc)
    convert(tmp_path / "droppos.pth", "mmseg", tmp_path / "m.pth", arch=f"num_heads={HEADS}", final_norm=True)
    sd = torch.load(tmp_path / "m.pth", weights_only=True)
    sd["state_dict"]["layers.1.attn.relative_position_bias_table"][0, 0] = 0.5
    torch.save(sd, tmp_path / "beit.pth")
    with pytest.raises(UserError, match=r"relative position bias that is not zero \(layers\.1\.attn"):
        load_backbone(tmp_path / "beit.pth", arch=f"num_heads={HEADS}")


# ---------------------------------------------------------------------------------------- bad sizes
@pytest.mark.parametrize("fields, message", [
    (dict(patch_size=0), "patch_size=0: expected a positive integer"),
    (dict(depth=-1), "depth=-1: expected a positive integer"),
    (dict(img_size=30), "image size 30x30 is not divisible by the patch size 4"),
    (dict(img_size=(32, 0)), "img_size=32x0: expected positive sizes"),
    (dict(num_heads=3), "embed_dim=64 is not divisible by num_heads=3"),
    (dict(mlp_ratio=0.0), "mlp_ratio=0.0: expected a positive number"),
    (dict(reg_tokens=-2), "reg_tokens=-2: expected an integer >= 0"),
    (dict(patch_size=True), "patch_size=True: expected a positive integer"),
])
def test_vit_arch_names_the_bad_value(fields, message):
    base = dict(img_size=32, patch_size=4, embed_dim=64, depth=2, num_heads=2)
    with pytest.raises(UserError) as info:
        ViTArch(**{**base, **fields})
    assert str(info.value).startswith(message)


def test_vit_arch_resizes_by_whole_patches():
    arch = ViTArch(img_size=(32, 64), patch_size=4, embed_dim=64, depth=2, num_heads=2)
    assert arch.grid == (8, 16) and arch.at(48).grid == (12, 12) and arch.at(None) is arch
    assert arch.at((16, 8)).img_size == (16, 8) and arch.to_dict()["img_size"] == [32, 64]
    assert ViTArch.from_dict(arch.to_dict()) == arch


@pytest.mark.parametrize("argv, needles", [
    (["--arch", "patch_size=0"], ("--arch patch_size=0: expected an integer >= 1",)),
    (["--arch", "img_size=-32"], ("--arch img_size=-32: expected an integer >= 1",)),
    (["--arch", "mlp_ratio=0"], ("--arch mlp_ratio=0: expected a positive number",)),
    (["--img-size", "30"], ("image size 30x30 is not divisible by the patch size 4",)),
    (["--img-size", "-8"], ("image size -8x-8: expected positive sizes",)),
    (["--img-size", "0"], ("image size 0x0: expected positive sizes",)),
])
def test_convert_bad_sizes_one_line(tmp_path, capsys, argv, needles):
    torch.save(dict(tiny_encoder().state_dict()), tmp_path / "enc.pth")
    arch = [] if argv[0] == "--arch" else ["--arch", "num_heads=2"]
    _one_line_error(capsys, ["convert", "--backbone", str(tmp_path / "enc.pth"), "--to", "timm",
                             "--out", str(tmp_path / "o.pth"), *arch, *argv], *needles)
    assert not (tmp_path / "o.pth").exists()


@pytest.mark.parametrize("source, needle", [
    ("scratch:tiny_p0_32", "scratch:tiny_p0_32: patch_size=0: expected a positive integer"),
    ("scratch:tiny_p5_32", "scratch:tiny_p5_32: image size 32x32 is not divisible by the patch size 5"),
])
def test_scratch_bad_sizes_one_line(tmp_path, capsys, source, needle):
    _one_line_error(capsys, ["convert", "--backbone", source, "--to", "timm", "--out", str(tmp_path / "o.pth")], needle)


def test_classify_bad_image_size_one_line(tmp_path, capsys):
    torch.save(dict(tiny_encoder().state_dict()), tmp_path / "enc.pth")
    (tmp_path / "data").mkdir()
    for size, needle in (("-2", "--img-size must be an integer >= 1, got -2"),
                         ("30", "image size 30x30 is not divisible by the patch size 4")):
        _one_line_error(capsys, ["classify", "linear", "--backbone", str(tmp_path / "enc.pth"), "--arch", "num_heads=2",
                                 "--data", str(tmp_path / "data"), "--img-size", size, "--output", str(tmp_path / "r")],
                        needle)


# ---------------------------------------------------------------------------------------- the registry
def test_a_new_layout_is_one_registered_reader(tmp_path, monkeypatch):
    """A reader registered once is recognised in its order, read into the encoder and offered by --from."""
    from droppos.backbones.readers import READERS, registry

    monkeypatch.setattr(registry, "READERS", dict(READERS))
    monkeypatch.setattr(registry, "FAMILY_HEADS", dict(registry.FAMILY_HEADS))
    registry.register_family("mine", {64: 2})

    @registry.register("mine", order=5, recognise=lambda obj: "my_weights" in obj)
    def read_mine(obj, where, part=None):
        return {k: (v, None) for k, v in obj["my_weights"].items()}, {"family": "mine", "method": "mine"}

    with pytest.raises(ValueError, match="registered twice"):
        registry.register("mine", order=6)(read_mine)
    enc = tiny_encoder(seed=24)
    torch.save({"my_weights": enc.state_dict()}, tmp_path / "mine.pth")
    import droppos.backbones.source as source

    monkeypatch.setattr(source, "READERS", registry.READERS)
    bb = load_backbone(tmp_path / "mine.pth")  # the head count from the family's table, nothing asked
    assert bb.meta["format"] == "mine" and bb.arch.num_heads == 2 and "mine" in registry.formats()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(bb.encoder().forward_features(x), enc.forward_features(x), atol=0, rtol=0)
