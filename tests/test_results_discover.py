"""Run discovery: our metrics.json first, engine logs as fall-backs, plans shown as missing,
malformed files named in warnings."""

import json
import shutil
from pathlib import Path

import pytest
from droppos.results.discover import discover

FIX = Path(__file__).parent / "fixtures" / "results"


@pytest.fixture(scope="module")
def suite():
    found = discover([FIX / "suite"])
    return {str(r.path.relative_to(FIX / "suite")): r for r in found.runs}, found.warnings


def test_every_run_folder_found_once(suite):
    runs, _ = suite
    assert len(runs) == 21  # 1 + 8 + 7 + 1 + 4 folders
    assert "droppos-tiny/det/d2" not in runs  # the detectron2 log inside a run folder belongs to it


def test_our_metrics_json_wins_over_engine_logs(suite):
    runs, _ = suite
    det = runs["droppos-tiny/det"]
    assert (det.status, det.source, det.metrics["bbox_APl"]) == ("finished", "metrics.json", 40.0)
    cls = runs["droppos-tiny/cls-finetune-s1"]
    assert cls.metrics["top1"] == 84.5 and cls.seed == 1 and cls.backbone_key == "droppos-vit_tiny_p4-e10"
    assert cls.identity == ("droppos", "vit_tiny_p4", 10)
    # a pretraining run's own log.jsonl (no accuracy) is not mistaken for a classification run
    assert runs["droppos-tiny/pretrain"].task == "pretrain"


def test_engine_logs_recovered_with_identity_from_run_json(suite):
    runs, _ = suite
    seg = runs["droppos-tiny/seg"]
    assert (seg.status, seg.task, seg.protocol, seg.backbone["method"]) == ("recovered", "segmentation", "upernet", "droppos")
    assert seg.metrics["mIoU"] == 25.61 and seg.source == "20250101_120000/vis_data/scalars.json"
    det = runs["mae-tiny/det"]
    assert det.status == "recovered" and det.metrics["segm_AP"] == 26.0 and det.progress == "iter 40/40"


def test_partial_missing_and_failed_runs_are_kept(suite):
    runs, warnings = suite
    cls = runs["scratch-tiny/cls-finetune-s0"]
    assert (cls.status, cls.metrics["top1"], cls.progress) == ("partial", 69.0, "epoch 3/10")
    assert runs["scratch-tiny/det"].status == "missing" and runs["scratch-tiny/det"].metrics == {}
    seg = runs["scratch-tiny/seg"]
    assert seg.status == "missing" and "malformed" in seg.note
    assert any("scratch-tiny/seg/metrics.json" in w and "malformed" in w for w in warnings)
    assert runs["scratch-tiny/probe-position"].status == "failed"


def test_malformed_files_are_named_and_skipped():
    found = discover([FIX / "broken"])
    assert found.runs == []
    text = "\n".join(found.warnings)
    for name in ("broken/not_json/metrics.json", "broken/lacks_keys/metrics.json", "broken/bad_log/log.jsonl:2"):
        assert name in text
    assert "lacks ['protocol', 'backbone']" in text


def test_logs_without_identity_use_the_folder_name():
    found = discover([FIX / "external"])
    runs = {r.path.name: r for r in found.runs}
    assert runs["vitdet_run"].backbone["method"] == "vitdet_run" and runs["vitdet_run"].status == "partial"
    assert runs["vitdet_run"].note == "completion unknown"
    assert runs["vitdet_unfinished"].status == "missing"
    assert runs["upernet_run"].task == "segmentation" and runs["upernet_run"].metrics["mIoU"] == 20.0
    assert sum("write run.json to name it" in w for w in found.warnings) == 3


def test_single_metrics_file_and_bad_paths(tmp_path):
    found = discover([FIX / "suite/mae-tiny/seg/metrics.json"])
    assert [r.metrics["mIoU"] for r in found.runs] == [24.0]
    with pytest.raises(FileNotFoundError, match="no_such_dir: no such run folder"):
        discover([tmp_path / "no_such_dir"])
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="expected a run folder or a metrics.json"):
        discover([tmp_path / "notes.txt"])


def test_engine_log_in_a_subfolder_of_another_task_is_its_own_run(tmp_path):
    shutil.copytree(FIX / "suite/droppos-tiny/pretrain", tmp_path / "pre")
    shutil.copytree(FIX / "external/vitdet_run", tmp_path / "pre/vitdet")
    runs = {r.path.name: r for r in discover([tmp_path]).runs}
    assert runs["pre"].task == "pretrain" and runs["vitdet"].task == "detection"


def test_bench_failed_and_blocked_plans_show_their_status_and_error(tmp_path):
    backbone = {"id": "droppos-vit_tiny_p8-e6", "method": "droppos", "arch": "vit_tiny_p8", "epochs": 6, "source": "x"}
    plans = {"failed": {"error": "Traceback (most recent call last):\nRuntimeError: CUDA out of memory"},
             "blocked": {"error": "needs droppos/pretrain, which failed"}, "running": {}}
    for status, extra in plans.items():
        (tmp_path / status).mkdir()
        (tmp_path / status / "run.json").write_text(json.dumps(
            {"task": "detection", "protocol": "mask_rcnn", "backbone": backbone, "dataset": "fmnist", "seed": 0,
             "status": status, **extra}))
    runs = {r.path.name: r for r in discover([tmp_path]).runs}
    assert runs["failed"].status == "failed" and runs["failed"].note == "RuntimeError: CUDA out of memory"
    assert runs["blocked"].status == "blocked" and "droppos/pretrain" in runs["blocked"].note
    assert runs["running"].status == "missing"  # no verdict yet: a run without numbers


def test_non_finite_metrics_are_left_out_with_one_warning_per_file(tmp_path):
    from droppos.runs.records import write_metrics

    backbone = {"id": "scratch-vit_tiny_p8", "method": "scratch", "arch": "vit_tiny_p8", "epochs": None, "source": "x"}
    write_metrics(tmp_path / "det", task="detection", protocol="mask_rcnn", backbone=backbone, dataset="fmnist",
                  metrics={"bbox_AP": 2.5, "bbox_APl": float("nan"), "segm_APl": float("nan")})
    found = discover([tmp_path])
    (run,) = found.runs
    assert run.metrics == {"bbox_AP": 2.5}
    (warning,) = found.warnings
    assert "det/metrics.json: bbox_APl, segm_APl are null" in warning
