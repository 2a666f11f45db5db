"""Fault injection: hostile pickles at every entry point, kills, concurrent writers, foreign folders.

A hostile file's payload would create a marker file; the marker must never appear, and every
refusal is one line naming the file and the fix.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from cli_errors import one_line_error
from imagefolders import make_colour_imagefolder, write_tiny_encoder

from droppos.cli import main

REPO = Path(__file__).resolve().parents[1]


class Payload:
    """Unpickling this runs ``touch MARKER``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def hostile(tmp_path):
    """``(pkl, pth, marker)``: a plain pickle and a torch.save file that would run the payload."""
    marker = tmp_path / "MARKER"
    pkl, pth = tmp_path / "evil.pkl", tmp_path / "evil.pth"
    with open(pkl, "wb") as f:
        pickle.dump({"model": {"backbone.net.pos_embed": Payload(marker)}}, f)
    torch.save({"model": Payload(marker), "state_dict": {}}, pth)
    return pkl, pth, marker


# ---------------------------------------------------------------------------------------- hostile pickles
@pytest.mark.parametrize("fmt,label", [("pkl", "numpy.save"), ("pth-zip", "os.system"), ("pt-zip", "builtins.eval"),
                                       ("pth-legacy", "argparse._os.system"), ("pth-tar", "subprocess.getoutput")])
def test_hostile_backbone_files_never_run(tmp_path, capsys, fmt, label):
    """Each container format (tests/hostile.py), each with another kind of global, through every command that
    reads a backbone file."""
    from hostile import hostile_file

    markers = tmp_path / "markers"
    markers.mkdir()
    src = str(hostile_file(tmp_path, fmt, label, markers))
    data = make_colour_imagefolder(tmp_path / "imgs")
    commands = [
        ["convert", "--backbone", src, "--to", "timm", "--out", str(tmp_path / "o.pth")],
        ["classify", "knn", "--backbone", src, "--data", str(data), "--output", str(tmp_path / "knn"), "--workers", "0"],
        ["classify", "linear", "--backbone", src, "--data", str(data), "--output", str(tmp_path / "lin"), "--workers",
         "0"],
        ["classify", "finetune", "--backbone", src, "--data", str(data), "--output", str(tmp_path / "ft"), "--workers",
         "0"],
        ["probe", "position", "--backbone", src, "--data", str(data), "--output", str(tmp_path / "pp"), "--workers", "0"],
        ["probe", "order", "--backbone", src, "--data", str(data), "--output", str(tmp_path / "po"), "--workers", "0"],
        ["convert", "--backbone", src, "--from", "timm", "--to", "mmseg", "--out", str(tmp_path / "m.pth")],
        ["convert", "--backbone", src, "--to", "detectron2", "--out", str(tmp_path / "d.pth")],
    ]
    for argv in commands:
        assert main(argv) == 2, argv
        one_line_error(capsys, Path(src).name, "--trust-pickle")
    assert not list(markers.iterdir())


@pytest.mark.detectron2
def test_hostile_files_never_run_in_detection(tmp_path, hostile, capsys):
    pytest.importorskip("detectron2")
    from detection_helpers import build_tiny_coco

    pkl, pth, marker = hostile
    coco = build_tiny_coco(tmp_path / "coco", train=2, val=1)
    base = ["detect", "--config-file", "mask_rcnn_vitdet_fmnist", "--data", str(coco)]
    for src in (pkl, pth):
        assert main([*base, "--backbone", str(src), "--from", "detectron2", "--output", str(tmp_path / "a")]) == 2
        one_line_error(capsys, src.name, "--trust-pickle")
    # a run folder whose last_checkpoint names a hostile file: --eval-only and --resume read it safely
    run = tmp_path / "run"
    run.mkdir()
    for src in (pkl, pth):
        (run / "last_checkpoint").write_text(str(src))
        assert main([*base, "--output", str(run), "--eval-only"]) == 2
        one_line_error(capsys, src.name, "--trust-pickle")
        assert main([*base, "--output", str(run), "--resume", "--backbone", "scratch", "train.max_iter=1"]) == 2
        one_line_error(capsys, src.name, "--trust-pickle")
    assert not marker.exists()


def test_hostile_classification_checkpoint_and_order_classifier(tmp_path, hostile, capsys):
    _, pth, marker = hostile
    data = make_colour_imagefolder(tmp_path / "imgs")
    enc = write_tiny_encoder(tmp_path / "encoder.pth", method="droppos", epochs=1)
    run = tmp_path / "ft"
    run.mkdir()
    (run / "checkpoint.pth").write_bytes(pth.read_bytes())
    argv = ["classify", "finetune", "--backbone", str(enc), "--data", str(data), "--output", str(run), "--workers", "0",
            "--resume", "--epochs", "1"]
    assert main(argv) == 2
    one_line_error(capsys, "checkpoint.pth", "--trust-pickle")
    assert main(["probe", "order", "--backbone", str(enc), "--data", str(data), "--output", str(tmp_path / "po"),
                 "--classifier", str(pth), "--workers", "0"]) == 2
    one_line_error(capsys, pth.name)
    pt = tmp_path / "pt"
    pt.mkdir()
    (pt / "checkpoint.pth").write_bytes(pth.read_bytes())
    assert main(["pretrain", "--data", str(data), "--output", str(pt), "--resume", "--model", "tiny", "--patch-size",
                 "4", "--img-size", "16", "--epochs", "1", "--warmup-epochs", "0", "--batch-size", "4", "--workers", "0"]) == 2
    one_line_error(capsys, "checkpoint.pth", "--trust-pickle")
    assert not marker.exists()


# ---------------------------------------------------------------------------------------- exact resume
def _finetune_argv(enc, data, out):
    return [sys.executable, "-m", "droppos.cli", "classify", "finetune", "--backbone", str(enc), "--data", str(data),
            "--output", str(out), "--workers", "0", "--batch-size", "8", "--epochs", "3", "--warmup-epochs", "1",
            "--resume", "--log-every", "1"]


@pytest.mark.slow
def test_finetune_killed_and_resumed_equals_the_uninterrupted_run(tmp_path):
    """RandAugment (Python RNG), mixup/cutmix (numpy RNG), drop path and random erasing (torch RNG)
    all on: SIGKILL right after the first epoch's checkpoint, resume, compare bit for bit."""
    data = make_colour_imagefolder(tmp_path / "imgs", n_train=40, n_val=6)
    enc = write_tiny_encoder(tmp_path / "encoder.pth", method="droppos", epochs=1)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run(_finetune_argv(enc, data, straight), check=True, env=env, capture_output=True)

    proc = subprocess.Popen(_finetune_argv(enc, data, killed), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (killed / "checkpoint.pth").is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = torch.load(killed / "checkpoint.pth")["epoch"]
    assert done < 3, "the run finished before the kill: make its epochs longer"
    subprocess.run(_finetune_argv(enc, data, killed), check=True, env=env, capture_output=True)

    a, b = torch.load(straight / "classifier.pth"), torch.load(killed / "classifier.pth")
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (straight, killed))
    assert ma["metrics"] == mb["metrics"] and ma["history"] == mb["history"]


# ---------------------------------------------------------------------------------------- run folders
def test_a_second_writer_is_refused_with_the_holders_pid(tmp_path, capsys):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, sys.argv[2]); from droppos.runs import claim; "
        "claim(sys.argv[1], 'classify knn'); print('held', flush=True); time.sleep(60)"), str(out), str(REPO)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        data = make_colour_imagefolder(tmp_path / "imgs")
        enc = write_tiny_encoder(tmp_path / "encoder.pth", method="droppos", epochs=1)
        assert main(["classify", "knn", "--backbone", str(enc), "--data", str(data), "--output", str(out),
                     "--workers", "0"]) == 2
        one_line_error(capsys, str(out), f"pid {holder.pid}", "choose another --output")
    finally:
        holder.kill()
        holder.wait()


def test_a_folder_of_another_kind_is_never_overwritten(tmp_path, capsys):
    from droppos.runs import release

    data = make_colour_imagefolder(tmp_path / "imgs")
    enc = write_tiny_encoder(tmp_path / "encoder.pth", method="droppos", epochs=1)
    out = tmp_path / "pt"
    out.mkdir()
    (out / "droppos-run.json").write_text('{"kind": "pretrain"}\n')
    (out / "checkpoint.pth").write_bytes(b"precious")
    (out / "log.jsonl").write_text("{}\n")
    try:
        assert main(["classify", "finetune", "--backbone", str(enc), "--data", str(data), "--output", str(out),
                     "--workers", "0", "--overwrite"]) == 2
        one_line_error(capsys, "holds a 'pretrain' run", "choose another --output")
    finally:
        release(out)
    assert (out / "checkpoint.pth").read_bytes() == b"precious" and (out / "log.jsonl").is_file()


# ---------------------------------------------------------------------------------------- validators
@pytest.mark.parametrize("extra, message", [
    (["--k", "0"], "--k must be an integer >= 1, got 0"),
    (["--temperature", "0"], "--temperature must be a number > 0, got 0.0"),
    (["--temperature", "nan"], "--temperature must be a finite number > 0, got nan"),
    (["--batch-size", "0"], "--batch-size must be an integer >= 1, got 0"),
    (["--workers", "-1"], "--workers must be an integer >= 0, got -1"),
    (["--img-size", "-32"], "--img-size must be an integer >= 1, got -32"),
    (["--crop-pct", "1.5"], "--crop-pct must be a number > 0 and <= 1, got 1.5"),
    (["--device", "cuda"], "--device cuda: no CUDA GPU is visible"),
])
def test_knn_options_are_checked_where_they_enter(tmp_path, capsys, extra, message):
    if "cuda" in extra and torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    data = make_colour_imagefolder(tmp_path / "imgs")
    enc = write_tiny_encoder(tmp_path / "encoder.pth", method="droppos", epochs=1)
    assert main(["classify", "knn", "--backbone", str(enc), "--data", str(data), "--output", str(tmp_path / "o"),
                 *extra]) == 2
    one_line_error(capsys, message)


@pytest.mark.parametrize("text, message", [
    ("epochs: three\n", "--epochs must be an integer >= 1, got 'three' (from "),
    ("clip_grad: -1\n", "--clip-grad must be a number >= 0, got -1"),
    ("lr: .nan\n", "--lr must be a finite number > 0, got nan"),
    ("min_scale: 0\n", "--min-scale must be a number > 0 and <= 1, got 0"),
    ("layer_decay: 2\n", "--layer-decay must be a number > 0 and <= 1, got 2"),
    ("epochz: 3\n", "unknown option(s) ['epochz'] ('epochz': did you mean 'epochs'?)"),
])
def test_finetune_config_file_values_are_checked(tmp_path, capsys, text, message):
    (tmp_path / "cfg.yaml").write_text(text)
    assert main(["classify", "finetune", "--config", str(tmp_path / "cfg.yaml"), "--backbone", "scratch:tiny_p8_32",
                 "--output", str(tmp_path / "o")]) == 2
    one_line_error(capsys, message)
    assert not (tmp_path / "o").exists()  # nothing written for a bad request


# ---------------------------------------------------------------------------------------- data checks
def _coco(tmp_path, bbox, json_size=(32, 32), image_size=(32, 32)):
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    Image.new("RGB", image_size).save(images / "a.png")
    data = {"images": [{"id": 1, "file_name": "a.png", "width": json_size[0], "height": json_size[1]}],
            "categories": [{"id": 1, "name": "x"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": bbox, "iscrowd": 0, "area": 4.0,
                             "segmentation": [[0, 0, 4, 0, 4, 4]]},
                            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [2, 2, 8, 8], "iscrowd": 0, "area": 64.0,
                             "segmentation": [[2, 2, 10, 2, 10, 10]]}]}
    (tmp_path / "instances.json").write_text(json.dumps(data))
    return tmp_path / "instances.json", images


def test_coco_boxes_with_nan_or_outside_the_image_are_not_usable(tmp_path):
    from droppos.tools.data.coco import validate_coco

    from droppos.errors import UserError

    js, images = _coco(tmp_path, [float("nan"), 0, 4, 4])
    with pytest.raises(UserError, match="annotation 1 has a non-finite bbox"):
        validate_coco(js, images)
    js, images = _coco(tmp_path, [40, 40, 5, 5])  # wholly right of and below a 32 x 32 image
    rep = validate_coco(js, images)
    assert rep.degenerate_boxes == 1 and rep.usable_annotations == 1


def test_coco_image_size_must_match_the_json(tmp_path):
    from droppos.tools.data.coco import validate_coco

    from droppos.errors import UserError

    js, images = _coco(tmp_path, [0, 0, 4, 4], json_size=(32, 32), image_size=(48, 32))
    with pytest.raises(UserError, match=r"a.png: the image is 48x32, the JSON says 32x32"):
        validate_coco(js, images)


def test_imagefolder_build_never_records_more_than_it_built(tmp_path, capsys):
    assert main(["data", "imagefolder", "--out", str(tmp_path / "f"), "--train-per-class", "7000"]) == 2
    one_line_error(capsys, "--train-per-class 7000", "6000 images per class")
    assert not (tmp_path / "f").exists()


# ---------------------------------------------------------------------------------------- filesystem
def test_a_full_disk_is_one_line_and_keeps_the_previous_file(tmp_path, capsys, monkeypatch):
    """torch reports a full disk as 'unexpected pos N vs M': the message names the file and the free space."""
    out = tmp_path / "o.pth"
    out.write_bytes(b"previous")

    def full(obj, f, *a, **k):
        f.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 2024832 vs 2024720")

    monkeypatch.setattr(torch, "save", full)
    assert main(["convert", "--backbone", "scratch:tiny_p8_32", "--to", "timm", "--out", str(out)]) == 2
    one_line_error(capsys, "o.pth: could not be written", "MiB free on its disk", "choose another --output")
    assert out.read_bytes() == b"previous" and not list(tmp_path.glob(".o.pth.*"))


def test_an_unwritable_folder_is_one_line(tmp_path, capsys, monkeypatch):
    import errno

    def refuse(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / "ro" / "metrics.json"))

    data = make_colour_imagefolder(tmp_path / "imgs")
    monkeypatch.setattr("droppos.utils.metrics.Path.write_text", refuse)
    assert main(["classify", "knn", "--backbone", "scratch:tiny_p8_32", "--data", str(data), "--output",
                 str(tmp_path / "ro"), "--workers", "0"]) == 2
    one_line_error(capsys, "Read-only file system", "choose a writable --output")


@pytest.mark.parametrize("workers", ["0", "2"])
def test_an_unreadable_image_is_named(tmp_path, capsys, workers):
    data = make_colour_imagefolder(tmp_path / "imgs")
    bad = data / "val" / "class1" / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    assert main(["classify", "knn", "--backbone", "scratch:tiny_p8_32", "--data", str(data), "--output",
                 str(tmp_path / "o"), "--workers", workers]) == 2
    one_line_error(capsys, "broken.png: unreadable image", "remove or replace the file")


@pytest.mark.mmseg
def test_segmentation_resume_from_a_truncated_or_hostile_checkpoint_is_one_line(tmp_path, hostile, capsys):
    pytest.importorskip("mmseg")
    from segmentation_helpers import build_tiny_dataset, tiny_run_options

    _, pth, marker = hostile
    data = build_tiny_dataset(tmp_path / "ade", train=2, val=1)
    run = tmp_path / "seg"
    run.mkdir()
    broken = run / "iter_2.pth"
    for content in (b"", b"PK\x03\x04truncated", pth.read_bytes()):
        broken.write_bytes(content)
        (run / "last_checkpoint").write_text(str(broken))
        assert main(["segment", "--config", "upernet_vit_fmnist", "--backbone", "scratch", "--data", str(data),
                     "--output", str(run), "--resume", "--cfg-options", *tiny_run_options(3)]) == 2
        one_line_error(capsys, "iter_2.pth")
    assert not marker.exists()


@pytest.mark.mmseg
def test_scenes_smaller_than_the_segmentation_crop_stop_before_training(tmp_path, capsys):
    pytest.importorskip("mmseg")
    assert main(["data", "ade20k", "--out", str(tmp_path / "ade"), "--canvas", "64", "--train-images", "2",
                 "--val-images", "1", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["segment", "--config", "upernet_vit_fmnist", "--backbone", "scratch", "--data", str(tmp_path / "ade"),
                 "--output", str(tmp_path / "seg"), "--cfg-options", "train_cfg.max_iters=1"]) == 2
    one_line_error(capsys, "scenes are 64 px", "128x128 px crops", "--canvas 128")
    assert not list((tmp_path / "seg").glob("iter_*.pth"))


def test_a_kill_during_a_checkpoint_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    from droppos.utils.checkpoint import atomic_save, safe_load

    path = tmp_path / "checkpoint.pth"
    atomic_save({"epoch": 1}, path)

    def killed(obj, f, *a, **k):
        f.write(b"PK\x03\x04half")
        raise KeyboardInterrupt  # SIGINT in the middle of the write

    monkeypatch.setattr(torch, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        atomic_save({"epoch": 2}, path)
    monkeypatch.undo()
    assert safe_load(path) == {"epoch": 1} and [p.name for p in tmp_path.iterdir()] == ["checkpoint.pth"]
