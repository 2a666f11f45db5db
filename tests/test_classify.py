"""Classification transfer (transfer/classification): tiny end-to-end runs of each protocol, resume,
the pieces they share, and bad inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from imagefolders import make_colour_imagefolder, write_tiny_encoder
from PIL import Image

from droppos.cli import main


def make_imagefolder(root, n_train=8, n_val=4, size=16, classes=3, seed=0):
    """Colour-coded classes with noise: learnable in a few steps."""
    return make_colour_imagefolder(root, n_train, n_val, size, classes, seed, noise=40.0)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_imagefolder(tmp_path_factory.mktemp("imgs"))


@pytest.fixture(scope="module")
def encoder_file(tmp_path_factory):
    return write_tiny_encoder(tmp_path_factory.mktemp("enc") / "encoder.pth", method="droppos", epochs=1, epochs_done=1)


def classify(protocol, encoder_file, data, out, *extra):
    argv = ["classify", protocol, "--backbone", str(encoder_file), "--data", str(data), "--output", str(out),
            "--workers", "0", "--batch-size", "8", *extra]
    return main(argv)


@pytest.mark.slow
def test_finetune_end_to_end(tmp_path, data, encoder_file):
    from droppos.backbones.source import default_name
    from droppos.transfer.classification.classifier import load_classifier

    from droppos.runs.records import read_metrics

    out = tmp_path / "ft"
    assert classify("finetune", encoder_file, data, out, "--epochs", "2", "--warmup-epochs", "1") == 0
    m = read_metrics(out / "metrics.json")
    assert m["task"] == "classification" and m["protocol"] == "finetune" and m["dataset"] == data.name
    bb = m["backbone"]
    assert (bb["method"], bb["arch"], bb["epochs"]) == ("droppos", "vit_d64x2_p4", 1) and m["epochs"] == 2
    assert bb["id"] == default_name(str(encoder_file))
    assert set(m["metrics"]) == {"top1", "top5", "top1_best"} and 0 <= m["metrics"]["top1"] <= 100
    assert m["metrics"]["top5"] == 100.0  # 3 classes: the true one is always among the top 3
    assert len(m["history"]) == 2 and m["config"]["layer_decay"] == 0.75
    epochs = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if '"epoch"' in line]
    assert [e["epoch"] for e in epochs] == [1, 2] and all("val_top1" in e for e in epochs)
    assert (out / "config.yaml").is_file() and any((out / "tb").iterdir())
    ck = torch.load(out / "checkpoint.pth", weights_only=True)
    assert ck["epoch"] == 2 and ck["meta"]["num_classes"] == 3
    model, meta = load_classifier(out / "classifier.pth")
    assert meta["global_pool"] == "avg" and meta["classes"] == ["class0", "class1", "class2"]
    assert model.head.out_features == 3 and model(torch.randn(2, 3, 16, 16)).shape == (2, 3)


@pytest.mark.slow
def test_finetune_resume_continues_after_last_epoch(tmp_path, data, encoder_file):
    out = tmp_path / "ft"
    assert classify("finetune", encoder_file, data, out, "--epochs", "1", "--warmup-epochs", "0") == 0
    (out / "metrics.json").unlink()  # as if killed after the epoch-1 checkpoint
    assert classify("finetune", encoder_file, data, out, "--epochs", "1") == 2  # refuses to clobber a run
    assert main(["classify", "finetune", "--output", str(out), "--resume", "--epochs", "2"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in m["history"]] == [1, 2] and m["config"]["data"] == str(data)


@pytest.mark.slow
def test_linear_probe_cached_features(tmp_path, data, encoder_file):
    out = tmp_path / "lin"
    assert classify("linear", encoder_file, data, out, "--epochs", "2", "--warmup-epochs", "1", "--lr", "0.5") == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["protocol"] == "linear" and m["cache_features"] is True and len(m["history"]) == 2
    feats = torch.load(out / "features.pth", weights_only=True)
    assert feats["train_x"].shape == (24, 64) and feats["val_x"].shape == (12, 64)
    assert torch.equal(feats["train_y"], torch.arange(3).repeat_interleave(8))
    head = torch.load(out / "checkpoint.pth", weights_only=True)["model"]
    assert set(head) == {"0.running_mean", "0.running_var", "0.num_batches_tracked", "1.weight", "1.bias"}


@pytest.mark.slow
def test_linear_resume_from_middle_matches(tmp_path, data, encoder_file, monkeypatch):
    """Cached features have no augmentation: killed after epoch 2 and resumed == uninterrupted."""
    args = ["--warmup-epochs", "1", "--lr", "0.5"]
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert classify("linear", encoder_file, data, full, "--epochs", "3", *args) == 0
    # an interrupted run: train 3 epochs' schedule but stop after 2 (checkpoint of epoch 2 is kept)
    from droppos.transfer.classification.config import LinearConfig
    from droppos.transfer.classification.main import run_protocol

    cfg = LinearConfig(backbone=str(encoder_file), data=str(data), output=str(cut), workers=0, batch_size=8,
                       epochs=3, warmup_epochs=1, lr=0.5)
    import droppos.transfer.classification.driver as linear  # the one epoch driver

    calls = {"n": 0}
    real = linear.train_one_epoch

    def stop_after_two(*a, **k):
        if calls["n"] == 2:
            raise KeyboardInterrupt
        calls["n"] += 1
        return real(*a, **k)

    monkeypatch.setattr(linear, "train_one_epoch", stop_after_two)  # a kill during epoch 3
    with pytest.raises(KeyboardInterrupt):
        run_protocol(cfg, "linear")
    monkeypatch.undo()
    assert torch.load(cut / "checkpoint.pth", weights_only=True)["epoch"] == 2
    assert main(["classify", "linear", "--output", str(cut), "--resume"]) == 0
    a = torch.load(full / "checkpoint.pth", weights_only=True)["model"]
    b = torch.load(cut / "checkpoint.pth", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    ma, mb = (json.loads((d / "metrics.json").read_text())["metrics"] for d in (full, cut))
    assert ma == mb


@pytest.mark.slow
def test_linear_uncached_and_knn(tmp_path, data, encoder_file, capsys):
    assert classify("linear", encoder_file, data, tmp_path / "lin", "--epochs", "1", "--warmup-epochs", "0",
                    "--cache-features", "false", "--optimizer", "sgd", "--lr", "0.1") == 0
    assert not (tmp_path / "lin" / "features.pth").exists()
    assert classify("knn", encoder_file, data, tmp_path / "knn", "--k", "5") == 0
    m = json.loads((tmp_path / "knn" / "metrics.json").read_text())
    assert m["protocol"] == "knn" and m["k"] == 5 and m["temperature"] == 0.07
    capsys.readouterr()
    assert classify("knn", encoder_file, data, tmp_path / "knn_big", "--k", "500") == 0  # 24 training images
    assert "warning: knn: --k 500 is more than the 24 training samples" in capsys.readouterr().err
    m = json.loads((tmp_path / "knn_big" / "metrics.json").read_text())
    assert m["k"] == 24 and m["k_requested"] == 500  # recorded as used
    assert m["metrics"]["top1"] > 60  # colour-coded classes are near-separable even for a random ViT


def test_knn_classify_on_known_neighbours():
    from droppos.transfer.classification.knn import knn_classify

    train_x = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    train_y = torch.tensor([0, 0, 1, 1])
    test_x = torch.tensor([[1.0, 0.05], [0.05, 1.0], [0.2, 1.0]])
    m = knn_classify(train_x, train_y, test_x, torch.tensor([0, 1, 0]), num_classes=2, k=2, temperature=0.07)
    assert m["top1"] == pytest.approx(200 / 3) and m["top5"] == 100.0
    m = knn_classify(train_x * 5, train_y, test_x, torch.tensor([0, 1, 1]), num_classes=2, k=4)  # scale-free
    assert m["top1"] == 100.0


def test_extract_features_order_and_pools(data, encoder_file):
    from droppos.backbones.source import load_backbone
    from droppos.transfer.classification.data import build_transform, check_imagefolder, image_folder
    from droppos.transfer.classification.features import extract_features
    from torch.utils.data import DataLoader

    enc = load_backbone(encoder_file).encoder().eval()
    ds = image_folder(data, "val", build_transform("eval", 16), check_imagefolder(data))
    loader = DataLoader(ds, batch_size=5)
    cls, y = extract_features(enc, loader, "cpu")
    tokens, _ = extract_features(enc, loader, "cpu", pool="all")
    avg, _ = extract_features(enc, loader, "cpu", pool="avg")
    assert cls.shape == (12, 64) and tokens.shape == (12, 17, 64) and torch.equal(y, torch.arange(3).repeat_interleave(4))
    with torch.no_grad():
        ref = enc.forward_features(torch.stack([ds[i][0] for i in range(12)]))
    torch.testing.assert_close(cls, ref[:, 0])
    torch.testing.assert_close(avg, ref[:, 1:].mean(1))
    assert not enc.training


def test_classifier_holds_the_backbone_weights(encoder_file):
    from droppos.backbones.source import load_backbone

    bb = load_backbone(encoder_file)
    model = bb.classifier(16, 5, "avg")
    for k, v in bb.state_dict.items():
        if not k.startswith("norm."):
            assert torch.equal(model.state_dict()[k], v), k
    assert model.head.weight.abs().max() < 1e-3 and model.pos_embed.requires_grad
    big = bb.classifier(32, 5, "token", train_pos_embed=False)
    assert big.pos_embed.shape == (1, 65, 64) and not big.pos_embed.requires_grad
    assert torch.equal(big.norm.weight, bb.state_dict["norm.weight"])


def test_bad_inputs_are_one_line_errors(tmp_path, data, encoder_file, capsys):
    empty_val = make_imagefolder(tmp_path / "ev", n_val=1)
    for f in (empty_val / "val").rglob("*.png"):
        f.unlink()
    other = make_imagefolder(tmp_path / "other")
    (other / "val" / "class2").rename(other / "val" / "classX")
    timm_sd = dict(torch.load(encoder_file, weights_only=True)["state_dict"])
    timm_sd["head.weight"], timm_sd["head.bias"] = torch.zeros(7, 64), torch.zeros(7)
    torch.save(timm_sd, tmp_path / "supervised.pth")
    cases = [
        (["finetune", "--backbone", str(encoder_file), "--data", str(data), "--img-size", "18"],
         "image size 18x18 is not divisible by the patch size 4"),
        (["knn", "--backbone", str(encoder_file), "--data", str(empty_val)], "the val split is empty"),
        (["knn", "--backbone", str(encoder_file), "--data", str(other)], "train/ and val/ have different classes"),
        (["knn", "--backbone", str(encoder_file), "--data", str(tmp_path / "nowhere")], "missing train/ folder"),
        (["knn", "--data", str(data)], "no --backbone given"),
        (["finetune", "--backbone", str(tmp_path / "supervised.pth"), "--arch", "num_heads=2", "--data", str(data),
          "--head-init", "source"], "its classifier head has 7 classes, the data has 3"),
        (["finetune", "--backbone", str(encoder_file), "--data", str(data), "--batch-size", "7"],
         "mixup/cutmix need an even --batch-size"),
    ]
    for i, (argv, message) in enumerate(cases):
        assert main(["classify", *argv, "--output", str(tmp_path / f"run{i}"), "--workers", "0"]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err


@pytest.mark.slow
def test_resume_with_other_classes_is_refused(tmp_path, data, encoder_file, capsys):
    out = tmp_path / "lin"
    assert classify("linear", encoder_file, data, out, "--epochs", "1", "--lr", "0.5") == 0
    (out / "metrics.json").unlink()
    four = make_imagefolder(tmp_path / "four", classes=4)
    config = (out / "config.json").read_text()
    assert main(["classify", "linear", "--output", str(out), "--resume", "--data", str(four)]) == 2
    err = capsys.readouterr().err
    assert "(3 classes)" in err and "(4 classes)" in err and "resume with the run's own options" in err
    assert (out / "config.json").read_text() == config  # the rejected request changed nothing
    assert main(["classify", "linear", "--output", str(out), "--resume"]) == 0  # the plain resume still works


@pytest.mark.slow
def test_resume_with_another_backbone_of_the_same_shape_is_refused(tmp_path, data, encoder_file, capsys):
    import shutil

    out = tmp_path / "lin"
    assert classify("linear", encoder_file, data, out, "--epochs", "1", "--lr", "0.5") == 0
    (out / "metrics.json").unlink()
    other = tmp_path / "other" / "encoder.pth"
    other.parent.mkdir()
    shutil.copy(encoder_file, other)
    assert main(["classify", "linear", "--output", str(out), "--resume", "--backbone", str(other)]) == 0  # same bytes
    (out / "metrics.json").unlink()
    obj = torch.load(other)
    obj["state_dict"]["cls_token"] += 1.0  # same shape, other weights
    torch.save(obj, other)
    assert main(["classify", "linear", "--output", str(out), "--resume", "--backbone", str(other)]) == 2
    assert "the run started from" in capsys.readouterr().err


def _extract_worker(rank, world, port, data, encoder_file, out):
    import torch.distributed as dist
    from droppos.backbones.source import load_backbone
    from droppos.transfer.classification.data import build_transform, check_imagefolder, eval_loader, image_folder
    from droppos.transfer.classification.features import extract_features

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        enc = load_backbone(encoder_file).encoder().eval()
        ds = image_folder(data, "train", build_transform("eval", 16), check_imagefolder(data))
        feats, labels = extract_features(enc, eval_loader(ds, 5, 0, rank, world), "cpu")
        if rank == 0:
            torch.save({"x": feats, "y": labels}, out)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_extract_features_gathers_shards_in_dataset_order(tmp_path, data, encoder_file):
    import socket

    import torch.multiprocessing as mp
    from droppos.backbones.source import load_backbone
    from droppos.transfer.classification.data import build_transform, check_imagefolder, image_folder
    from droppos.transfer.classification.features import extract_features
    from torch.utils.data import DataLoader

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_extract_worker, args=(2, port, data, encoder_file, tmp_path / "x.pth"), nprocs=2)
    got = torch.load(tmp_path / "x.pth", weights_only=True)
    enc = load_backbone(encoder_file).encoder().eval()
    ds = image_folder(data, "train", build_transform("eval", 16), check_imagefolder(data))
    ref, labels = extract_features(enc, DataLoader(ds, batch_size=7), "cpu")
    assert torch.equal(got["y"], labels)
    torch.testing.assert_close(got["x"], ref)


def test_randaugment_runs_with_zero_bit_posterize():
    """Magnitude 10 of PosterizeIncreasing keeps 0 bits: a black image (Pillow >= 13 would raise)."""
    from droppos.transfer.classification.data import build_transform
    from timm.data.auto_augment import RandAugment

    t = build_transform("finetune", 16, aa="rand-m10-mstd0.5-inc1", reprob=0.25)
    (ra,) = [x for x in t.transforms if isinstance(x, RandAugment)]
    (post,) = [op for op in ra.ops if op.name == "PosterizeIncreasing"]
    img = Image.fromarray(np.full((16, 16, 3), 200, np.uint8))
    assert np.asarray(post.aug_fn(img, 0)).max() == 0 and np.asarray(post.aug_fn(img, 4)).max() == 192
    for _ in range(100):
        assert t(img).shape == (3, 16, 16)


def test_finetune_crop_scale_reaches_timm():
    from droppos.transfer.classification.data import build_transform
    from timm.data.transforms import RandomResizedCropAndInterpolation

    for min_scale in (0.08, 0.5):
        (crop,) = [x for x in build_transform("finetune", 16, min_scale=min_scale).transforms
                   if isinstance(x, RandomResizedCropAndInterpolation)]
        assert tuple(crop.scale) == (min_scale, 1.0)
    with pytest.raises(ValueError, match="min_scale must be in"):
        build_transform("finetune", 16, min_scale=0.0)


def test_resume_of_another_kind_of_run_names_that_kind(tmp_path, capsys):
    """A linear probe resumed on a fine-tuning folder says so (not "unknown option(s) ['aa', 'clip_grad', ...]")."""
    from droppos.cli import main
    from droppos.transfer.classification.config import FinetuneConfig
    from droppos.utils.config import write_config

    write_config(FinetuneConfig(backbone="enc.pth", data="data"), tmp_path / "ft")
    assert main(["classify", "linear", "--output", str(tmp_path / "ft"), "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"droppos classify: error: {tmp_path / 'ft'}: holds a classify finetune run, not linear; resume it "
                   f"with `droppos classify finetune --output {tmp_path / 'ft'} --resume`, or give linear another --output")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text('{"mask_ratio": 0.75, "epochs": 3}')
    assert main(["classify", "knn", "--output", str(tmp_path / "other"), "--resume"]) == 2
    assert "its config.json is not a classify run's (options no protocol has: mask_ratio)" in capsys.readouterr().err
