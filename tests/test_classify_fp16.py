"""``--precision fp16`` in classification: fp16 autocast with a gradient scaler, as the official MAE and DropPos
fine-tuning and linear probing run (``torch.cuda.amp.autocast()`` + ``NativeScaler``), exercised on the CPU.

The scaler must change nothing but the loss's scale: one step with it equals one step without it (the same fp16
autocast forward), a step whose scaled gradients overflow is skipped and the scale halved, clipping sees the
true gradients, and the scaler's state is part of the checkpoint (a resumed run equals the straight one)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
from imagefolders import make_colour_imagefolder, write_tiny_encoder

from droppos.cli import main
from droppos.transfer.classification.loop import train_one_epoch

SCHEDULE = {"lr": 0.1, "min_lr": 0.1, "warmup_steps": 0, "total_steps": 10}


def _one_step(scaler, clip_grad=0.0, scale=None):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    batch = [(torch.randn(4, 8, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1, 2, 0]))]
    if scale is not None:
        scaler = torch.amp.GradScaler("cpu", init_scale=scale)
    train_one_epoch(model, batch, opt, nn.CrossEntropyLoss(), torch.device("cpu"), epoch=0, iters=1,
                    schedule=SCHEDULE, amp=torch.float16, clip_grad=clip_grad, scaler=scaler)
    return model, scaler


@pytest.mark.parametrize("clip_grad", [0.0, 0.05])
def test_the_scaler_changes_nothing_but_the_scale(clip_grad):
    plain, _ = _one_step(None, clip_grad)
    scaled, scaler = _one_step(torch.amp.GradScaler("cpu", init_scale=2.0 ** 16), clip_grad)
    for a, b in zip(plain.parameters(), scaled.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)  # unscaled before clipping and stepping
    assert scaler.get_scale() == 2.0 ** 16


def test_an_overflowing_step_is_skipped_and_the_scale_halved():
    torch.manual_seed(0)
    before = [p.clone() for p in nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 3)).parameters()]
    model, scaler = _one_step(None, scale=1e38)  # the scaled fp32 gradients overflow to inf
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert scaler.get_scale() == pytest.approx(0.5e38)


@pytest.mark.slow
def test_fp16_fine_tuning_saves_its_scaler_and_resumes_with_it(tmp_path, capsys):
    data = make_colour_imagefolder(tmp_path / "imgs", n_train=8, n_val=4, size=16, classes=3)
    enc = write_tiny_encoder(tmp_path / "encoder.pth", method="droppos", epochs=1)
    out = tmp_path / "ft"
    common = ["classify", "finetune", "--backbone", str(enc), "--data", str(data), "--output", str(out), "--workers",
              "0", "--batch-size", "8", "--warmup-epochs", "1", "--precision", "fp16"]
    assert main([*common, "--epochs", "1"]) == 0
    path = out / "checkpoint.pth"
    ck = torch.load(path, weights_only=True)
    assert ck["scaler"]["scale"] == 2.0 ** 16 and json.loads((out / "metrics.json").read_text())["config"]["precision"] == "fp16"
    (out / "metrics.json").unlink()  # as if killed after the epoch-1 checkpoint
    ck["scaler"]["scale"] = 1024.0  # a scale the run can only have from the checkpoint (growth waits 2000 steps)
    torch.save(ck, path)
    assert main([*common, "--epochs", "2", "--resume"]) == 0
    assert torch.load(path, weights_only=True)["scaler"]["scale"] == 1024.0
    # a checkpoint without the scaler's state cannot continue an fp16 run exactly: refused in one line
    (out / "metrics.json").unlink()
    ck = torch.load(path, weights_only=True)
    del ck["scaler"]
    torch.save(ck, path)
    capsys.readouterr()
    assert main([*common, "--epochs", "3", "--resume"]) == 2
    assert "written without fp16's gradient scaler" in capsys.readouterr().err
