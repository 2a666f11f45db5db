"""results/aggregate.py at the edges its mutation run found untested: a cell's status and spread when few or no
values are counted, which duplicate run is kept (status, then the newest folder, an unreadable folder the
oldest), runs without a seed, two records of one backbone when one lacks the source hash, the cost's input size,
and a task/protocol with no headline metrics."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from droppos.results.aggregate import Cell, Column, Row, aggregate
from droppos.results.records import RunResult

COL = Column("classification", "finetune", "fmnist", "top1")
BACKBONE = {"id": "a", "method": "droppos", "arch": "vit_tiny_p4", "epochs": 10}


def run(path, seed=0, top1=50.0, status="finished", **kw) -> RunResult:
    return RunResult(path=Path(path), task=kw.pop("task", "classification"), protocol=kw.pop("protocol", "finetune"),
                     backbone=kw.pop("backbone", BACKBONE), dataset="fmnist", seed=seed,
                     metrics={} if top1 is None else {"top1": top1}, status=status, **kw)


def test_a_cell_with_fewer_than_two_values_has_no_spread():
    assert Cell().std is None and Cell().mean is None and Cell(values=[3.0]).std is None
    assert Cell(values=[1.0, 3.0]).std == pytest.approx(2 ** 0.5)


def test_a_cell_is_recovered_only_when_every_value_is():
    assert Cell(values=[1.0, 2.0], recovered=1).status == "finished"
    assert Cell(values=[1.0, 2.0], recovered=2).status == "recovered"
    assert Cell(values=[1.0] * 300, recovered=int("300")).status == "recovered"  # counts compared by value


def test_a_cell_without_values_says_why():
    assert Cell(other={"failed": 1}).status == "failed"
    assert Cell(other={"killed": 2, "failed": 1}).status == "failed"  # the first by name, whatever the counts
    assert Cell(partial=[(1.0, "epoch 1/2")], other={"failed": 1}).status == "partial"
    assert Cell().status == "missing"


def test_a_partial_status_read_from_a_file_is_partial():
    status = "".join(["parti", "al"])  # a string built at run time, as json.loads gives it (not interned)
    table = aggregate([run("/r/a", status=status)])
    assert table.rows[0].cells[COL].partial == [(50.0, "")]


def _touch(path: Path, mtime: float) -> Path:
    path.mkdir(parents=True)
    os.utime(path, (mtime, mtime))
    return path


def test_duplicates_keep_the_most_finished_then_the_newest_and_say_so(tmp_path):
    old, new = _touch(tmp_path / "old", 1_000), _touch(tmp_path / "new", 2_000)
    table = aggregate([run(old, seed=3, top1=1.0), run(new, seed=3, top1=2.0)])
    assert table.rows[0].cells[COL].values == [2.0]  # both finished: the newest folder
    assert table.warnings == [f"duplicate run for a classification/finetune/fmnist seed 3: using {new}, ignoring {old}"]
    table = aggregate([run(old, seed=3, top1=1.0), run(new, seed=3, top1=2.0, status="recovered")])
    assert table.rows[0].cells[COL].values == [1.0]  # finished beats a newer recovered run


def test_an_unreadable_folder_counts_as_the_oldest(tmp_path):
    early = _touch(tmp_path / "early", 0.5)  # older than anything but an unreadable folder
    table = aggregate([run(tmp_path / "gone", top1=1.0), run(early, top1=2.0)])
    assert table.rows[0].cells[COL].values == [2.0]


def test_runs_without_a_seed_are_all_kept_beside_the_others():
    table = aggregate([run("/r/x", seed=None, top1=1.0), run("/r/y", seed=0, top1=2.0),
                       run("/r/z", seed=None, top1=3.0)])
    assert sorted(table.rows[0].cells[COL].values) == [1.0, 2.0, 3.0] and not table.warnings


def test_one_backbone_whose_second_record_lacks_the_hash_is_one_row():
    table = aggregate([run("/r/a", seed=0, backbone={**BACKBONE, "sha256": "ab"}), run("/r/b", seed=1)])
    assert [r.key for r in table.rows] == ["a"] and table.rows[0].cells[COL].n == 2


@pytest.mark.parametrize("size, label", [([32, 64], "cls@32x64"), ([64, 32], "cls@64x32"), ([48, 48], "cls@48")])
def test_the_cost_names_its_input_size(size, label):
    row = Row("a", BACKBONE)
    row.add_cost(run("/r/a", cost={"GFLOPs": 1.5, "input": size}))
    assert row.cost["GFLOPs"] == {label: 1.5}


def test_a_protocol_without_headline_metrics_shows_all_of_them():
    table = aggregate([run("/r/p", task="probe", protocol="jigsaw")])  # not in HEADLINE: every metric
    assert [c.metric for c in table.columns] == ["top1"]


def _cell(runs, **kw):
    return aggregate(runs, **kw).rows[0].cells[COL]


def test_statuses_outside_the_counted_ones_are_counted_by_name():
    cell = _cell([run("/r/1", seed=1, status="failed"), run("/r/2", seed=2, status="failed"),
                  run("/r/3", seed=3, status="stopped")])  # failed runs that wrote a value: not counted
    assert cell.other == {"failed": 2, "stopped": 1} and cell.values == [] and cell.partial == []


def test_a_partial_run_without_a_value_is_missing():
    cell = _cell([run("/r/1", status="partial", top1=None)])
    assert cell.missing == 1 and cell.partial == []


def test_a_recovered_status_read_from_a_file_counts_as_recovered():
    cell = _cell([run("/r/1", status="".join(["recov", "ered"])), run("/r/2", seed=1)])
    assert cell.recovered == 1 and cell.status == "finished"


@pytest.mark.parametrize("kept, other", [("recovered", "partial"), ("partial", "failed")])
def test_a_duplicate_with_the_better_status_wins_over_a_newer_folder(tmp_path, kept, other):
    old, new = _touch(tmp_path / "old", 1_000), _touch(tmp_path / "new", 2_000)
    table = aggregate([run(old, top1=1.0, status=kept), run(new, top1=2.0, status=other)])
    assert f"using {old}, ignoring {new}" in table.warnings[0]


def test_builds_of_a_data_set_split_into_columns_only_when_they_differ():
    one = [run("/r/1", data_id="abcdef12"), run("/r/2", seed=1, data_id="abcdef12"), run("/r/3", seed=2)]
    table = aggregate(one)
    assert [c.dataset for c in table.columns] == ["fmnist"] and not table.warnings
    table = aggregate(one[:2])  # one build, and no run without a build id
    assert [c.dataset for c in table.columns] == ["fmnist"] and not table.warnings
    two = [run("/r/1", data_id="abcdef12"), run("/r/2", seed=1, data_id="99999999"), run("/r/3", seed=2)]
    table = aggregate(two)
    assert sorted(c.dataset for c in table.columns) == ["fmnist", "fmnist@999999", "fmnist@abcdef"]
    assert table.warnings == ["data set 'fmnist' names 2 different builds (99999999, abcdef12): shown as separate columns"]


@pytest.mark.parametrize("second", [{"epochs": 5}, {"arch": "vit_small_p4"}, {"sha256": "aa"}])
def test_one_name_for_two_backbones_is_an_error_whichever_comes_first(second):
    from droppos.errors import UserError

    first = {**BACKBONE, "epochs": 10, "sha256": "bb"}
    with pytest.raises(UserError, match="backbone name 'a' is given to two different backbones"):
        aggregate([run("/r/1", backbone=first), run("/r/2", seed=1, backbone={**first, **second})])


def test_equal_hashes_are_one_backbone():
    first = {**BACKBONE, "sha256": "".join(["ab", "cd"])}
    table = aggregate([run("/r/1", backbone=first), run("/r/2", seed=1, backbone={**BACKBONE, "sha256": "abcd"})])
    assert len(table.rows) == 1


def test_costs_without_an_input_size_or_a_count_add_no_flops_and_large_inputs_are_named():
    row = Row("a", BACKBONE)
    row.add_cost(run("/r/1", cost={"GFLOPs": 1.5}))
    row.add_cost(run("/r/2", cost={"GFLOPs": None, "input": [32, 32]}))
    assert "GFLOPs" not in row.cost
    row.add_cost(run("/r/3", cost={"GFLOPs": 2.0, "input": [int("300"), int("300")], "peak_rss_gib": 0.5}))
    assert row.cost["GFLOPs"] == {"cls@300": 2.0} and row.cost["peak_rss_gib"] == 0.5


def test_rows_sort_by_method_then_pretraining_epochs_and_columns_by_task():
    runs = [run("/r/1", backbone={**BACKBONE, "id": "a", "epochs": 800}),
            run("/r/2", backbone={**BACKBONE, "id": "z", "epochs": 100}),
            run("/r/3", backbone={**BACKBONE, "id": "d", "epochs": None}),
            run("/r/4", backbone={**BACKBONE, "id": "c", "epochs": 1})]
    assert [r.key for r in aggregate(runs).rows] == ["d", "c", "z", "a"]  # no epochs first, then by epochs
    cols = aggregate([run("/r/5", task="probe", protocol="position"), run("/r/6", task="segmentation",
                                                                          protocol="upernet")]).columns
    assert [(c.task, c.metric) for c in cols] == [("segmentation", "mIoU"), ("probe", "top1"), ("probe", "mean_dist")]


def test_every_metric_of_a_run_without_numbers_falls_back_to_the_headline():
    cell_cols = aggregate([run("/r/1", top1=None, status="failed")], all_metrics=True).columns
    assert [c.metric for c in cell_cols] == ["top1"]


def test_a_cell_without_a_mean_does_not_stop_the_deltas_of_the_next():
    ref = {**BACKBONE, "id": "ref", "method": "mae"}
    runs = [run("/r/a1", top1=None, status="failed"),
            RunResult(path=Path("/r/a2"), task="classification", protocol="linear", backbone=BACKBONE,
                      dataset="fmnist", seed=0, metrics={"top1": 30.0}),
            run("/r/r1", top1=10.0, backbone=ref),
            RunResult(path=Path("/r/r2"), task="classification", protocol="linear", backbone=ref, dataset="fmnist",
                      seed=0, metrics={"top1": 20.0})]
    row = next(r for r in aggregate(runs, references=["ref"]).rows if r.key == "a")
    assert row.cells[Column("classification", "linear", "fmnist", "top1")].deltas == {"ref": 10.0}


def test_column_labels_and_keys():
    assert COL.label == "cls finetune (fmnist) top1" and COL.key == "classification/finetune/fmnist/top1"
