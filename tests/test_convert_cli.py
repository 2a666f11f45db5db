"""``droppos convert``: exit codes, key report, outputs that load with weights_only=True."""

from __future__ import annotations

import json

import pytest
import torch
from convert_helpers import tiny_encoder, write_droppos_official
from droppos.backbones.convert import ConversionError, convert_backbone
from droppos.backbones.source import load_backbone

from droppos.cli import main


@pytest.mark.parametrize("to, top", [("timm", None), ("detectron2", "model"), ("mmseg", "state_dict")])
def test_cli_every_target(tmp_path, capsys, to, top):
    write_droppos_official(tmp_path / "droppos.pth", tiny_encoder())
    out = tmp_path / f"{to}.pth"
    rc = main(["convert", str(tmp_path / "droppos.pth"), "--to", to, "--out", str(out), "--arch", "num_heads=2",
               "--img-size", "48"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "0 unmapped, 0 missing" in text and "dropped (pretext (official release))" in text
    assert "resampled pos_embed: grid 8x8 -> 12x12" in text
    obj = torch.load(out, weights_only=True)
    sd = obj if top is None else obj[top]
    assert all(isinstance(v, torch.Tensor) for v in sd.values())
    side = json.loads((tmp_path / f"{to}.pth.json").read_text())
    assert side["arch"]["img_size"] == [48, 48] and side["source_arch"]["img_size"] == [32, 32]
    assert side["backbone"]["method"] == "droppos" and side["backbone"]["epochs"] == 200
    assert side["report"]["ok"] is True


def test_cli_bad_inputs_exit_2_with_one_line(tmp_path, capsys):
    import pathlib

    torch.save({"model": tiny_encoder().state_dict(), "where": pathlib.PurePosixPath("/x")}, tmp_path / "obj.pth")
    (tmp_path / "junk.pth").write_bytes(b"\x00\x01junk")
    cases = [
        (["convert", str(tmp_path / "obj.pth"), "--to", "timm", "--out", str(tmp_path / "o.pth")], "--trust-pickle"),
        (["convert", str(tmp_path / "junk.pth"), "--to", "timm", "--out", str(tmp_path / "o.pth")], "junk.pth: not a readable"),
        (["convert", str(tmp_path / "nope.pth"), "--to", "timm", "--out", str(tmp_path / "o.pth")], "no such checkpoint"),
        (["convert", "scratch:tiny_p4_32", "--to", "timm", "--out", str(tmp_path / "o.pth"), "--img-size", "30"],
         "not divisible by the patch size 4"),
        (["convert", "scratch:tiny_p4_32", "--to", "timm", "--out", str(tmp_path / "o.pth"), "--final-norm"],
         "--final-norm applies to --to mmseg only"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "o.pth").exists()


def test_lost_weight_is_an_error_and_nothing_is_written(tmp_path):
    bb = load_backbone("scratch:tiny_p4_32")
    bb.state_dict["blocks.0.extra.weight"] = torch.zeros(3)  # a weight no target rule places
    with pytest.raises(ConversionError) as info:
        convert_backbone(bb, "mmseg")
    assert info.value.report.unmapped == ["blocks.0.extra.weight"] and "ERROR unmapped" in info.value.report.summary()
    del bb.state_dict["blocks.0.extra.weight"], bb.state_dict["blocks.3.norm2.bias"]
    with pytest.raises(ConversionError) as info:
        convert_backbone(bb, "detectron2")
    assert info.value.report.missing == ["backbone.net.blocks.3.norm2.bias"]


def test_cli_scratch_source(tmp_path, capsys):
    assert main(["convert", "scratch:tiny_p4_32_s2", "--to", "detectron2", "--out", str(tmp_path / "s.pth")]) == 0
    side = json.loads((tmp_path / "s.pth.json").read_text())
    assert side["backbone"]["id"] == "scratch-tiny_p4_32_s2" and side["meta"]["seed"] == 2


def test_out_equal_to_the_source_is_refused_and_the_source_survives(tmp_path, capsys):
    src = tmp_path / "enc.pth"
    torch.save(tiny_encoder().state_dict(), src)
    before = src.read_bytes()
    assert main(["convert", "--backbone", str(src), "--arch", "num_heads=2", "--to", "timm", "--out", str(src)]) == 2
    err = capsys.readouterr().err.strip()
    assert "is the source file itself" in err and len(err.splitlines()) == 1
    assert src.read_bytes() == before


def test_one_vocabulary_and_old_spellings_with_a_note(tmp_path, capsys):
    src = tmp_path / "enc.pth"
    torch.save(tiny_encoder().state_dict(), src)
    new = ["convert", "--backbone", str(src), "--from", "timm", "--arch", "num_heads=2", "--trust-pickle",
           "--name", "mine", "--method", "mae", "--pretrain-epochs", "3", "--to", "timm", "--out", str(tmp_path / "a.pth")]
    assert main(new) == 0
    side = json.loads((tmp_path / "a.pth.json").read_text())
    assert side["backbone"]["id"] == "mine" and side["backbone"]["method"] == "mae" and side["backbone"]["epochs"] == 3
    old = ["convert", str(src), "--source-format", "timm", "--arch", "num_heads=2", "--trust-pickle", "true", "--to",
           "timm", "--out", str(tmp_path / "b.pth")]
    assert main(old) == 0
    assert "--source-format is deprecated" in capsys.readouterr().err
    assert torch.equal(torch.load(tmp_path / "a.pth")["cls_token"], torch.load(tmp_path / "b.pth")["cls_token"])
