"""The statistics of the results table against hand-computed cases: mean, sample spread (n - 1), the
deltas against a reference, the mean's 95% t-interval, Welch's 95% interval of a difference (against
a printed t table and scipy's Welch t-test) and the tie rule on both sides of its edge, what is counted; and non-finite metrics shown as failed runs, never as ``nan``."""

from __future__ import annotations

import json
import math
import statistics
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
    assert c["a"].std is None and c["a"].deltas == {"b": 0.0} and c["a"].ties == {} and c["a"].intervals == {}


#: two-sided 95% quantiles of Student's t, from a printed table (not from the code under test)
T975 = {1: 12.706204736174705, 2: 4.302652729911275, 4: 2.7764451051977987}


@pytest.mark.parametrize("values,dof", [([1.0, 2.0, 4.0], 2), ([3.0, 5.0], 1)])
def test_a_cells_95_interval_is_t_on_its_seeds_by_hand(values, dof):
    c = cells([run("a", s, v) for s, v in enumerate(values)])["a"]
    assert c.ci95 == pytest.approx(T975[dof] * statistics.stdev(values) / math.sqrt(len(values)), rel=1e-9)
    assert cells([run("a", 0, 1.0)])["a"].ci95 is None  # one seed: no interval


#: a = [5, 8, 11] (mean 8, std 3), ref = a - delta (std 3): Welch's se = sqrt(9/3 + 9/3), 4 degrees of freedom
EDGE = T975[4] * math.sqrt(6.0)  # 6.8008...


@pytest.mark.parametrize("delta,tie", [(EDGE - 0.01, True), (EDGE + 0.01, False), (-EDGE - 0.01, False),
                                       (-EDGE + 0.01, True), (0.0, True)])
def test_the_tie_rule_is_welchs_interval_containing_zero_on_both_sides_of_its_edge(delta, tie):
    runs = [run("a", s, v) for s, v in enumerate([5.0, 8.0, 11.0])]
    runs += [run("ref", s, v - delta) for s, v in enumerate([5.0, 8.0, 11.0])]
    c = cells(runs, references=["ref"])
    assert c["a"].deltas["ref"] == pytest.approx(delta, abs=1e-12)
    lo, hi = c["a"].intervals["ref"]
    assert (lo, hi) == (pytest.approx(delta - EDGE, abs=1e-9), pytest.approx(delta + EDGE, abs=1e-9))
    assert c["a"].ties == {"ref": tie}
    assert c["ref"].deltas == {} and c["ref"].intervals == {}  # no difference of a reference with itself


@pytest.mark.parametrize("a,b", [([5.0, 8.0, 11.0], [-1.0, 3.0, 7.0, 9.0]), ([60.1, 60.4, 59.8], [58.0, 58.9]),
                                 ([1.0, 1.1], [0.2, 0.9, 0.4, 0.3, 0.35])])
def test_welchs_interval_is_scipys_welch_t_test_interval(a, b):
    """Unequal variances and unequal n: the interval of scipy's Welch t-test (``equal_var=False``)."""
    from scipy.stats import ttest_ind

    c = cells([run("a", s, v) for s, v in enumerate(a)] + [run("ref", s, v) for s, v in enumerate(b)], ["ref"])
    ref = ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert c["a"].intervals["ref"] == (pytest.approx(ref.low, abs=1e-9), pytest.approx(ref.high, abs=1e-9))
    assert c["a"].ties["ref"] == (ttest_ind(a, b, equal_var=False).pvalue >= 0.05)


def test_seeds_that_change_nothing_give_a_point_interval():
    """Every seed the same value on both sides (a deterministic protocol): the difference is exact."""
    c = cells([run("a", s, 61.2) for s in range(3)] + [run("ref", s, 61.6) for s in range(3)], ["ref"])
    assert c["a"].intervals["ref"] == (pytest.approx(-0.4), pytest.approx(-0.4)) and c["a"].ties == {"ref": False}


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


def test_pretraining_seed_rows_pool_into_one_row_of_pretraining_means():
    """droppos@pt0/1/2 (a spec's pretrain_seeds) -> row droppos: one value per pretraining, the mean of its
    downstream seeds; n = 3 pretrainings and the intervals over them."""
    from droppos.results.markdown import cell_text

    runs = [run("droppos@pt0", 0, 1.0), run("droppos@pt0", 1, 3.0), run("droppos@pt1", 0, 4.0),
            run("droppos@pt2", 0, 5.0), run("droppos@pt2", 1, 7.0), run("ref", 0, 1.0), run("ref", 1, 2.0)]
    for r in runs:
        r.backbone["method"] = "droppos"  # one recipe, three pretrainings (the test runs name method by row)
    c = cells(runs, references=["ref"])
    assert set(c) == {"droppos", "ref"}
    d = c["droppos"]
    assert d.values == [2.0, 4.0, 6.0] and d.seeds == [0, 1, 2] and d.over == "pretrainings"
    assert d.ci95 == pytest.approx(T975[2] * 2.0 / math.sqrt(3), rel=1e-9)
    assert "(n=3 pretrainings)" in cell_text(d) and "(n=2)" in cell_text(c["ref"])
    from scipy.stats import ttest_ind

    want = ttest_ind([2.0, 4.0, 6.0], [1.0, 2.0], equal_var=False).confidence_interval(0.95)
    assert d.intervals["ref"] == (pytest.approx(want.low), pytest.approx(want.high))


def test_a_name_used_both_plain_and_per_pretraining_is_refused():
    from droppos.errors import UserError

    runs = [run("droppos", 0, 1.0), run("droppos@pt0", 0, 2.0)]
    for r in runs:
        r.backbone["method"] = "droppos"
    with pytest.raises(UserError, match="'droppos' is both a row of its own"):
        cells(runs)
    other = [run("x@pt0", 0, 1.0), run("x@pt1", 0, 2.0)]
    other[1].backbone["epochs"] = 99
    with pytest.raises(UserError, match="are pretrainings of one backbone 'x' but differ"):
        cells(other)
