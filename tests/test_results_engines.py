"""Engine-log readers of the results aggregator, on logs recorded with the engines' own writers
(detectron2 JSONWriter, mmengine LocalVisBackend) and on classification JSONL logs."""

from pathlib import Path

import pytest

from droppos.results.engines import parse_classification, parse_detectron2, parse_mmengine, read_json_lines

FIX = Path(__file__).parent / "fixtures" / "results"


def test_detectron2_last_evaluation_with_nan_and_per_class_keys_left_out():
    log = parse_detectron2(FIX / "suite/mae-tiny/det/metrics.json")
    assert log.metrics["bbox_AP"] == 29.4 and log.metrics["segm_AP50"] == 52.2
    assert "bbox_APs" not in log.metrics  # NaN in the log: no value, not zero
    assert any("bbox_APs" in w for w in log.warnings)
    assert not any("tshirt" in k for k in log.metrics)  # per-category AP is not a table metric
    assert log.step == 40 and log.complete is True  # model_final.pth beside the log


def test_detectron2_training_lines_only_has_no_metrics():
    log = parse_detectron2(FIX / "external/vitdet_unfinished/metrics.json")
    assert log.metrics == {} and log.complete is False and log.step == 20


def test_detectron2_completion_from_expected_iterations():
    path = FIX / "external/vitdet_run/metrics.json"
    assert parse_detectron2(path).complete is None
    assert parse_detectron2(path, expected_iters=20).complete is True
    assert parse_detectron2(path, expected_iters=100).complete is False


def test_mmengine_scalars_last_validation_and_schedule_from_dumped_config():
    log = parse_mmengine(FIX / "suite/droppos-tiny/seg/20250101_120000/vis_data/scalars.json")
    assert log.metrics == {"mIoU": 25.61, "mAcc": 33.02, "aAcc": 74.25}
    assert (log.step, log.total, log.complete) == (100, 100, True)
    early = parse_mmengine(FIX / "external/upernet_run/20250102_080000/vis_data/scalars.json")
    assert early.metrics["mIoU"] == 20.0 and early.complete is False and early.progress == "iter 50/200"


def test_mmengine_prefixed_keys(tmp_path):
    p = tmp_path / "scalars.json"
    p.write_text('{"loss": 1.0, "step": 10}\n{"val/mIoU": 30.5, "val/aAcc": 80.0, "step": 10}\n')
    assert parse_mmengine(p).metrics == {"mIoU": 30.5, "aAcc": 80.0}


def test_classification_log_accepts_top1_acc1_test_acc1(tmp_path):
    mae_style = parse_classification(FIX / "suite/scratch-tiny/cls-finetune-s0/log.jsonl", expected_epochs=10)
    assert mae_style.metrics == {"top1": 69.0, "top5": 97.0}
    assert (mae_style.step, mae_style.complete) == (3, False)  # epochs 0..2 done of 10
    p = tmp_path / "log.jsonl"
    p.write_text('{"epoch": 1, "acc1": 50.0}\n{"epoch": 2, "acc1": 55.5, "acc5": 90.0}\n')
    log = parse_classification(p, expected_epochs=2)
    assert log.metrics == {"top1": 55.5, "top5": 90.0} and log.complete is True


def test_classification_log_without_accuracy_is_rejected():
    with pytest.raises(ValueError, match="pretrain/log.jsonl: no top1/val_top1/acc1/test_acc1"):
        parse_classification(FIX / "suite/droppos-tiny/pretrain/log.jsonl")


def test_json_lines_truncated_last_line_is_warned_bad_middle_line_raises(tmp_path):
    p = tmp_path / "metrics.json"
    p.write_text('{"iteration": 0, "loss": 1}\n{"iteration": 1, "lo')
    lines, warnings = read_json_lines(p)
    assert len(lines) == 1 and "truncated last line" in warnings[0] and str(p) in warnings[0]
    with pytest.raises(ValueError, match=r"bad_log/log.jsonl:2: not a JSON line"):
        read_json_lines(FIX / "broken/bad_log/log.jsonl")


def test_wrong_engine_format_is_named(tmp_path):
    p = tmp_path / "metrics.json"
    p.write_text('{"loss": 1.0}\n')
    with pytest.raises(ValueError, match="not a detectron2 metrics file"):
        parse_detectron2(p)
    with pytest.raises(ValueError, match="not an mmengine scalars file"):
        parse_mmengine(p)


def _dumped_run(folder: Path, config: str, evals: int) -> Path:
    """An mmengine work dir as the Runner leaves it: ``<timestamp>/vis_data/{config.py,scalars.json}``."""
    vis = folder / "20260101_000000" / "vis_data"
    vis.mkdir(parents=True)
    (vis / "config.py").write_text(config)
    (vis / "scalars.json").write_text(f'{{"loss": 1.0, "iter": {evals}, "step": {evals}}}\n'
                                      f'{{"mIoU": 7.5, "mAcc": 9.0, "aAcc": 60.0, "step": {evals}}}\n')
    return vis / "scalars.json"


# the head of a dumped config of the shipped fmnist segment configs: a top-level max_iters (the file's own
# default, which the spec's train_cfg.max_iters override leaves as it was) and the loop's real schedule
DENSE_CONFIG = ("max_iters = 400\nprotocol = 'linear'\nfrozen_backbone = True\n"
                "train_cfg = dict(\n    _scope_='mmseg',\n    max_iters=200,\n    type='IterBasedTrainLoop',\n"
                "    val_interval=200)\n")


def test_mmengine_schedule_is_the_train_loops_and_the_protocol_the_configs(tmp_path):
    log = parse_mmengine(_dumped_run(tmp_path / "dense", DENSE_CONFIG, 200))
    assert (log.step, log.total, log.complete, log.protocol) == (200, 200, True, "linear")
    upernet = parse_mmengine(_dumped_run(tmp_path / "upernet", DENSE_CONFIG.replace("protocol = 'linear'\n", ""), 100))
    assert (upernet.total, upernet.complete, upernet.protocol) == (200, False, None)


def test_a_killed_dense_probe_without_run_json_is_its_protocols_column(tmp_path):
    """``droppos segment --config linear_vit_fmnist`` killed after its evaluation, before metrics.json, outside
    the bench (no run.json): its recovered mIoU goes to the dense probe's column, not UperNet's."""
    from droppos.results.discover import discover

    _dumped_run(tmp_path / "dense", DENSE_CONFIG, 200)
    runs = discover([tmp_path]).runs
    assert [(r.task, r.protocol, r.status, r.metrics["mIoU"]) for r in runs] == [("segmentation", "linear", "recovered", 7.5)]
