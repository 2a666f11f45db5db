"""``droppos detect`` end to end through detectron2's engine: train, checkpoint, resume, evaluate.

A tiny ViTDet (64-d, 2 blocks, narrow heads) on a few real embedded scenes, for a few
iterations: SimpleTrainer on CPU, PeriodicCheckpointer, EvalHook with COCOEvaluator.
"""

from __future__ import annotations

import json

import pytest
import torch
from detection_helpers import FMNIST, TINY, build_tiny_coco, write_encoder

from droppos.cli import main

pytest.importorskip("detectron2.engine", reason="detectron2 is not installed")
pytestmark = pytest.mark.detectron2

RUN = ["dataloader.train.total_batch_size=2", "train.checkpointer.period=1", "train.log_period=1",
       "model.roi_heads.box_predictor.test_topk_per_image=20"]
METRICS = {f"{t}_{m}" for t in ("bbox", "segm") for m in ("AP", "AP50", "AP75", "APs", "APm", "APl")}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("det")
    data = build_tiny_coco(root / "coco", train=4, val=2)
    enc = write_encoder(root / "encoder.pth")
    return root, data, enc


def detect(*args):
    return main(["detect", "--config-file", FMNIST, *map(str, args)])


@pytest.mark.slow
def test_train_resume_evaluate(setup, capsys):
    from detectron2.config import LazyConfig

    root, data, enc = setup
    out = root / "run"
    rc = detect("--backbone", root / "encoder.pth", "--output", out, "--data", data, *TINY, *RUN, "train.max_iter=2")
    assert rc == 0
    printed = capsys.readouterr().out
    assert "not in the file, set by the recipe: 4 x zeros (ViTDet relative position tables)" in printed
    assert "0 errors" in printed  # validate_coco summaries

    record = json.loads((out / "metrics.json").read_text())
    assert record["task"] == "detection" and record["protocol"] == "mask_rcnn" and record["dataset"] == "fmnist"
    assert set(record["metrics"]) == METRICS and record["iterations"] == 2
    assert record["backbone"]["method"] == "droppos" and record["load_report"]["ok"]
    assert record["init"]["kind"] == "converted"
    cfg = LazyConfig.load(str(out / "config.yaml"))  # the resolved config, as detectron2 saved it
    assert cfg.train.device == "cpu" and not cfg.train.amp.enabled and cfg.train.max_iter == 2
    assert cfg.model.backbone.net.embed_dim == 64
    events = [json.loads(line) for line in (out / "events.json").read_text().splitlines()]
    assert events[0]["iteration"] == 0 and "total_loss" in events[0]
    assert any("bbox/AP" in e for e in events)  # EvalHook's results in the event log

    final = torch.load(out / "model_final.pth", weights_only=True)  # our rule: loadable safely
    assert final["iteration"] == 1
    trained = final["model"]["backbone.net.blocks.0.attn.qkv.weight"]
    assert not torch.equal(trained, enc.state_dict()["blocks.0.attn.qkv.weight"])  # it trained

    # a finished run is never overwritten: without --resume / --eval-only the folder is refused
    before = (out / "model_final.pth").read_bytes()
    assert detect("--backbone", "scratch", "--output", out, "--data", data, *TINY, *RUN, "train.max_iter=3") == 2
    assert "already holds a run (last_checkpoint); pass --resume to continue it or --eval-only" in capsys.readouterr().err
    assert (out / "model_final.pth").read_bytes() == before

    rc = detect("--backbone", "scratch", "--output", out, "--data", data, "--resume", *TINY, *RUN, "train.max_iter=3")
    assert rc == 0
    assert "--backbone is not used" in capsys.readouterr().out
    log = (out / "log.txt").read_text()
    assert "Starting training from iteration 2" in log
    record = json.loads((out / "metrics.json").read_text())
    assert record["iterations"] == 3 and record["backbone"]["method"] == "droppos"  # from init.json

    rc = detect("--output", out, "--data", data, "--eval-only", *TINY)
    assert rc == 0
    record = json.loads((out / "metrics.json").read_text())
    assert record["eval_only"] and record["backbone"]["method"] == "droppos"  # carried over from the run
    assert record["init"]["checkpoint"].endswith("model_final.pth")
    assert record["load_report"]["random_init"] == [] and set(record["metrics"]) == METRICS


@pytest.mark.parametrize("args,message", [
    (["--output", "{out}"], "training needs --backbone SRC"),
    (["--backbone", "scratch", "--output", "{out}", "train.max_iter"], "is not KEY=VALUE"),
    (["--backbone", "scratch", "--output", "{out}", "--eval-only"], "--eval-only needs a trained detector"),
    (["--backbone", "{root}/nothing.pth", "--output", "{out}"], "nothing.pth: no such checkpoint file"),
    (["--backbone", "scratch", "--output", "{out}", "--num-machines", "2"], "need --dist-url"),
    (["--backbone", "scratch", "--output", "{out}", "train.max_iterz=2"],
     "override train.max_iterz: the config has no 'max_iterz' under 'train'; did you mean train.max_iter?"),
    (["--backbone", "scratch", "--output", "{out}", "model.roi_heads.mask_head=None"],
     "override 'model.roi_heads.mask_head=None' would set the string 'None'; write model.roi_heads.mask_head=null"),
    (["--backbone", "scratch", "--output", "{out}", "model.roi_heads.box_predictor.test_topk_per_imagez=3"],
     "no 'test_topk_per_imagez' under 'model.roi_heads.box_predictor'; did you mean "
     "model.roi_heads.box_predictor.test_topk_per_image?"),
])
def test_bad_input_is_a_one_line_error(setup, capsys, args, message):
    root, data, _ = setup
    rc = detect("--data", data, *[a.format(out=root / "bad", root=root) for a in args], *TINY)
    err = capsys.readouterr().err
    assert rc == 2 and message in err and err.startswith("droppos detect: error:")
    assert not (root / "bad" / "metrics.json").exists()


def test_missing_data_and_unknown_config(setup, capsys):
    root, _, _ = setup
    assert detect("--backbone", "scratch", "--output", root / "x", "--data", root / "none") == 2
    assert "dataset folder not found" in capsys.readouterr().err
    rc = main(["detect", "--config-file", "nope", "--backbone", "scratch", "--output", str(root / "x")])
    assert rc == 2 and "mask_rcnn_vitdet_fmnist" in capsys.readouterr().err


def test_a_set_without_instance_masks_is_one_line_and_trains_boxes_only(setup, tmp_path, capsys):
    """A box-only COCO set under a Mask R-CNN config: one line naming the file and the overrides (before, the
    first batch stopped in detectron2's mask loss with a traceback); with those overrides it trains and
    evaluates boxes."""
    import shutil

    from droppos.transfer.detection.datasets import BOXES_ONLY

    root, data, _ = setup
    boxes = shutil.copytree(data, tmp_path / "coco")
    path = boxes / "annotations" / "instances_train2017.json"
    d = json.loads(path.read_text())
    for a in d["annotations"]:
        del a["segmentation"]
    path.write_text(json.dumps(d))
    out = tmp_path / "run"
    rc = detect("--backbone", "scratch", "--output", out, "--data", boxes, *TINY, *RUN, "train.max_iter=1")
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert f"{path}: {len(d['annotations'])} of {len(d['annotations'])} usable annotations have no 'segmentation'" in err
    assert BOXES_ONLY in err and not (out / "metrics.json").exists()
    rc = detect("--backbone", "scratch", "--output", out, "--data", boxes, *TINY, *RUN, "train.max_iter=1",
                *BOXES_ONLY.split())
    assert rc == 0, capsys.readouterr().err
    assert {k.split("_")[0] for k in json.loads((out / "metrics.json").read_text())["metrics"]} == {"bbox"}


def test_wrong_width_checkpoint_stops_before_training(setup, capsys):
    root, data, _ = setup
    write_encoder(root / "wide.pth", width=96, heads=2)
    rc = detect("--backbone", root / "wide.pth", "--output", root / "wide", "--data", data, *TINY)
    assert rc == 2 and "model.backbone.net.embed_dim=96" in capsys.readouterr().err
    assert not (root / "wide" / "model_final.pth").exists()


@pytest.mark.slow
def test_two_processes_through_launch(setup):
    """detectron2's ``launch`` with two CPU processes (gloo): DDP training and distributed evaluation."""
    root, data, _ = setup
    out = root / "ddp"
    rc = detect("--backbone", root / "encoder.pth", "--output", out, "--data", data, "--num-gpus", "2", *TINY, *RUN,
                "train.max_iter=2")
    assert rc == 0
    assert "World size: 2" in (out / "log.txt").read_text()
    record = json.loads((out / "metrics.json").read_text())
    assert set(record["metrics"]) == METRICS and record["load_report"]["ok"]
