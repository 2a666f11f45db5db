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
