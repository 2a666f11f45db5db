"""The rehearsal's parts (droppos.bench.{guard,synthetic,rehearse}) and, behind the ``rehearsal`` marker,
``droppos bench paper --rehearse`` on the ViT-B backbones of each kind of source."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from droppos.bench.guard import run_guarded, tree_rss
from droppos.errors import UserError

# a parent that starts a child in a session of its own (as torchrun starts its workers); the child holds
# ~400 MiB of touched memory, the parent little: only counting the whole tree passes a budget of 0.25 GiB
PARENT = textwrap.dedent("""
    import subprocess, sys, time
    child = "import time; b = bytearray(400 * 2**20); open(sys.argv[1], 'w').write('ready'); time.sleep(60)"
    subprocess.Popen([sys.executable, "-c", "import sys; " + child, sys.argv[1]], start_new_session=True)
    time.sleep(60)
""")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def test_the_budget_counts_every_process_of_the_tree_and_kills_them_all(tmp_path):
    g = run_guarded([sys.executable, "-c", PARENT, str(tmp_path / "ready")], dict(os.environ), tmp_path / "log",
                    budget_gib=0.25, timeout_s=60)
    assert g.over_budget and not g.timed_out and g.returncode == -9
    parent, child = sorted(g.per_process_gib.values())
    assert parent < 0.1 < child and g.peak_total_gib > 0.25  # the budget was passed by the child, not the parent
    assert len(g.per_process_gib) == 2
    time.sleep(0.5)
    assert not any(_alive(pid) for pid in g.per_process_gib), "a process of the tree outlived the budget kill"


def test_stop_when_ends_the_run_with_sigkill_and_a_timeout_is_reported(tmp_path):
    flag = tmp_path / "checkpoint.pth"
    script = f"import time, pathlib; time.sleep(0.3); pathlib.Path({str(flag)!r}).write_text('x'); time.sleep(60)"
    t0 = time.monotonic()
    g = run_guarded([sys.executable, "-c", script], dict(os.environ), tmp_path / "log", budget_gib=8,
                    stop_when=flag.exists, timeout_s=60)
    assert g.stopped and not g.over_budget and g.returncode == -9 and time.monotonic() - t0 < 20
    g = run_guarded([sys.executable, "-c", "import time; time.sleep(60)"], dict(os.environ), tmp_path / "log",
                    budget_gib=8, timeout_s=1)
    assert g.timed_out and not g.stopped and g.returncode == -9
    g = run_guarded([sys.executable, "-c", "print('hello'); raise SystemExit(3)"], dict(os.environ), tmp_path / "log",
                    budget_gib=8)
    assert g.returncode == 3 and not (g.stopped or g.timed_out or g.over_budget)
    assert "hello" in (tmp_path / "log").read_text()


@pytest.mark.parametrize("name,expected", [
    ("mae_pretrain_vit_base.pth", "vit_base_patch16_224"), ("mae_pretrain_vit_large.pth", "vit_large_patch16_224"),
    ("droppos_vit_l16.pth", "vit_large_patch16_224"), ("dino_vitbase16_pretrain.pth", "vit_base_patch16_224"),
    ("deit_small_patch16_224.safetensors", "vit_small_patch16_224"), ("vit-b16.pth", "vit_base_patch16_224"),
])
def test_the_stand_in_size_comes_from_the_file_name(name, expected):
    from droppos.bench.synthetic import timm_name

    assert timm_name(f"checkpoints/{name}", None) == expected
    assert timm_name(f"checkpoints/{name}", "vit_small_patch16_224") == "vit_small_patch16_224"


def test_a_stand_in_whose_size_no_name_says_is_one_line():
    from droppos.bench.synthetic import timm_name

    with pytest.raises(UserError, match="arch: vit_base_patch16_224"):
        timm_name("checkpoints/my_weights.pth", None)


@pytest.mark.parametrize("fmt,file", [("mae", "m_vit_tiny.pth"), ("deit", "d_vit_tiny.pth"),
                                      ("droppos", "p_vit_tiny.pth"), ("timm", "t_vit_tiny.safetensors"),
                                      ("encoder", "e_vit_tiny.pth")])
def test_stand_ins_are_read_by_the_readers_as_the_timm_model_they_were_made_of(tmp_path, fmt, file):
    """The rehearsal exercises the conversion path only if its files are the releases' layouts: each is read
    (layout recognised from the content, not forced) into the encoder of the timm model of the same seed."""
    import timm

    from droppos.bench.synthetic import write_checkpoint
    from droppos.backbones.source import load_backbone

    path = tmp_path / file
    assert write_checkpoint(path, fmt, seed=3) == "vit_tiny_patch16_224"
    torch.manual_seed(3)
    ref = timm.create_model("vit_tiny_patch16_224", pretrained=False).eval()
    bb = load_backbone(path)
    # MAE's encoder-only release is DeiT's {'model': sd} wrapper: the readers call that layout 'deit'
    assert bb.meta["format"] == {"mae": "deit"}.get(fmt, fmt)
    enc = bb.encoder().eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(enc.forward_features(x), ref.forward_features(x), rtol=0, atol=1e-5)


def test_a_layout_the_rehearsal_cannot_write_is_one_line(tmp_path):
    from droppos.bench.synthetic import write_checkpoint

    with pytest.raises(UserError, match="cannot write a stand-in in the 'dinov2' layout"):
        write_checkpoint(tmp_path / "x_vit_base.pth", "dinov2")


def test_the_memory_extrapolation_is_quadratic_in_the_tokens():
    from droppos.bench.rehearse import _quadratic

    patch = 16
    true = lambda px: 0.5 + 2e-3 * (px / patch) ** 2 + 3e-7 * (px / patch) ** 4  # noqa: E731
    f = _quadratic({256: true(256), 512: true(512), 768: true(768)}, patch)
    assert f(1024) == pytest.approx(true(1024), rel=1e-9)
    assert f(1024) > 2 * f(768)  # attention makes it grow faster than the pixels


@pytest.mark.detectron2
def test_detection_size_options_name_keys_the_config_has_and_set_every_input_size():
    from detectron2.config import LazyConfig, instantiate

    from droppos.bench.rehearse import full_size, size_options
    from droppos.transfer.detection.config import resolve_config_file

    name = "mask_rcnn_vitdet_b_100ep"
    assert full_size("detect", name) == (1024, 16)
    cfg = LazyConfig.load(str(resolve_config_file(name)))
    opts = size_options("detect", name, 320)
    cfg = LazyConfig.apply_overrides(cfg, [f"{k}={v}" for k, v in opts.items()])
    assert cfg.model.backbone.square_pad == 320 and cfg.model.backbone.net.img_size == 320
    assert {cfg.dataloader[split].mapper.augmentations.image_size for split in ("train", "test")} == {320}
    cfg.model.roi_heads.num_classes = 2
    backbone = instantiate(cfg.model.backbone)
    out = backbone(torch.zeros(1, 3, 320, 320))
    assert out["p2"].shape[-1] == 320 // 4


@pytest.mark.mmseg
def test_segmentation_size_options_name_keys_the_config_has_and_set_every_input_size():
    from droppos.bench.rehearse import full_size, size_options
    from droppos.transfer.segmentation.config import load_config

    name = "upernet_mae_b16_ade20k_512"
    assert full_size("segment", name) == (512, 16)
    cfg = load_config(name)
    opts = size_options("segment", name, 256)
    before = set(_flat(cfg.to_dict()))
    cfg.merge_from_dict(opts)
    assert set(_flat(cfg.to_dict())) == before, "an option added a key the config did not have"
    assert tuple(cfg.crop_size) == (256, 256) and tuple(cfg.model.backbone.img_size) == (256, 256)
    assert tuple(cfg.model.data_preprocessor.size) == (256, 256)
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        for step in cfg[loader].dataset.pipeline:
            if step["type"] == "RandomCrop":
                assert tuple(step["crop_size"]) == (256, 256)
            if step["type"] in ("RandomResize", "Resize"):
                assert tuple(step["scale"]) == (1024, 256)


def _flat(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _flat(v, f"{prefix}{k}.")
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            for i, x in enumerate(v):
                yield from _flat(x, f"{prefix}{k}.{i}.")
        else:
            yield f"{prefix}{k}"


def test_the_rehearsed_spec_changes_the_schedule_data_and_missing_checkpoints_only(tmp_path):
    from droppos.bench.rehearse import RehearsalOptions, rehearsal_spec
    from droppos.bench.spec import load_spec, resolve_spec_path

    spec = load_spec(resolve_spec_path("paper"))
    r, notes = rehearsal_spec(spec, tmp_path, RehearsalOptions())
    assert {d.path for d in r.data.values()} == {str(tmp_path / "data" / n) for n in spec.data}
    mae = next(b for b in r.backbones if b.name == "mae")
    assert Path(mae.source.backbone) == tmp_path / "checkpoints" / "mae_pretrain_vit_base.pth"
    assert Path(mae.source.backbone).is_file() and any(n.startswith("mae:") for n in notes)
    droppos = next(b for b in r.backbones if b.name == "droppos")
    orig = next(b for b in spec.backbones if b.name == "droppos")
    assert droppos.pretrain["epochs"] == 1 and droppos.pretrain["batch_size"] == 2
    changed = {k for k in orig.pretrain if orig.pretrain[k] != droppos.pretrain[k]}
    assert changed <= {"epochs", "warmup_epochs", "batch_size", "accum_iter", "save_every_iters", "workers"}
    assert droppos.pretrain["model"] == "base" and droppos.pretrain["method"] == "droppos"


def test_detection_iterations_are_timed_from_its_log_between_checkpoints():
    from droppos.bench.rehearse import _detectron2_iterations

    log = """[12/31 23:59:50] d2.engine.train_loop INFO: Starting training from iteration 0
[12/31 23:59:58] d2.utils.events INFO:  eta: 0:00:01  iter: 0  total_loss: 3.7
[01/01 00:00:05] fvcore.common.checkpoint INFO: Saving checkpoint to /r/model_0000000.pth
[01/01 00:00:12] fvcore.common.checkpoint INFO: Saving checkpoint to /r/model_0000001.pth
[01/01 00:00:13] fvcore.common.checkpoint INFO: Saving checkpoint to /r/model_final.pth
[01/01 00:01:00] d2.engine.train_loop INFO: Starting training from iteration 2
[01/01 00:01:09] fvcore.common.checkpoint INFO: Saving checkpoint to /r/model_0000002.pth
"""
    assert _detectron2_iterations(log) == [15.0, 7.0, 9.0]  # across midnight (and a month's end); not model_final


def test_a_rehearsed_run_is_kept_only_for_the_same_command(tmp_path):
    import json
    from dataclasses import asdict, replace

    from droppos.bench.plan import build_plan
    from droppos.bench.rehearse import Row, _cached
    from droppos.bench.spec import load_spec, resolve_spec_path

    run = next(r for r in build_plan(load_spec(resolve_spec_path("paper")), tmp_path) if r.id == "mae/linear/seed0")
    run.folder.mkdir(parents=True)
    assert _cached(run) is None
    row = Row(run.id, "classify linear", result="rehearsed", s_per_iter=1.5)
    (run.folder / "rehearsal.json").write_text(json.dumps({"command": list(run.args), "row": asdict(row)}))
    assert _cached(run) is None  # not finished: rehearsed again
    (run.folder / "metrics.json").write_text(json.dumps({"status": "finished", "metrics": {"top1": 1.0}}))
    assert _cached(run) == row
    other = replace(run, args=[*run.args, "--blr", "0.2"])
    with pytest.raises(UserError, match="holds a rehearsal of another command for mae/linear/seed0"):
        _cached(other)
    (run.folder / "rehearsal.json").write_text('{"command": [')  # cut short
    assert _cached(run) is None


@pytest.mark.rehearsal
def test_bench_paper_rehearses_the_droppos_vit_b_runs(tmp_path):
    """The DropPos ViT-B/16 pretraining of `paper` and its seven downstream runs (fine-tuning, linear, k-NN, both
    probes, ViTDet at 1024 px, UperNet at 512 px), each through its real launcher with two processes at its real
    size, killed after its first checkpoint and resumed; run again, nothing is rehearsed twice. (The other ViT-B
    rows run the same commands from other files; their readers are checked on the stand-ins above. All 29 ViT-B
    runs took 41 min of runs here: docs/rehearsal_paper.md.)"""
    import json

    out = tmp_path / "rehearse"
    cmd = [sys.executable, "-m", "droppos.cli", "bench", "paper", "--rehearse", "--out", str(out), "--only", "droppos/*"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=4800)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-3000:]
    rows = {r["run"]: r for r in json.loads((out / "rehearsal.json").read_text())["rows"]}
    assert len(rows) == 8 and all(r["result"] == "rehearsed" for r in rows.values()), rows
    for name in ("pretrain", "finetune/seed0", "linear/seed0", "detection/seed0", "segmentation/seed0"):
        r = rows[f"droppos/{name}"]
        assert r["resume"].startswith("killed (SIGKILL)") and r["processes"] == 2 and r["gpu_hours"] > 0, r
    assert rows["droppos/pretrain"]["gmac"] == pytest.approx(22.3, rel=0.05)  # DropPos ViT-B/16 with its decoder
    assert rows["droppos/segmentation/seed0"]["input"] == "512"
    assert (out / "droppos" / "pretrain" / "encoder.pth").is_file()  # what the downstream runs read stays
    left = [p.relative_to(out) for p in out.rglob("*.pth") if p.match("checkpoint.pth") or p.match("model_*.pth")
            or p.match("iter_*.pth") or p.parent.name == "init"]
    assert not left, left  # every run's resume state is gone, and the memory probes' weights
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0 and res.stdout.count("rehearsed before") == 8, res.stdout[-3000:]


def test_the_memory_probe_overrides_come_after_the_runs_own_options():
    """mmengine's --cfg-options: the later of two equal keys wins; a probe of one iteration must not run two."""
    from droppos.bench.rehearse import _append_cfg_options
    from droppos.transfer.segmentation.config import parse_cfg_options

    args = ["segment", "--cfg-options", "train_cfg.max_iters=2", "randomness.seed=0", "--resume"]
    new = _append_cfg_options(args, ["train_cfg.max_iters=1"])
    assert new[-1] == "--resume"
    assert parse_cfg_options(new[new.index("--cfg-options") + 1:-1])["train_cfg.max_iters"] == 1


def test_a_rehearsed_runs_resume_state_is_deleted_and_its_records_kept(tmp_path):
    from droppos.bench.rehearse import drop_training_state

    run = tmp_path / "run"
    (run / "init").mkdir(parents=True)
    kept = ["metrics.json", "log.txt", "encoder.pth", "classifier.pth", "last_checkpoint", "init/config.yaml"]
    gone = ["checkpoint.pth", "model_0000001.pth", "model_final.pth", "iter_2.pth", "init/backbone.pth"]
    for i, name in enumerate(kept + gone):
        (run / name).write_bytes(b"x" * (i + 1))
    assert drop_training_state(run) == sum(i + 1 for i in range(len(kept), len(kept) + len(gone)))
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file()) == sorted(kept)
