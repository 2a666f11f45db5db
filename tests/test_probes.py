"""Location-awareness probes (transfer/probes): the token views, the position probe and the order
probe end to end on a tiny ViT and a tiny synthetic ImageFolder, and bad inputs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from imagefolders import TINY_ARCH, make_colour_imagefolder, write_tiny_encoder
from PIL import Image

from droppos.cli import main
from droppos.models.vit import VisionTransformer
from droppos.transfer.probes import tokens
from droppos.transfer.probes.position import chance, grid_distance
from droppos.runs.records import read_metrics

ARCH = TINY_ARCH  # a 4 x 4 grid


def make_imagefolder(root, n_train=20, n_val=4, size=16, classes=3, seed=0):
    """Class = mean colour, plus i.i.d. pixel noise: no patch's content says where it sits."""
    return make_colour_imagefolder(root, n_train, n_val, size, classes, seed, noise=15.0)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_imagefolder(tmp_path_factory.mktemp("imgs"))


@pytest.fixture(scope="module")
def encoder_file(tmp_path_factory):
    return write_tiny_encoder(tmp_path_factory.mktemp("enc") / "encoder.pth", method="scratch", epochs=0)


def probe(protocol, encoder_file, data, out, *extra):
    crop = [] if "--crop-pct" in extra else ["--crop-pct", "1.0"]  # an option given twice is refused
    argv = ["probe", protocol, "--backbone", str(encoder_file), "--data", str(data), "--output", str(out),
            "--workers", "0", "--batch-size", "16", *crop, *extra]
    return main(argv)


# ---------------------------------------------------------------------------------------- pieces
def test_views_against_the_timm_forward():
    torch.manual_seed(0)
    model = VisionTransformer(**ARCH).eval()
    imgs = torch.randn(3, 3, 16, 16)
    perm = tokens.permutations(3, 16, torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model.forward_features(imgs)
        assert torch.allclose(tokens.encode(model, imgs, "original"), ref, atol=1e-6)
        order = tokens.encode(model, imgs, "shuffle_order", perm)
        content = tokens.encode(model, imgs, "shuffle_content", perm)
    # tokens permuted with their positions: the same set of outputs, [cls] and mean unchanged
    assert torch.allclose(order[:, 0], ref[:, 0], atol=1e-5)
    assert torch.allclose(order[:, 1:].mean(1), ref[:, 1:].mean(1), atol=1e-5)
    assert torch.allclose(tokens.gather_tokens(ref[:, 1:], perm), order[:, 1:], atol=1e-5)
    # content moved to other cells: the [cls] feature changes
    assert (content[:, 0] - ref[:, 0]).abs().max() > 1e-3
    # a shuffled image through the timm forward is the shuffle_content view
    g = 4
    patches = imgs.unfold(2, 4, 4).unfold(3, 4, 4).permute(0, 2, 3, 1, 4, 5).reshape(3, g * g, 3, 4, 4)
    moved = torch.stack([patches[i, perm[i]] for i in range(3)]).reshape(3, g, g, 3, 4, 4)
    jigsaw = moved.permute(0, 3, 1, 4, 2, 5).reshape(3, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(model.forward_features(jigsaw), content, atol=1e-5)


def test_classifier_logits_view_matches_its_forward():
    torch.manual_seed(0)
    model = VisionTransformer(**ARCH, num_classes=5, global_pool="avg").eval()
    imgs = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(tokens.logits(model, imgs, "original"), model(imgs), atol=1e-6)


def test_views_refuse_a_missing_permutation():
    model = VisionTransformer(**ARCH)
    with pytest.raises(ValueError, match="needs a permutation"):
        tokens.input_tokens(model, torch.randn(1, 3, 16, 16), "shuffle_content")
    with pytest.raises(ValueError, match="view must be one of"):
        tokens.input_tokens(model, torch.randn(1, 3, 16, 16), "sideways")


def test_grid_distance_and_chance():
    grid = (2, 3)
    assert grid_distance(torch.tensor([0, 5, 2]), torch.tensor([0, 0, 3]), grid).tolist() == pytest.approx(
        [0.0, math.sqrt(5), math.sqrt(5)])
    c = chance((2, 2))  # 4 pairs at 0, 8 at 1, 4 at sqrt(2)
    assert c["top1"] == 25.0 and c["mean_dist"] == pytest.approx((8 + 4 * math.sqrt(2)) / 16)


# ---------------------------------------------------------------------------------------- position
def test_position_probe_end_to_end(tmp_path, data, encoder_file):
    out = tmp_path / "pos"
    assert probe("position", encoder_file, data, out, "--epochs", "40", "--lr", "1e-2", "--head-batch-size", "60",
                 "--train-images", "0", "--val-images", "0") == 0
    m = read_metrics(out / "metrics.json")
    assert m["task"] == "probe" and m["protocol"] == "position" and m["dataset"] == data.name
    assert m["backbone"]["method"] == "scratch" and m["grid"] == [4, 4] and m["num_tokens"] == 16
    assert m["train_images"] == 60 and m["val_images"] == 12
    met = m["metrics"]
    assert set(met) == {"top1", "mean_dist", "top1_with_pos", "mean_dist_with_pos", "top1_patch_embed",
                        "mean_dist_patch_embed"}
    ch = m["chance"]
    assert ch["top1"] == 6.25
    # sin-cos position embeddings through random blocks: positions stay linearly decodable
    assert met["top1_with_pos"] > 50.0 and met["mean_dist_with_pos"] < 0.5 * ch["mean_dist"]
    # without positions, i.i.d. noise patches carry no position: chance level (192 val tokens)
    assert met["top1"] < 20.0 and met["top1_patch_embed"] < 20.0
    assert met["mean_dist"] > 0.7 * ch["mean_dist"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["epochs"] == 40 and cfg["backbone"] == str(encoder_file)
    assert set(m["history"]) == {"no_pos", "with_pos", "patch_embed"} and len(m["history"]["with_pos"]) == 40
    # a finished run is not silently redone or replaced
    assert probe("position", encoder_file, data, out) == 2
    assert probe("position", encoder_file, data, out, "--overwrite", "--epochs", "1", "--head-batch-size", "60") == 0
    assert read_metrics(out / "metrics.json")["config"]["epochs"] == 1


# ---------------------------------------------------------------------------------------- order
def test_order_probe_with_a_linear_classifier(tmp_path, data, encoder_file):
    out = tmp_path / "order"
    assert probe("order", encoder_file, data, out, "--epochs", "20", "--lr", "1e-2", "--head-batch-size", "10",
                 "--train-images", "0", "--val-images", "0") == 0
    m = read_metrics(out / "metrics.json")
    assert m["task"] == "probe" and m["protocol"] == "order" and m["pool"] == "cls" and m["val_images"] == 12
    met = m["metrics"]
    assert set(met) == {"cos_dist", "cos_dist_images", "cos_dist_rel", "cos_dist_token_order", "acc", "acc_shuffled",
                        "acc_drop"}
    assert met["cos_dist_rel"] == pytest.approx(met["cos_dist"] / met["cos_dist_images"])
    assert met["cos_dist_images"] > met["cos_dist"]  # other images (other colours) differ more than a shuffle
    # invariant to token order (float rounding only), not to moving the (nearly uniform) patches around
    assert met["cos_dist_token_order"] < 1e-9 < 1e-6 < met["cos_dist"]
    assert met["acc_drop"] == pytest.approx(met["acc"] - met["acc_shuffled"])
    assert met["acc"] > 80.0  # colour classes: easy from frozen features
    assert m["classifier"]["kind"] == "linear_probe" and m["classifier"]["train_images"] == 60


@pytest.mark.slow
def test_order_probe_with_a_finetuned_classifier(tmp_path, data, encoder_file):
    ft = tmp_path / "ft"
    assert main(["classify", "finetune", "--backbone", str(encoder_file), "--data", str(data), "--output", str(ft),
                 "--workers", "0", "--batch-size", "8", "--epochs", "1", "--warmup-epochs", "0"]) == 0
    out = tmp_path / "order"
    assert probe("order", encoder_file, data, out, "--classifier", str(ft), "--val-images", "0",
                 "--crop-pct", "0.875") == 0  # the fine-tuning run's evaluation transform
    m = read_metrics(out / "metrics.json")
    c = m["classifier"]
    assert c["kind"] == "finetuned" and c["path"] == str(ft / "classifier.pth") and c["global_pool"] == "avg"
    ft_top1 = read_metrics(ft / "metrics.json")["metrics"]["top1"]
    assert m["metrics"]["acc"] == pytest.approx(ft_top1)  # same val images, same model, same transform
    assert m["metrics"]["acc_drop"] == pytest.approx(m["metrics"]["acc"] - m["metrics"]["acc_shuffled"])
    # data with other classes than the classifier's: refused
    other = make_imagefolder(tmp_path / "other", n_train=2, n_val=2, classes=2)
    assert probe("order", encoder_file, other, tmp_path / "o2", "--classifier", str(ft)) == 2


# ---------------------------------------------------------------------------------------- bad input
def test_bad_inputs_are_one_line_errors(tmp_path, data, encoder_file, capsys):
    no_val = tmp_path / "noval"
    (no_val / "train" / "a").mkdir(parents=True)
    Image.new("RGB", (16, 16)).save(no_val / "train" / "a" / "0.png")
    assert probe("position", encoder_file, no_val, tmp_path / "r1") == 2
    assert "missing val/ folder" in capsys.readouterr().err
    assert probe("order", encoder_file, data, tmp_path / "r2", "--classifier", str(tmp_path / "nope")) == 2
    assert "no such classifier file" in capsys.readouterr().err
    assert probe("position", encoder_file, data, tmp_path / "r3", "--train-images", "-1") == 2
    assert "--train-images must be an integer >= 0, got -1" in capsys.readouterr().err
    assert probe("position", tmp_path / "missing.pth", data, tmp_path / "r4") == 2
    assert "missing.pth" in capsys.readouterr().err
    assert probe("position", encoder_file, data, tmp_path / "r5", "--head-batch-size", "100000") == 2
    assert "lower --head-batch-size" in capsys.readouterr().err
    assert not any((tmp_path / r / "metrics.json").exists() for r in ("r1", "r2", "r3", "r4", "r5"))
