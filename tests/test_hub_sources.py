"""Backbones named by hub id (timm tags, ``hf-hub:``, ``hf:``) and model folders, read offline from a hub
cache built here (random weights in each repository kind's exact files). References: the models timm and
``transformers`` build from the same files."""

from __future__ import annotations

import json

import pytest
import torch
from hub_cache import COMMIT, add_repo, timm_repo

from droppos.backbones.options import BackboneOptions
from droppos.backbones.source import file_hash
from droppos.errors import UserError

transformers = pytest.importorskip("transformers")


def _read(src: str, **kw):
    return BackboneOptions(backbone=src, **kw).read()


# ---------------------------------------------------------------------------------------- timm
@pytest.mark.parametrize("form", ["tag", "pretrained", "hf-hub"])
def test_timm_published_weights_from_the_cache(hub_cache, tmp_path, form):
    """``timm:<model>.<tag>``, ``timm:<model> --pretrained`` (its default tag) and ``hf-hub:timm/<model>.<tag>``
    give timm's model with the file's weights, and the record names repo, revision and sha256."""
    import timm

    snapshot = timm_repo(hub_cache, "test_vit", "r160_in1k", tmp_path)
    src = {"tag": "timm:test_vit.r160_in1k", "pretrained": "timm:test_vit",
           "hf-hub": "hf-hub:timm/test_vit.r160_in1k"}[form]
    bb = _read(src, pretrained=form == "pretrained")
    ref = timm.create_model("test_vit", pretrained=True, num_classes=0,
                            pretrained_cfg_overlay=dict(file=str(snapshot / "model.safetensors"))).eval()
    x = torch.randn(2, 3, 160, 160)
    with torch.no_grad():
        torch.testing.assert_close(bb.encoder().eval().forward_features(x), ref.forward_features(x), atol=0, rtol=0)
    record = bb.backbone
    assert record["repo"] == "timm/test_vit.r160_in1k" and record["revision"] == COMMIT
    assert record["sha256"] == file_hash(snapshot / "model.safetensors") and record["epochs"] is None
    assert not any("random init" in n for n in bb.notes)


def test_a_timm_name_without_a_tag_is_random_and_says_so(hub_cache):
    bb = _read("timm:test_vit")
    assert any("random init of test_vit" in n and "--pretrained" in n for n in bb.notes)
    assert "repo" not in bb.backbone and bb.backbone["epochs"] == 0


@pytest.mark.parametrize("src, pretrained, words", [
    ("timm:test_vit.r160_in1k", False, ["timm/test_vit.r160_in1k is not in the Hugging Face cache and "
                                        "HF_HUB_OFFLINE=1 forbids a download", "`hf download timm/test_vit.r160_in1k`"]),
    ("timm:vit_base_patch16_18x2_224", True, ["timm has no published weights for vit_base_patch16_18x2_224"]),
    ("timm:test_vit.no_such_tag", False, ["Invalid pretrained tag (no_such_tag)"]),
    ("hf-hub:someone/missing", False, ["someone/missing is not in the Hugging Face cache"]),
])
def test_published_weights_that_cannot_be_had_are_one_line(hub_cache, src, pretrained, words):
    with pytest.raises(UserError) as info:
        _read(src, pretrained=pretrained)
    text = str(info.value)
    assert all(w in text for w in words) and "\n" not in text, text


# ---------------------------------------------------------------------------------------- transformers
def _vit_folder(tmp_path, kind: str = "vit"):
    """A ``save_pretrained`` folder of a transformers model with random weights (width 192, 6 heads: no family
    table says 6 for 192, the config.json does)."""
    from transformers import Dinov2Config, Dinov2Model, ViTConfig, ViTMAEConfig, ViTMAEModel, ViTModel

    torch.manual_seed(0)
    if kind == "dinov2":
        model = Dinov2Model(Dinov2Config(hidden_size=192, num_hidden_layers=2, num_attention_heads=6, image_size=28,
                                         patch_size=14, layerscale_value=0.5, layer_norm_eps=1e-6))
    elif kind == "vit_mae":
        model = ViTMAEModel(ViTMAEConfig(hidden_size=192, num_hidden_layers=2, num_attention_heads=6,
                                         intermediate_size=768, image_size=32, patch_size=8, mask_ratio=0.0,
                                         layer_norm_eps=1e-6))
    else:
        model = ViTModel(ViTConfig(hidden_size=192, num_hidden_layers=2, num_attention_heads=6, intermediate_size=768,
                                   image_size=32, patch_size=8, layer_norm_eps=1e-6), add_pooling_layer=False)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    folder = tmp_path / f"{kind}_folder"
    model.save_pretrained(folder)
    return folder, model.eval()


def _hf_tokens(model, x):
    """The transformers model's last hidden state; ViTMAE keeps every patch in order (mask ratio 0, ascending noise)."""
    with torch.no_grad():
        if model.config.model_type == "vit_mae":
            n = (x.shape[-1] // model.config.patch_size) ** 2
            return model(pixel_values=x, noise=torch.arange(n, dtype=torch.float).expand(x.shape[0], n)).last_hidden_state
        return model(pixel_values=x).last_hidden_state


@pytest.mark.parametrize("kind", ["vit", "vit_mae", "dinov2"])
def test_model_folder_and_hf_repo_equal_the_transformers_model(hub_cache, tmp_path, kind):
    folder, model = _vit_folder(tmp_path, kind)
    size = 28 if kind == "dinov2" else 32
    x = torch.randn(2, 3, size, size)
    ref = _hf_tokens(model, x)
    files = {name: folder / name for name in ("config.json", "model.safetensors")}
    add_repo(hub_cache, f"facebook/{kind}-tiny-test", files)
    for src in (str(folder), f"hf:facebook/{kind}-tiny-test", f"hf:facebook/{kind}-tiny-test@main"):
        bb = _read(src)
        assert bb.arch.num_heads == 6 and bb.arch.embed_dim == 192  # from config.json, not a family table
        with torch.no_grad():
            torch.testing.assert_close(bb.encoder().eval().forward_features(x), ref, atol=1e-5, rtol=0)
    assert bb.backbone["repo"] == f"facebook/{kind}-tiny-test" and bb.backbone["revision"] == COMMIT
    assert bb.backbone["sha256"] == file_hash(folder / "model.safetensors") and bb.backbone["id"] == f"{kind}-tiny-test"


def test_weights_file_read_with_the_config_beside_it(tmp_path):
    """A transformers ViT with 6 heads at width 192, read from its model.safetensors: config.json, one directory
    entry away, says 6 heads, and that wins over every family table (which all say 3)."""
    folder, model = _vit_folder(tmp_path)
    bb = _read(str(folder / "model.safetensors"))
    assert bb.arch.num_heads == 6
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(bb.encoder().eval().forward_features(x), _hf_tokens(model, x), atol=1e-5, rtol=0)


def test_hf_repo_problems_are_one_line(hub_cache, tmp_path):
    add_repo(hub_cache, "someone/bert", {"config.json": json.dumps({"model_type": "bert", "hidden_size": 8})})
    cases = {"hf:someone/not-cached": "someone/not-cached is not in the Hugging Face cache and HF_HUB_OFFLINE=1",
             "hf:someone/bert": "a transformers bert",
             "hf:no-org": "expected hf:<org>/<repo>[@revision]"}
    for src, words in cases.items():
        with pytest.raises(UserError) as info:
            _read(src)
        assert words in str(info.value) and "\n" not in str(info.value), str(info.value)
    with pytest.raises(UserError, match="--pretrained applies to timm:<model> sources"):
        _read(str(tmp_path), pretrained=True)


# ---------------------------------------------------------------------------------------- through the bench
@pytest.mark.slow
def test_a_spec_of_three_hub_backbones_gives_three_named_rows(hub_cache, tmp_path):
    """A timm tag, an hf: repo and a local model folder named in a bench spec: three rows under their spec names,
    each run's record naming the exact weights (repo, revision, sha256)."""
    import csv

    from test_bench import make_imagefolder, write_spec

    from droppos.cli import main

    timm_repo(hub_cache, "test_vit", "r160_in1k", tmp_path)
    mae, _ = _vit_folder(tmp_path, "vit_mae")
    add_repo(hub_cache, "facebook/vit-mae-tiny-test", {n: mae / n for n in ("config.json", "model.safetensors")})
    folder, _ = _vit_folder(tmp_path, "vit")
    data = make_imagefolder(tmp_path / "imgs", size=32)
    spec = write_spec(tmp_path, f"""\
        name: hub
        data:
          imagefolder: {{path: {data}, build: false}}
        backbones:
          - {{name: timm_tag, checkpoint: "timm:test_vit.r160_in1k"}}
          - {{name: hf_mae, checkpoint: "hf:facebook/vit-mae-tiny-test", method: mae}}
          - {{name: folder, checkpoint: {folder}}}
        tasks:
          - {{name: knn, kind: classify, protocol: knn, options: {{k: 3, batch_size: 16, workers: 0, img_size: 32}}}}
        """)
    out = tmp_path / "out"
    assert main(["bench", str(spec), "--out", str(out)]) == 0
    rows = [r for r in csv.DictReader((out / "results" / "results.csv").open()) if r["kind"] == "run"
            and r["metric"] == "top1"]
    assert sorted(r["backbone"] for r in rows) == ["folder", "hf_mae", "timm_tag"]
    records = {bb: json.loads((out / bb / "knn" / "seed0" / "metrics.json").read_text())["backbone"]
               for bb in ("timm_tag", "hf_mae", "folder")}
    assert records["timm_tag"]["repo"] == "timm/test_vit.r160_in1k" and records["timm_tag"]["revision"] == COMMIT
    assert records["hf_mae"]["repo"] == "facebook/vit-mae-tiny-test" and records["hf_mae"]["method"] == "mae"
    assert records["hf_mae"]["source"] == f"hf:facebook/vit-mae-tiny-test@{COMMIT}"
    assert records["folder"]["source"] == str(folder) and records["folder"]["sha256"]


def test_offline_from_the_environment_through_the_command(tmp_path):
    """HF_HUB_OFFLINE=1 and HF_HUB_CACHE as a user sets them, in a new process: an uncached repo is one line
    naming it and the command that downloads it."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-m", "droppos.cli", "convert", "--backbone", "hf:facebook/vit-mae-base",
                           "--to", "timm", "--out", str(tmp_path / "o.pth")], env=env, capture_output=True, text=True,
                          timeout=300)
    err = done.stderr.strip()
    assert done.returncode == 2 and len(err.splitlines()) == 1, err
    assert "facebook/vit-mae-base is not in the Hugging Face cache and HF_HUB_OFFLINE=1" in err
    assert "`hf download facebook/vit-mae-base`" in err and str(tmp_path / "cache") in err
