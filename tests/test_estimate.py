"""The GPU-hour estimate's image count: what a run's schedule costs in forwards (``droppos.bench.estimate``).

A trained backbone costs 3 forwards an image (forward + backward), a frozen one 1: the frozen dense probes
(segment protocols ``linear``/``linear4``) are counted like the other frozen protocols, not like UperNet."""

from __future__ import annotations

import pytest

from droppos.bench import estimate as est
from droppos.bench.plan import build_plan
from droppos.bench.rehearse import RehearsalOptions, Row, _estimate, _model_key
from droppos.bench.spec import load_spec, shipped_specs


@pytest.mark.parametrize("kind,protocol,schedule,expected,frozen", [
    ("segment", "upernet", {"iters": 160_000}, 3 * 160_000 * 16, False),
    ("segment", "linear", {"iters": 40_000}, 40_000 * 16, True),
    ("segment", "linear4", {"iters": 40_000}, 40_000 * 16, True),
    ("detect", None, {"iters": 1000}, 3 * 1000 * 16, False),
    ("pretrain", None, {"epochs": 800}, 3 * 800 * 1_281_167, False),
    ("classify", "finetune", {"epochs": 100}, 3 * 100 * 1_281_167 + 100 * 50_000, False),
    ("classify", "linear", {"epochs": 90}, 90 * (1_281_167 + 50_000), True),
    ("classify", "knn", None, 1_281_167 + 50_000, True),
])
def test_schedule_images_counts_three_forwards_when_trained_and_one_when_frozen(kind, protocol, schedule, expected,
                                                                                 frozen):
    dataset = {"segment": "ade20k", "detect": "coco"}.get(kind, "imagenet")
    images, how = est.schedule_images(kind, protocol, schedule, dataset, 16, {})
    assert images == expected
    assert ("frozen" in how) == frozen, how


def test_the_rehearsal_estimate_reads_a_segment_runs_protocol_from_its_plan():
    """The smoke's dense probe and its UperNet run have the same schedule and batch: with the same FLOPs per
    image, the frozen probe is a third of the GPU-hours."""
    spec = load_spec(shipped_specs()["smoke"])
    runs = {r.id: r for r in build_plan(spec, "OUT")}
    rows = {}
    for rid in ("droppos/dense/seed0", "droppos/segmentation/seed0"):
        run = runs[rid]
        assert run.plan["schedule"] == {"iters": 200}
        row = Row(run=rid, kind=run.kind)
        _estimate(row, run, run, spec, RehearsalOptions(mfu=1.0), {(run.kind, _model_key(run)): 1e4})
        rows[rid] = row
    dense, upernet = rows["droppos/dense/seed0"], rows["droppos/segmentation/seed0"]
    assert dense.images.endswith("frozen") and not upernet.images.endswith("frozen")
    assert upernet.gpu_hours == pytest.approx(3 * dense.gpu_hours, rel=0.05)
