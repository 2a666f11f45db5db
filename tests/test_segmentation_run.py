"""End to end through mmengine's real Runner: train a few iterations from converted weights,
evaluate with IoUMetric, write metrics.json, resume under weights_only, evaluate only."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("mmseg")
pytest.importorskip("droppos.backbones.targets")

from segmentation_helpers import DEPTH, HEADS, WIDTH, build_tiny_dataset, tiny_run_options  # noqa: E402

from droppos.cli import main  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from droppos.models.vit import VisionTransformer
    from droppos.utils.checkpoint import save_encoder

    tmp = tmp_path_factory.mktemp("seg")
    data = build_tiny_dataset(tmp / "ade20k_fmnist")
    enc = VisionTransformer(img_size=64, patch_size=16, embed_dim=WIDTH, depth=DEPTH, num_heads=HEADS)
    save_encoder(tmp / "encoder.pth", enc.state_dict(), {"arch": enc.arch_args(), "method": "droppos", "epochs": 2})
    return tmp, data, enc


def _segment(data, work, init, iters, *extra):
    return main(["segment", "--config", "upernet_vit_fmnist", "--backbone", str(init), "--data", str(data),
                 "--output", str(work), *extra, "--cfg-options", *tiny_run_options(iters)])


def test_train_evaluate_resume_and_eval_only(setup):
    from droppos.transfer.segmentation.safe_load import allow_mmengine_checkpoints

    tmp, data, enc = setup
    work = tmp / "run"
    assert _segment(data, work, tmp / "encoder.pth", 2) == 0

    rec = json.loads((work / "metrics.json").read_text())
    assert (rec["task"], rec["protocol"], rec["dataset"], rec["status"]) == ("segmentation", "upernet", "fmnist", "finished")
    assert rec["backbone"]["method"] == "droppos" and rec["backbone"]["epochs"] == 2
    assert set(rec["metrics"]) == {"mIoU", "mAcc", "aAcc"} and all(0 <= v <= 100 for v in rec["metrics"].values())
    assert len(rec["per_class"]) == 10 and set(rec["per_class"]["sneaker"]) == {"IoU", "Acc"}
    assert rec["iterations"] == 2 and rec["eval_only"] is False
    assert rec["load_report"]["ok"] and set(rec["load_report"]["recipe_init"].values()) == {"fixed index buffer"}
    assert any("-> mmseg:" in n and "weights mapped" in n for n in rec["load_report"]["notes"])
    dumped = (work / "upernet_vit_fmnist.py").read_text()  # the resolved config, as mmengine saved it
    assert f"embed_dims={WIDTH}" in dumped and "max_iters=2" in dumped

    # the converted weights were in the model: after two warm-up steps (lr <= 2.5e-6) they barely moved
    allow_mmengine_checkpoints()
    ckpt = torch.load(work / "iter_2.pth")  # weights_only=True
    sd, src = ckpt["state_dict"], enc.state_dict()
    for i in range(DEPTH):
        torch.testing.assert_close(sd[f"backbone.layers.{i}.attn.qkv.weight"], src[f"blocks.{i}.attn.qkv.weight"],
                                   atol=1e-4, rtol=0)
        torch.testing.assert_close(sd[f"backbone.layers.{i}.ffn.layers.1.weight"], src[f"blocks.{i}.mlp.fc2.weight"],
                                   atol=1e-4, rtol=0)
    torch.testing.assert_close(sd["backbone.patch_embed.projection.weight"], src["patch_embed.proj.weight"],
                               atol=1e-4, rtol=0)

    # the run folder is not silently reused: without --resume it is refused
    assert _segment(data, work, tmp / "encoder.pth", 3) == 2

    # resume to 3 iterations: continues from iter_2 instead of starting over
    assert _segment(data, work, tmp / "encoder.pth", 3, "--resume") == 0
    rec3 = json.loads((work / "metrics.json").read_text())
    assert rec3["iterations"] == 3 and rec3["backbone"] == rec["backbone"] and rec3["load_report"] == rec["load_report"]
    logs = "".join(p.read_text() for p in work.glob("*/*.log"))
    assert "resumed epoch: 0, iter: 2" in logs

    # evaluate the run's latest checkpoint only: same numbers as the end of training
    assert _segment(data, work, "scratch", 3, "--resume", "--eval-only") == 0
    rec_eval = json.loads((work / "metrics.json").read_text())
    assert rec_eval["eval_only"] is True and rec_eval["metrics"] == rec3["metrics"]
    assert rec_eval["backbone"] == rec["backbone"]  # still the run's backbone, whatever --init says now


def test_scratch_init_and_whole_segmentor_eval(setup):
    tmp, data, _ = setup
    work = tmp / "scratch"
    assert _segment(data, work, "scratch", 1) == 0
    rec = json.loads((work / "metrics.json").read_text())
    assert rec["backbone"]["method"] == "scratch" and rec["init"] == "scratch"
    # a finished run's checkpoint is a whole-segmentor --init for --eval-only elsewhere
    assert _segment(data, tmp / "eval", work / "iter_1.pth", 1, "--eval-only") == 0
    rec_eval = json.loads((tmp / "eval" / "metrics.json").read_text())
    assert rec_eval["metrics"] == rec["metrics"] and rec_eval["backbone"] == rec["backbone"]


def test_each_run_in_one_process_writes_its_scalars_in_its_own_folder(setup):
    """mmengine keeps visualizers process-wide by name: before each run had its own, a second run in the same
    process (two ``main`` calls) wrote its scalars.json under the first run's folder, and none under its own."""
    tmp, data, _ = setup
    for name in ("first", "second"):
        assert _segment(data, tmp / name, tmp / "encoder.pth", 1) == 0
    for name in ("first", "second"):
        scalars = list((tmp / name).glob("*/vis_data/scalars.json"))
        assert len(scalars) == 1, (name, scalars)
        assert any("mIoU" in json.loads(line) for line in scalars[0].read_text().splitlines())
