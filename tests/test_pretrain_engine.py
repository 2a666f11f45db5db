"""The pretraining engine end to end: resume equivalence, DDP on 2 CPU processes, CLI, bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from droppos.pretrain.config import PretrainConfig
from droppos.pretrain.engine import PretrainRun
from PIL import Image

from droppos.cli import main as cli
from droppos.errors import UserError


def make_imagefolder(root: Path, classes=2, per_class=8, size=16, seed=0, suffix="png") -> Path:
    rng = np.random.default_rng(seed)
    for c in range(classes):
        d = root / "train" / f"class{c}"
        d.mkdir(parents=True)
        for i in range(per_class):
            arr = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            Image.fromarray(arr).save(d / f"{i}.{suffix}")
    return root


def tiny_cfg(data, out, **kw) -> PretrainConfig:
    base = dict(data=str(data), output=str(out), model="tiny", patch_size=4, img_size=16, epochs=2, warmup_epochs=1,
                batch_size=4, blr=1e-3, decoder_dim=32, decoder_heads=2, workers=0, log_every=2)
    base.update(kw)
    return PretrainConfig(**base)


@pytest.fixture
def data(tmp_path):
    return make_imagefolder(tmp_path / "data")


@pytest.mark.parametrize("method,backend", [("droppos", "torch"), ("mae", "torch"), ("supervised", "torch"),
                                            ("droppos", "fast")])
def test_resume_after_kill_equals_uninterrupted(tmp_path, data, method, backend):
    if backend == "fast":  # JPEGs: through the window decoder where it is built
        data = make_imagefolder(tmp_path / "jpeg", size=24, suffix="jpg")
    full = PretrainRun(tiny_cfg(data, tmp_path / "a", method=method, data_backend=backend))
    full.train()
    killed = PretrainRun(tiny_cfg(data, tmp_path / "b", method=method, save_every_iters=1, stop_after=5,
                                  data_backend=backend))
    assert killed.train() == {"stopped_at_step": 5}
    assert not (tmp_path / "b" / "encoder.pth").exists()
    resumed = PretrainRun(tiny_cfg(data, tmp_path / "b", method=method, data_backend=backend), resume=True)
    assert (resumed.epoch, resumed.iter_in_epoch, resumed.step) == (1, 1, 5)
    resumed.train()
    a = torch.load(tmp_path / "a" / "encoder.pth", weights_only=True)
    b = torch.load(tmp_path / "b" / "encoder.pth", weights_only=True)
    assert a["meta"]["epochs_done"] == b["meta"]["epochs_done"] == 2
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    steps = [json.loads(ln)["step"] for ln in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert max(steps) == 8


def _log(path):
    """log.jsonl without its wall-clock fields."""
    return [{k: v for k, v in json.loads(ln).items() if k not in ("time", "img_per_s")}
            for ln in path.read_text().splitlines()]


def test_resumed_log_and_metrics_equal_the_uninterrupted_run(tmp_path, data):
    """A kill leaves log lines written after the last checkpoint: the resume cuts them, and the
    resumed epoch's statistics (metrics.json) cover the whole epoch."""
    PretrainRun(tiny_cfg(data, tmp_path / "a", log_every=1)).train()
    killed = PretrainRun(tiny_cfg(data, tmp_path / "b", log_every=1, stop_after=5))  # no --save-every-iters
    assert killed.train() == {"stopped_at_step": 5} and (tmp_path / "b" / "checkpoint.pth").is_file()
    with (tmp_path / "b" / "log.jsonl").open("a") as f:  # what the killed process wrote after its checkpoint
        f.write(json.dumps({"step": 6, "time": 0, "loss": 9.9}) + "\n")
    assert "stop_after" not in json.loads((tmp_path / "b" / "config.json").read_text())
    PretrainRun(tiny_cfg(data, tmp_path / "b", log_every=1), resume=True).train()
    assert _log(tmp_path / "a" / "log.jsonl") == _log(tmp_path / "b" / "log.jsonl")
    ma, mb = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in "ab")
    assert ma["metrics"] == mb["metrics"] and ma["steps"] == mb["steps"]


def test_outputs_are_self_describing(tmp_path, data):
    run = tmp_path / "r@pt1"  # a bench folder of one pretraining seed
    PretrainRun(tiny_cfg(data, run, epochs=1, warmup_epochs=0, name="r@pt1")).train()
    enc = torch.load(run / "encoder.pth", weights_only=True)
    assert enc["format"] == "droppos-bench/encoder/v1"
    assert enc["meta"]["method"] == "droppos" and enc["meta"]["arch"]["embed_dim"] == 192
    assert enc["meta"]["arch"]["patch_size"] == 4 and enc["meta"]["config"]["img_size"] == 16
    assert "pos_decoder.pred.weight" not in enc["state_dict"] and "blocks.11.mlp.fc2.weight" in enc["state_dict"]
    ck = torch.load(run / "checkpoint.pth", weights_only=True)
    assert {"meta", "model", "optimizer", "scaler", "progress", "rng"} <= set(ck)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["task"] == "pretrain" and 0.0 <= metrics["metrics"]["pos_acc"] <= 1.0
    assert metrics["backbone"]["id"] == "r@pt1"  # --name: its results row (unnamed, the folder gives 'r_pt1')
    assert (run / "config.yaml").is_file() and any((run / "tb").iterdir())


def test_learning_rate_schedule_and_groups(tmp_path, data):
    run = PretrainRun(tiny_cfg(data, tmp_path / "r", batch_size=8, accum_iter=2, blr=2.56e-2))
    assert run.lr == pytest.approx(2.56e-2 * 16 / 256)  # blr * effective batch / 256
    assert run.steps == 1 and run.total_steps == 2
    no_decay = run.optimizer.param_groups[0]
    assert no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in run.method.named_parameters()}
    assert {"encoder.cls_token", "mask_pos_token", "encoder.norm.bias"} <= {names[id(p)] for p in no_decay["params"]}
    assert "encoder.pos_embed" not in names.values() or not run.method.encoder.pos_embed.requires_grad


@pytest.mark.parametrize("backend", ["torch", "fast"])
def test_corrupt_images_are_replaced_and_counted(tmp_path, data, backend):
    (data / "train" / "class0" / "0.png").write_bytes(b"not a png")
    PretrainRun(tiny_cfg(data, tmp_path / "r", epochs=1, warmup_epochs=0, data_backend=backend)).train()
    lines = [json.loads(ln) for ln in (tmp_path / "r" / "log.jsonl").read_text().splitlines()]
    assert lines[-1]["corrupt_images_replaced"] == 1


def test_cli_end_to_end_and_refusals(tmp_path, data, capsys):
    out = tmp_path / "run"
    argv = ["pretrain", "--data", str(data), "--output", str(out), "--model", "tiny", "--patch-size", "4",
            "--img-size", "16", "--epochs", "1", "--warmup-epochs", "0", "--batch-size", "4", "--workers", "0",
            "--decoder-dim", "32", "--decoder-heads", "2", "--attn-guide", "false"]
    assert cli(argv) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["attn_guide"] is False and saved["epochs"] == 1
    assert cli(argv) == 2
    assert "already holds a run (metrics.json); pass --resume" in capsys.readouterr().err
    assert cli(["pretrain", "--output", str(out), "--resume"]) == 0
    assert "already finished" in capsys.readouterr().out
    assert cli(argv + ["--overwrite"]) == 0


@pytest.mark.parametrize("kw, msg", [
    (dict(img_size=18), "not divisible by --patch-size"),
    (dict(mask_ratio=1.0), "--mask-ratio must be a number > 0 and < 1, got 1.0"),
    (dict(pos_mask_ratio=0.0), "--pos-mask-ratio must be a number > 0 and < 1, got 0.0"),
    (dict(decoder_dim=30, decoder_heads=4), "--decoder-dim 30 is not divisible by --decoder-heads 4"),
    (dict(patch_size=0), "--patch-size must be an integer >= 1, got 0"),
    (dict(blr=float("nan")), "--blr must be a finite number > 0, got nan"),
    (dict(epochs="three"), "--epochs must be an integer >= 1, got .three."),
    (dict(sigma=-1.0), "--sigma must be a number >= 0, got -1.0"),
])
def test_bad_config(tmp_path, data, kw, msg):
    with pytest.raises(UserError, match=msg):
        PretrainRun(tiny_cfg(data, tmp_path / "r", **kw))


def test_bad_data(tmp_path):
    with pytest.raises(UserError, match="data folder not found"):
        PretrainRun(tiny_cfg(tmp_path / "missing", tmp_path / "r"))
    make_imagefolder(tmp_path / "d2")
    (tmp_path / "d2" / "train" / "empty").mkdir()
    with pytest.raises(UserError, match="without images"):
        PretrainRun(tiny_cfg(tmp_path / "d2", tmp_path / "r"))


def test_resume_with_other_architecture_is_refused(tmp_path, data):
    PretrainRun(tiny_cfg(data, tmp_path / "r", save_every_iters=1, stop_after=1)).train()
    with pytest.raises(UserError, match="checkpoint is droppos"):
        PretrainRun(tiny_cfg(data, tmp_path / "r", model="small"), resume=True)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "fast"])
def test_ddp_two_cpu_processes(tmp_path, data, backend):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29517",
           "-m", "droppos.cli", "pretrain", "--data", str(data), "--output", str(out), "--model", "tiny",
           "--patch-size", "4", "--img-size", "16", "--epochs", "2", "--warmup-epochs", "1", "--batch-size", "4",
           "--workers", "0", "--decoder-dim", "32", "--decoder-heads", "2", "--log-every", "1",
           "--data-backend", backend]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 4  # 16 images / 2 processes / batch 4 = 2 steps per epoch
    enc = torch.load(out / "encoder.pth", weights_only=True)
    assert enc["meta"]["epochs_done"] == 2


# ---------------------------------------------------------------------------------------- supervised
def test_supervised_pretraining_learns_keeps_its_head_aside_and_names_itself(tmp_path, capsys):
    """The DeiT recipe on labelled images: the encoder file holds the encoder only, method 'supervised'."""
    from imagefolders import make_colour_imagefolder

    from droppos.backbones.source import load_backbone

    data = make_colour_imagefolder(tmp_path / "imgs", n_train=16, n_val=2)
    out = tmp_path / "sup"
    argv = ["pretrain", "--method", "supervised", "--data", str(data), "--output", str(out), "--model", "tiny",
            "--patch-size", "4", "--img-size", "16", "--epochs", "6", "--warmup-epochs", "1", "--batch-size", "8",
            "--blr", "2e-3", "--mixup", "0", "--cutmix", "0", "--reprob", "0", "--workers", "0",
            "--log-every", "1"]
    assert cli(argv) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["drop_path"] == 0.1 and saved["warmup_epochs"] == 1.0  # DeiT's default kept, flags win
    log = [json.loads(ln) for ln in (out / "log.jsonl").read_text().splitlines()]
    epochs = [ln for ln in log if "epoch_loss" in ln]
    assert epochs[-1]["epoch_loss"] < epochs[0]["epoch_loss"] and epochs[-1]["epoch_top1"] > 50  # 3 colour classes
    enc = torch.load(out / "encoder.pth", weights_only=True)
    assert enc["meta"]["method"] == "supervised" and not any(k.startswith("head.") for k in enc["state_dict"])
    ck = torch.load(out / "checkpoint.pth", weights_only=True)
    assert {"head.weight", "head.bias"} <= set(ck["model"])  # the head is kept for resume, aside
    bb = load_backbone(out / "encoder.pth")
    assert bb.backbone["method"] == "supervised" and bb.backbone["epochs"] == 6
    # the pretraining run's own row is the row of every transfer run of its encoder: one name
    assert json.loads((out / "metrics.json").read_text())["backbone"]["id"] == bb.backbone["id"] == "sup"


def test_supervised_defaults_are_deits(tmp_path):
    from droppos.pretrain.config import METHOD_DEFAULTS, PretrainConfig

    cfg = PretrainConfig(**METHOD_DEFAULTS["supervised"], method="supervised")
    assert (cfg.blr, cfg.epochs, cfg.warmup_epochs, cfg.weight_decay, cfg.drop_path) == (2.5e-4, 300, 5.0, 0.05, 0.1)
    assert (cfg.smoothing, cfg.mixup, cfg.cutmix, cfg.aa, cfg.reprob) == (0.1, 0.8, 1.0, "rand-m9-mstd0.5-inc1", 0.25)
    assert cfg.min_scale == 0.08 and PretrainConfig().min_scale == 0.2  # DeiT's crops; the pretext recipe's
    from droppos.pretrain.data import supervised_transform

    rrc = supervised_transform(32, min_scale=0.08).transforms[0]
    assert tuple(rrc.scale) == (0.08, 1.0)


def test_supervised_pretraining_needs_labels(tmp_path, capsys):
    one = make_imagefolder(tmp_path / "one", classes=1)
    assert cli(["pretrain", "--method", "supervised", "--data", str(one), "--output", str(tmp_path / "o")]) == 2
    assert "supervised pretraining needs labelled images" in capsys.readouterr().err
    two = make_imagefolder(tmp_path / "two", classes=2)
    (two / "val" / "class0").mkdir(parents=True)
    assert cli(["pretrain", "--method", "supervised", "--data", str(two), "--output", str(tmp_path / "o2")]) == 2
    assert "train/ has 2 classes, val/ has 1" in capsys.readouterr().err
