"""The readers' tables and messages, each against an independent source: the head counts of every family
against the networks its code defines (built by timm / torchvision on the meta device, or the cited
release file), the recognition order against the documented table, and the exact words a reader
gives about what it read and dropped (a swapped branch reads the same weights but says the wrong thing)."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
import torch
from droppos.backbones import readers
from droppos.backbones.readers import FAMILY_HEADS, READERS, detect_layout, formats, registry
from droppos.backbones.readers.engine_files import _source_named_beside
from droppos.models.vit import VIT_SIZES

from droppos.errors import UserError


def _timm_heads(*names: str) -> dict[int, int]:
    import timm

    out = {}
    for name in names:
        with torch.device("meta"):
            model = timm.create_model(name, pretrained=False)
        out[model.embed_dim] = model.blocks[0].attn.num_heads
    return out


def _torchvision_heads(*names: str) -> dict[int, int]:
    import torchvision

    out = {}
    for name in names:
        with torch.device("meta"):
            model = getattr(torchvision.models, name)()
        out[model.hidden_dim] = model.encoder.layers[0].self_attention.num_heads
    return out


#: facebookresearch/moco-v3 vits.py (commit 1c6b717): vit_small, vit_base, vit_large, vit_huge
#: (``embed_dim=384, ... num_heads=12``, ``768 ... 12``, ``1024 ... 16``, ``1280 ... 16``); not in timm
MOCOV3_VITS = {384: 12, 768: 12, 1024: 16, 1280: 16}

FAMILIES = {
    "dino": lambda: _timm_heads("vit_small_patch16_224", "vit_base_patch16_224"),  # DINO's vit_small / vit_base
    "ibot": lambda: _timm_heads("vit_small_patch16_224", "vit_base_patch16_224", "vit_large_patch16_224"),
    "mae": lambda: _timm_heads("vit_base_patch16_224", "vit_large_patch16_224", "vit_huge_patch14_224"),
    "deit": lambda: _timm_heads("deit_tiny_patch16_224", "deit_small_patch16_224", "deit_base_patch16_224"),
    "timm": lambda: _timm_heads("vit_tiny_patch16_224", "vit_small_patch16_224", "vit_base_patch16_224",
                                "vit_large_patch16_224", "vit_huge_patch14_224"),
    "dinov2": lambda: _timm_heads("vit_small_patch14_dinov2", "vit_base_patch14_dinov2", "vit_large_patch14_dinov2",
                                  "vit_giant_patch14_dinov2"),
    "torchvision": lambda: _torchvision_heads("vit_b_16", "vit_l_16", "vit_h_14"),
    "droppos": lambda: {width: heads for width, _, heads in VIT_SIZES.values()},
    "mocov3": lambda: MOCOV3_VITS,
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_each_family_table_is_the_networks_its_code_defines(family):
    assert FAMILY_HEADS[family] == FAMILIES[family]()


def test_every_registered_family_is_checked():
    assert set(FAMILY_HEADS) == set(FAMILIES)


def test_recognition_order_is_the_documented_table():
    """readers/__init__.py's table lists the layouts in recognition order; formats() follows the orders."""
    table = re.findall(r"^\| ``(\w+)``", readers.__doc__, re.M)
    assert formats() == (*table, "scratch")
    assert [r.name for r in sorted(READERS.values(), key=lambda r: r.order) if r.recognise or r.suffix] == table


def test_an_unknown_file_lists_its_first_eight_keys_and_every_layout():
    obj = {f"k{i}": i for i in range(12)}
    with pytest.raises(UserError) as e:
        detect_layout(obj, "x.pth: ")
    msg = str(e.value)
    assert msg.startswith("x.pth: no ViT encoder in this file (top-level keys: k0, k1, k2, k3, k4, k5, k6, k7); ")
    assert msg.endswith("--from {" + ",".join(formats()) + "}")


def test_registration_is_checked_and_readers_are_immutable(monkeypatch):
    monkeypatch.setattr(registry, "FAMILY_HEADS", dict(FAMILY_HEADS))
    registry.register_family("dino", {384: 6, 768: 12})  # the same table again: fine
    assert registry.FAMILY_HEADS["dino"] == {384: 6, 768: 12}
    with pytest.raises(ValueError, match="family 'dino' registered twice with different tables"):
        registry.register_family("dino", {384: 6, 768: 13})
    with pytest.raises(dataclasses.FrozenInstanceError):
        READERS["timm"].order = 1  # type: ignore[misc]


def test_head_count_from_a_family_else_only_from_agreement():
    assert registry.heads_for(1024, "mocov3") == (16, "the mocov3 family's value for width 1024")
    assert registry.heads_for(768, None) == (12, "every known ViT family has 12 heads at width 768")
    heads, why = registry.heads_for(384, None)  # MoCo v3 has 12 heads at 384, the others 6
    assert heads is None and "mocov3 12" in why and "dino 6" in why
    assert registry.heads_for(100, None) == (None, "")
    assert registry.heads_for(384, "nofamily")[0] is None


# ---------------------------------------------------------------------------------------- what a reader says
def _vit_sd(prefix: str = "", width: int = 8) -> dict:
    sd = {"cls_token": torch.zeros(1, 1, width), "pos_embed": torch.zeros(1, 5, width),
          "patch_embed.proj.weight": torch.zeros(width, 3, 2, 2), "blocks.0.attn.qkv.weight": torch.zeros(3 * width, width)}
    return {prefix + k: v for k, v in sd.items()}


def _network(extra: dict | None = None, module: bool = False) -> dict:
    sd = {**_vit_sd("backbone."), "head.last_layer.weight_g": torch.ones(1, 1), **(extra or {})}
    return {("module." if module else "") + k: v for k, v in sd.items()}


@pytest.mark.parametrize("ibot, part, chosen, other, default", [
    (False, None, "teacher", "student", " (default; --part student picks the other)"),
    (False, "student", "student", "teacher", ""),
    (False, "teacher", "teacher", "student", ""),
    (True, None, "teacher", "student", " (default; --part student picks the other)"),
])
def test_dino_full_checkpoint_notes(ibot, part, chosen, other, default):
    obj = {"teacher": _network(), "student": _network({"head.extra": torch.ones(1)}, module=True), "epoch": 3}
    if ibot:
        obj["ibot_loss"] = 0.0
    raw, info = READERS["dino"].read(obj, "f: ", part)
    name = "IBOT" if ibot else "DINO"
    assert info["notes"] == [f"{name} full checkpoint: read the {chosen}{default}",
                             f"dropped the {other} network: {len(obj[other])} tensors"]
    assert info["family"] == ("ibot" if ibot else "dino") and info["part"] == chosen and info["epochs"] == 3
    assert raw["head.last_layer.weight_g"][1] == f"head of the {chosen} (projection head: pretext)"


def test_dino_student_only_checkpoint_defaults_to_it_and_says_the_other():
    obj = {"student": _network(module=True)}
    _, info = READERS["dino"].read(obj, "f: ", None)
    assert info["notes"] == ["DINO full checkpoint: read the student (default; --part teacher picks the other)"]
    with pytest.raises(UserError, match="--part teacher: this checkpoint holds student"):
        READERS["dino"].read(obj, "f: ", "teacher")


@pytest.mark.parametrize("module, ibot, note", [
    (False, False, "DINO network saved alone: its backbone read, its projection head dropped"),
    (True, False, "DINO student saved alone: its backbone read, its projection head dropped"),
    (True, True, "IBOT student saved alone: its backbone read, its projection head dropped"),
])
def test_dino_network_alone_notes(module, ibot, note):
    obj = _network({"backbone.masked_embed": torch.zeros(8)} if ibot else None, module=module)
    raw, info = READERS["dino_net"].read(obj, "f: ", None)
    assert info == {"family": "ibot" if ibot else "dino", "notes": [note]}
    if ibot:
        assert raw["masked_embed"][1] == "masked_embed (iBOT pretext token)"


@pytest.mark.parametrize("masked, family", [(True, "ibot"), (False, None)])
def test_state_dict_wrapper_family_from_the_ibot_token(masked, family):
    sd = {**_vit_sd(), **({"masked_embed": torch.zeros(8)} if masked else {})}
    raw, info = READERS["ibot"].read({"state_dict": sd, "epoch": 5}, "f: ", None)
    assert info["family"] == family and info["epochs"] == 5
    assert (raw.get("masked_embed", (None, None))[1] == "pretext (pretraining only)") == masked


@pytest.mark.parametrize("part, enc, other", [(None, "base_encoder", "momentum_encoder"),
                                              ("momentum", "momentum_encoder", "base_encoder")])
def test_mocov3_reads_one_encoder_and_names_each_dropped_part(part, enc, other):
    sd = {**_vit_sd(f"module.{enc}."), **_vit_sd(f"module.{other}."),
          f"module.{enc}.head.0.weight": torch.zeros(2, 2), "module.predictor.0.weight": torch.zeros(2, 2)}
    raw, info = READERS["mocov3"].read({"state_dict": sd, "epoch": 7, "arch": "vit_small"}, "f: ", part)
    assert {k for k, (_, why) in raw.items() if why is None} == set(_vit_sd())
    assert raw[f"module.{enc}.head.0.weight"][1] == "MoCo v3 projector head (pretext)"
    assert raw["module.predictor.0.weight"][1] == "MoCo v3 predictor (pretext)"
    assert raw[f"module.{other}.cls_token"][1] == f"MoCo v3 {other} (pretext)"
    default = "" if part else " (default; --part momentum picks the other)"
    assert info["notes"] == [f"MoCo v3 checkpoint: read the {enc}{default}"]
    assert (info["epochs"], info["model_name"], info["family"]) == (7, "vit_small", "mocov3")


def test_dinov2_with_swiglu_names_the_timm_model_to_use():
    sd = {**_vit_sd(), "blocks.0.ls1.gamma": torch.ones(8), "blocks.0.mlp.w12.weight": torch.zeros(4, 8)}
    with pytest.raises(UserError) as e:
        READERS["dinov2"].read(sd, "g.pth: ", None)
    assert str(e.value) == ("g.pth: a DINOv2 with SwiGLU MLP (mlp.w12, ViT-g) cannot be represented exactly as a plain "
                            "ViT encoder; read it as a generic backbone through timm: "
                            "--backbone timm:vit_giant_patch14_dinov2:g.pth")


@pytest.mark.parametrize("side, said", [
    ({"backbone": {"source": "runs/pt/encoder.pth"}}, " (converted from runs/pt/encoder.pth)"),
    ({"other": 1}, ""),  # KeyError
    ({"backbone": "text"}, ""),  # TypeError
    ("not json", ""),  # ValueError
    (None, ""),  # OSError: no file beside it
])
def test_engine_files_name_their_source_only_from_a_sidecar_that_says_it(tmp_path, side, said):
    path = tmp_path / "out.pth"
    if side is not None:
        (tmp_path / "out.pth.json").write_text(side if isinstance(side, str) else json.dumps(side))
    assert _source_named_beside(f"{path}: ") == said


# ---------------------------------------------------------------------------------------- shared helpers
def test_state_dict_checks_name_what_is_wrong():
    from droppos.backbones.readers.common import tensors

    with pytest.raises(UserError, match=r"^f: model is a list, not a state dict$"):
        tensors([1], "f: ", "model")
    bad = {f"n{i}": i for i in range(6)}
    with pytest.raises(UserError) as e:
        tensors({"t": torch.zeros(1), **bad}, "f: ", "model")
    assert str(e.value) == "f: model holds non-tensor entries (n0, n1, n2, n3)"
    sd = {"t": torch.zeros(1)}
    assert tensors(sd, "f: ", "model") is sd


def test_small_helpers_against_hand_computed_cases():
    from droppos.backbones.readers.common import as_int, flat, generic_path, strip, under_prefix

    assert [as_int(v) for v in (3, 0, True, False, 2.0, "3", None)] == [3, 0, None, None, None, None, None]
    assert not flat({}) and flat({"a": torch.zeros(1)}) and not flat({"a": torch.zeros(1), "b": 1})
    assert strip({"m.a": 1, "b": 2, "m.m.c": 3}, "m.") == {"a": 1, "m.c": 3}
    assert generic_path("x/y.pth: ") == "read it as a generic backbone through timm: --backbone timm:<model_name>:x/y.pth"
    assert generic_path("", "convnext_base").endswith("--backbone timm:convnext_base:FILE")
    raw = under_prefix({"p.a": 1, "q.b": 2}, "p.", lambda k: f"not {k}")
    assert raw == {"a": (1, None), "q.b": (2, "not q.b")}


def test_timm_names_keep_the_head_aside_and_drop_pretext():
    from droppos.backbones.readers.common import timm_raw

    t = torch.zeros(1)
    raw = timm_raw({"head.weight": t, "pre_logits.fc.weight": t, "mask_token": t, "blocks.0.x": t}, pretext=("mask_",))
    assert {k: why for k, (_, why) in raw.items()} == {
        "head.weight": "classifier head (kept as the backbone's head)", "pre_logits.fc.weight": "pre-logits layer of the classifier",
        "mask_token": "pretext (pretraining only)", "blocks.0.x": None}


def test_rename_rules_first_match_wins_drop_or_keep():
    from droppos.backbones.readers.common import block_rules, renamed, stem_rules

    rules = [*stem_rules(r"cls", r"pos", r"pe\.", r"ln\."), (r"^drop\.", None, "gone"), (r"^note$", "kept", "why"),
             *block_rules(r"^L\.(\d+)\.", {r"a\.": "attn.qkv", r"b\.": "mlp.fc1"})]
    t = torch.zeros(1)
    raw = renamed({"cls": t, "pos": t, "pe.weight": t, "ln.bias": t, "drop.x": t, "note": t, "L.3.a.weight": t,
                   "L.0.b.bias": t, "other": t}, rules)
    assert {k: why for k, (_, why) in raw.items()} == {
        "cls_token": None, "pos_embed": None, "patch_embed.proj.weight": None, "norm.bias": None, "drop.x": "gone",
        "kept": "why", "blocks.3.attn.qkv.weight": None, "blocks.0.mlp.fc1.bias": None, "other": None}


def test_fold_scale_is_the_same_linear_layer():
    from droppos.backbones.readers.common import fold_scale

    lin = torch.nn.Linear(3, 4).double()
    gamma = torch.tensor([0.5, -2.0, 3.0, 1e-3], dtype=torch.float64)
    sd = {"l.weight": lin.weight.detach().clone(), "l.bias": lin.bias.detach().clone()}
    fold_scale(sd, "l", gamma)
    x = torch.randn(5, 3, dtype=torch.float64)
    torch.testing.assert_close(x @ sd["l.weight"].T + sd["l.bias"], gamma * lin(x).detach(), atol=1e-12, rtol=0)


@pytest.mark.parametrize("ema, module", [(True, True), (False, False)])
def test_official_droppos_release_says_what_it_removed_and_ignored(ema, module):
    sd = {("module." if module else "") + k: v for k, v in {**_vit_sd(), "mask_pos_token": torch.zeros(1)}.items()}
    obj = {"state_dict": sd, "model": "DropPos_mae_vit_base_patch16_dec512d2b", "epoch": 199}
    if ema:
        obj["ema_state_dict"] = {}
    raw, info = READERS["droppos"].read(obj, "f: ", None)
    assert info["notes"] == ((["removed DDP's 'module.' prefix from the state_dict keys"] if module else []) +
                             (["file also holds an EMA teacher (ema_state_dict); the student state_dict was used"]
                              if ema else []))
    assert (info["method"], info["epochs"], info["family"]) == ("droppos", 199, "mae")
    assert raw["mask_pos_token"][1] == "pretext (official release)" and raw["cls_token"][1] is None


@pytest.mark.parametrize("model, input_size, want_hint", [
    ("mae_vit_base_patch16", 192, 192),  # the run's input size joins the architecture the name gives
    ("mae_vit_base_patch16", None, None),
    ("", 192, "no hint"),  # no name: no architecture to add the size to
])
def test_official_mae_input_size_joins_the_named_architecture(model, input_size, want_hint):
    import argparse

    args = argparse.Namespace(model=model, input_size=input_size, epochs=800)
    obj = {"model": {**_vit_sd(), "mask_token": torch.zeros(1)}, "args": args, "epoch": 399}
    raw, info = READERS["mae"].read(obj, "f: ", None)
    if want_hint == "no hint":
        assert info["arch_hint"] is None and info["method"] == "unknown"
    else:
        assert info["arch_hint"]["embed_dim"] == 768 and info["arch_hint"].get("img_size") == want_hint
        assert info["method"] == "mae"
    assert info["epochs"] == 400 and raw["mask_token"][1] == "pretext (official release)"


@pytest.mark.parametrize("meta, data", [
    ({"config": {"data": "/d/cfg"}}, "/d/cfg"),  # older encoders: the data only in the run's config
    ({"data": "/d/meta", "config": {"data": "/d/cfg"}}, "/d/meta"),
    ({"config": None}, None),
])
def test_own_encoder_names_its_pretraining_data(meta, data):
    from droppos.utils.checkpoint import ENCODER_FORMAT

    obj = {"format": ENCODER_FORMAT, "state_dict": _vit_sd(), "meta": {"method": "droppos", "epochs": 9, **meta}}
    raw, info = READERS["encoder"].read(obj, "f: ", None)
    assert info["data"] == data and info["method"] == "droppos" and info["epochs"] == 9
    assert all(why is None for _, why in raw.values())


def test_dino_args_name_the_model_and_the_patch():
    import argparse

    obj = {"teacher": _network(), "args": argparse.Namespace(arch="vit_small", patch_size=8)}
    _, info = READERS["dino"].read(obj, "f: ", None)
    assert info["model_name"] == "vit_small" and info["arch_hint"] == {"patch_size": 8}
    _, info = READERS["dino"].read({"teacher": _network(), "args": argparse.Namespace(arch=None)}, "f: ", None)
    assert info["model_name"] == "" and info["arch_hint"] is None


def test_dino_network_without_a_backbone_lists_its_first_six_keys():
    obj = {"teacher": {f"head.layer{i}.weight": torch.zeros(1) for i in range(9)}}
    with pytest.raises(UserError) as e:
        READERS["dino"].read(obj, "f: ", None)
    assert str(e.value) == ("f: teacher has no 'backbone.' weights (keys: " +
                            ", ".join(f"head.layer{i}.weight" for i in range(6)) + ")")


def test_dino_backbone_that_is_no_plain_vit_is_refused_by_its_kept_keys():
    obj = {"teacher": _network({"backbone.blocks.0.attn.q_norm.weight": torch.ones(8)})}
    with pytest.raises(UserError, match=r"qk-norm \(key blocks\.0\.attn\.q_norm\.weight\)"):
        READERS["dino"].read(obj, "f: ", None)


@pytest.mark.parametrize("prefix", ["module.", "model.", "module.model."])
def test_flat_timm_state_dict_loses_ddp_and_wrapper_prefixes(prefix):
    raw, _ = READERS["timm"].read(_vit_sd(prefix), "f: ", None)
    assert set(raw) == set(_vit_sd()) and all(why is None for _, why in raw.values())
    mixed = {**_vit_sd("module."), "extra": torch.zeros(1)}  # not every key has it: nothing removed
    assert set(READERS["timm"].read(mixed, "f: ", None)[0]) == set(mixed)


def test_dinov2_recognised_by_its_two_dimensional_mask_token():
    from droppos.backbones.readers.dinov2 import is_dinov2

    base = {**_vit_sd(), "blocks.0.attn.qkv.weight": torch.zeros(24, 8)}
    assert is_dinov2({**base, "mask_token": torch.zeros(1, 8)})  # DINOv2: (1, D)
    assert not is_dinov2({**base, "mask_token": torch.zeros(1, 1, 8)})  # MAE: (1, 1, D)
    assert not is_dinov2({**base, "mask_token": torch.zeros(8)})
    assert not is_dinov2({"mask_token": torch.zeros(1, 8)})  # no timm blocks
    assert is_dinov2({"register_tokens": torch.zeros(1, 4, 8)}) and is_dinov2({"blocks.3.ls2.gamma": torch.ones(8)})


def test_dinov2_registers_counted_in_the_note():
    sd = {**_vit_sd(), "register_tokens": torch.zeros(1, 4, 8), "mask_token": torch.zeros(1, 8)}
    raw, info = READERS["dinov2"].read(sd, "f: ", None)
    assert info["notes"] == ["4 register tokens kept as prefix tokens after [cls] (no position)"]
    assert raw["reg_token"][1] is None and raw["mask_token"][1] == "DINOv2 mask token (iBOT pretext)"


def test_dinov2_that_is_no_plain_vit_is_refused_beside_its_layer_scale():
    sd = {**_vit_sd(), "blocks.0.ls1.gamma": torch.ones(8), "blocks.0.attn.k_norm.weight": torch.ones(8)}
    with pytest.raises(UserError, match=r"qk-norm \(key blocks\.0\.attn\.k_norm\.weight\)"):
        READERS["dinov2"].read(sd, "f: ", None)


def test_mocov3_encoder_that_is_no_plain_vit_is_refused():
    sd = {**_vit_sd("module.base_encoder."), "module.base_encoder.blocks.0.attn.q_norm.weight": torch.ones(8)}
    with pytest.raises(UserError, match=r"qk-norm \(key blocks\.0\.attn\.q_norm\.weight\)"):
        READERS["mocov3"].read({"state_dict": sd}, "f: ", None)


def test_deit_wrapper_loses_ddp_prefix():
    raw, info = READERS["deit"].read({"model": _vit_sd("module.")}, "f: ", None)
    assert set(raw) == set(_vit_sd()) and info["family"] is None
    raw, _ = READERS["deit"].read({"model": {**_vit_sd(), "head.weight": torch.zeros(2, 8)}}, "f: ", None)
    assert set(raw) == {*_vit_sd(), "head.weight"}


def _hf_sd(layer_scale: bool = False, drop: str = "") -> dict:
    t = torch.zeros
    sd = {"embeddings.cls_token": t(1, 1, 8), "embeddings.position_embeddings": t(1, 5, 8),
          "embeddings.patch_embeddings.projection.weight": t(8, 3, 2, 2), "embeddings.patch_embeddings.projection.bias": t(8)}
    for x in ("query", "key", "value"):
        sd[f"encoder.layer.0.attention.attention.{x}.weight"] = t(8, 8)
    sd.update({"encoder.layer.0.attention.output.dense.weight": t(8, 8), "encoder.layer.0.attention.output.dense.bias": t(8)})
    if layer_scale:
        sd.update({"encoder.layer.0.layer_scale1.lambda1": torch.ones(8), "encoder.layer.0.layer_scale2.lambda1": torch.ones(8),
                   "encoder.layer.0.mlp.fc2.weight": t(8, 8), "encoder.layer.0.mlp.fc2.bias": t(8)})
    return {k: v for k, v in sd.items() if not (drop and drop in k)}


@pytest.mark.parametrize("layer_scale, family", [(True, "dinov2"), (False, None)])
def test_hf_family_is_dinov2_by_its_layer_scale(layer_scale, family):
    raw, info = READERS["hf"].read(_hf_sd(layer_scale), "f: ", None)
    assert info["family"] == family and "blocks.0.attn.qkv.weight" in raw
    assert any("layer scale folded into 2 projections" in n for n in info["notes"]) == layer_scale


def test_hf_block_without_its_key_projection_names_the_block():
    with pytest.raises(UserError) as e:
        READERS["hf"].read(_hf_sd(drop="attention.attention.key"), "f: ", None)
    assert str(e.value) == "f: blocks.0 lacks some of query/key/value"


def test_hf_model_under_vit_prefix_drops_only_what_is_outside_it():
    sd = {**{f"vit.{k}": v for k, v in _hf_sd().items()}, "decoder.decoder_embed.weight": torch.zeros(4, 8)}
    raw, _ = READERS["hf"].read(sd, "f: ", None)
    assert raw["decoder.decoder_embed.weight"][1] == "not the encoder (decoder / classifier of the HF model)"
    assert not any(k.startswith("vit.") for k in raw) and raw["cls_token"][1] is None


def test_torchvision_recognised_by_both_of_its_stem_names():
    from droppos.backbones.readers.torchvision import is_torchvision

    t = torch.zeros(1)
    assert is_torchvision({"conv_proj.weight": t, "class_token": t})
    assert not is_torchvision({"conv_proj.weight": t}) and not is_torchvision({"class_token": t})


def _mmseg_sd(**extra) -> dict:
    t = torch.zeros
    return {"patch_embed.projection.weight": t(8, 3, 2, 2), "layers.0.ln1.weight": t(8), "ln1.weight": t(8),
            "layers.0.attn.proj.weight": t(8, 8), "layers.0.attn.proj.bias": t(8),
            "layers.0.ffn.layers.1.weight": t(8, 8), "layers.0.ffn.layers.1.bias": t(8), **extra}


def test_mmseg_relative_bias_refusal_names_the_first_nonzero_table():
    sd = _mmseg_sd(**{f"layers.{i}.attn.relative_position_bias_table": torch.ones(3, 2) for i in range(3)})
    with pytest.raises(UserError, match=r"not zero \(layers\.0\.attn\.relative_position_bias_table\)"):
        READERS["mmseg"].read(sd, "f: ", None)


@pytest.mark.parametrize("value, words", [(1.0, "layer scale of ones folded"), (0.5, "layer scale folded")])
def test_mmseg_layer_scale_note_says_whether_it_was_ones(value, words):
    sd = _mmseg_sd(**{f"layers.0.gamma_{j}": torch.full((8,), value) for j in (1, 2)})
    _, info = READERS["mmseg"].read(sd, "f: ", None)
    assert info["notes"][1] == f"{words} into 2 projections (the same network)"


def test_mmseg_without_layer_scale_says_only_the_renaming():
    _, info = READERS["mmseg"].read(_mmseg_sd(), "f: ", None)
    assert info["notes"] == ["mmseg MAE names mapped back to the encoder's"]


def _augreg(tmp_path, drop: str | tuple = (), replace: dict | None = None, **layout):
    """An AugReg / big_vision ``.npz`` (tests/layout_files.py), less the arrays whose names end with ``drop`` (one
    ending or several), with ``replace`` arrays put in; -> its path."""
    import numpy as np
    from layout_files import write_augreg

    path = tmp_path / "augreg.npz"
    write_augreg(path, **layout)
    arrays = dict(np.load(path))
    arrays = {k: v for k, v in arrays.items() if not (drop and k.endswith(drop))} | (replace or {})
    np.savez(path, **arrays)
    return path


def _read_augreg(path):
    from droppos.backbones.readers.augreg import read_augreg

    return read_augreg(path, "x.npz: ")


@pytest.mark.parametrize("layout, drop, missing", [
    (dict(), "posembed_input/pos_embedding", "Transformer/posembed_input/pos_embedding"),
    (dict(big_vision=True, prefix="params/"), "pos_embedding", "params/pos_embedding"),
    (dict(), "encoderblock_0/MultiHeadDotProductAttention_1/query/kernel",
     "Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel"),
    (dict(big_vision=True, stacked=True, prefix="params/"), "MlpBlock_0/Dense_0/kernel",
     "params/Transformer/encoderblock/MlpBlock_0/Dense_0/kernel"),
    (dict(), ("pos_embedding", "Dense_0/kernel"), "Transformer/posembed_input/pos_embedding"),  # the first of two
])
def test_augreg_names_the_array_it_misses(tmp_path, layout, drop, missing):
    path = _augreg(tmp_path, drop, **layout)
    with pytest.raises(UserError) as err:
        _read_augreg(path)
    assert str(err.value) == f"x.npz: not an AugReg/big_vision ViT .npz (missing {missing})"


def test_augreg_without_embedding_or_readable_arrays_is_refused(tmp_path):
    with pytest.raises(UserError) as err:
        _read_augreg(_augreg(tmp_path, "embedding/kernel"))
    assert str(err.value) == "x.npz: not an AugReg/big_vision ViT .npz (no embedding/kernel)"
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(UserError, match=r"^x\.npz: not a readable \.npz file \(\w+Error: .+\)$"):
        _read_augreg(tmp_path / "bad.npz")


@pytest.mark.parametrize("layout", [dict(), dict(big_vision=True, stacked=True)])
def test_augreg_without_cls_is_sent_to_the_generic_source(tmp_path, layout):
    from droppos.backbones.readers.common import generic_path

    with pytest.raises(UserError) as err:
        _read_augreg(_augreg(tmp_path, cls=False, **layout))
    assert str(err.value) == ("x.npz: a ViT without a [cls] token (global average pooling / MAP head); "
                              + generic_path("x.npz: "))
    assert "timm:<model_name>:x.npz" in str(err.value)


@pytest.mark.parametrize("rows", [13, 15])  # 12 cells (3x3 = 9 below), 14 cells (4x4 = 16 above)
def test_augreg_position_grid_that_is_not_square_is_refused_either_side(tmp_path, rows):
    import numpy as np

    pos = np.zeros((1, rows, 192), np.float32)
    path = _augreg(tmp_path, replace={"Transformer/posembed_input/pos_embedding": pos})
    with pytest.raises(UserError) as err:
        _read_augreg(path)
    assert str(err.value) == f"x.npz: position grid of {rows - 1} cells is not square"


def test_augreg_without_a_head_reads_the_encoder_and_no_classes(tmp_path):
    raw, info = _read_augreg(_augreg(tmp_path, head=False, big_vision=True, stacked=True, depth=3))
    assert not any(k.startswith("head") for k in raw)
    assert info == dict(notes=["AugReg .npz read by timm's _load_weights (3 blocks, 3 heads from the array shapes)"],
                        arch_hint={"num_heads": 3})


@pytest.mark.parametrize("shape", [(192, 2, 5), (5,)])
def test_augreg_head_that_is_no_linear_classifier_is_named_not_read(tmp_path, shape):
    import numpy as np

    path = _augreg(tmp_path, replace={"head/kernel": np.zeros(shape, np.float32)})
    raw, info = _read_augreg(path)
    assert not any(k.startswith("head") for k in raw)
    assert info["notes"][1:] == [f"head/kernel of shape {shape} is no linear classifier: not read"]
