"""The statistics of the results table against hand-computed cases: mean, sample spread (n - 1), the
deltas against a reference, the tie rule |delta| <= sqrt(sa^2 + sb^2) on both sides of its edge, what is
counted; and non-finite metrics shown as failed runs, never as ``nan``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from droppos.cli import main
from droppos.results.aggregate import Column, aggregate
from droppos.results.records import RunResult

COL = Column("classification", "finetune", "fmnist", "top1")


def run(name: str, seed, top1, status="finished", path: str | None = None) -> RunResult:
    return RunResult(path=Path(path or f"/runs/{name}/s{seed}"), task="classification", protocol="finetune",
                     backbone={"id": name, "method": name, "arch": "vit_tiny_p4", "epochs": 10}, dataset="fmnist",
                     seed=seed, metrics={} if top1 is None else {"top1": top1}, status=status)


def cells(runs, references=()):
    table = aggregate(runs, references=list(references))
    return {r.key: r.cells[COL] for r in table.rows}


def test_mean_and_sample_spread_by_hand():
    c = cells([run("a", s, v) for s, v in enumerate([1.0, 2.0, 4.0])])["a"]
    assert c.n == 3 and c.mean == pytest.approx(7 / 3, abs=1e-12)
    # sum of squares about the mean: 16/9 + 1/9 + 25/9 = 42/9, over n - 1 = 2
    assert c.std == pytest.approx(math.sqrt(42 / 9 / 2), abs=1e-12)
    assert c.seeds == [0, 1, 2]


def test_one_value_has_no_spread_and_no_tie_verdict():
    c = cells([run("a", 0, 80.0), run("b", 0, 79.0), run("b", 1, 81.0)], references=["b"])
    assert c["a"].std is None and c["a"].deltas == {"b": 0.0} and c["a"].ties == {}


@pytest.mark.parametrize("ref_values,delta,tie", [
    ([-1.0, 3.0, 7.0], 5.0, True),    # |delta| = 5 = sqrt(3^2 + 4^2): the edge counts as a tie
    ([-1.5, 2.5, 6.5], 5.5, False),   # just beyond it
    ([11.0, 15.0, 19.0], -7.0, False),  # negative deltas by their size
    ([5.0, 9.0, 13.0], -1.0, True),
])
def test_the_tie_rule_on_both_sides_of_its_edge(ref_values, delta, tie):
    runs = [run("a", s, v) for s, v in enumerate([5.0, 8.0, 11.0])]  # mean 8, std 3
    runs += [run("ref", s, v) for s, v in enumerate(ref_values)]  # std 4
    c = cells(runs, references=["ref"])
    assert c["ref"].std == pytest.approx(4.0, abs=1e-12) and c["a"].std == pytest.approx(3.0, abs=1e-12)
    assert c["a"].deltas["ref"] == pytest.approx(delta, abs=1e-12)
    assert c["a"].ties == {"ref": tie}
    assert c["ref"].deltas == {}  # no delta of a reference against itself


def test_only_finished_and_recovered_values_are_counted():
    runs = [run("a", 0, 10.0), run("a", 1, 20.0, status="recovered"), run("a", 2, 90.0, status="partial"),
            run("a", 3, None, status="failed"), run("a", 4, None, status="missing")]
    c = cells(runs)["a"]
    assert c.values == [10.0, 20.0] and c.mean == 15.0 and c.recovered == 1
    assert c.partial == [(90.0, "")] and c.other == {"failed": 1} and c.missing == 1


def test_a_duplicate_seed_is_counted_once():
    c = cells([run("a", 0, 10.0, path="/r/x"), run("a", 0, 30.0, status="partial", path="/r/y"), run("a", 1, 20.0)])["a"]
    assert sorted(c.values) == [10.0, 20.0]


def _write(folder: Path, name: str, seed: int, metrics: dict) -> None:
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({
        "schema": "droppos-bench/metrics/v1", "task": "classification", "protocol": "finetune", "dataset": "fmnist",
        "seed": seed, "status": "finished", "metrics": metrics,
        "backbone": {"id": name, "method": "droppos", "arch": "vit_tiny_p4", "epochs": 10}}))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_metric_is_a_failed_run_never_a_nan(tmp_path, capsys, bad):
    _write(tmp_path / "runs" / "s0", "dp", 0, {"top1": 80.0, "top5": 95.0})
    _write(tmp_path / "runs" / "s1", "dp", 1, {"top1": bad, "top5": 96.0})  # json writes NaN / Infinity
    assert main(["results", str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--published", "none",
                 "--no-plot"]) == 0
    out, err = capsys.readouterr()
    assert "nan" not in out.lower() and "inf" not in out.lower()
    assert "| dp | 80.00 (+1 failed) |" in out, out
    warning = [ln for ln in err.splitlines() if "s1/metrics.json" in ln]
    assert len(warning) == 1 and "failed" in warning[0] and f"top1 = {bad}" in warning[0], err
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    failed = [r for r in data["runs"] if r["path"].endswith("s1")]
    assert failed[0]["status"] == "failed" and failed[0]["metrics"] == {}
    assert "- **failed** " in (tmp_path / "out" / "results.md").read_text()
