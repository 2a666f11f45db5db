"""Grouping runs into the backbone x task table: mean +- std over seeds, deltas, statuses,
the Markdown cells and the published numbers."""

import statistics
from pathlib import Path

import pytest
from droppos.results.aggregate import Column, aggregate
from droppos.results.discover import discover
from droppos.results.markdown import cell_text, main_table
from droppos.results.published import DEFAULT_FILE, comparability, load_published
from droppos.results.records import RunResult

FIX = Path(__file__).parent / "fixtures" / "results"
TOP1 = Column("classification", "finetune", "fmnist", "top1")
MAE, SUP = "mae-vit_tiny_p4-e10", "supervised-vit_tiny_p4-e10"  # the fixtures' backbone names


@pytest.fixture(scope="module")
def table():
    return aggregate(discover([FIX / "suite"]).runs, references=[MAE, SUP])


def row(table, method, arch="vit_tiny_p4"):
    return next(r for r in table.rows if (r.method, r.arch) == (method, arch))


def test_mean_and_sample_std_over_seeds(table):
    cell = row(table, "droppos").cells[TOP1]
    assert cell.n == 3 and sorted(cell.seeds) == [0, 1, 2]
    assert cell.mean == pytest.approx(statistics.fmean([84.1, 84.5, 83.9]))
    assert cell.std == pytest.approx(statistics.stdev([84.1, 84.5, 83.9]))
    # ± is the half-width of the mean's 95% t-interval: t(0.975, 2) = 4.3027 x 0.3055 / sqrt(3)
    assert cell.ci95 == pytest.approx(4.302653 * statistics.stdev([84.1, 84.5, 83.9]) / 3 ** 0.5, rel=1e-6)
    assert cell_text(cell).startswith("84.17 ± 0.76 (n=3)")
    single = row(table, "supervised").cells[TOP1]
    assert single.std is None and cell_text(single).startswith("85.00 [")


def test_deltas_against_mae_and_supervised(table):
    dp = row(table, "droppos").cells[TOP1]
    assert dp.deltas[MAE] == pytest.approx(84.1667 - 83.2, abs=1e-3)
    assert dp.deltas[SUP] == pytest.approx(84.1667 - 85.0, abs=1e-3)
    assert f"[Δ +0.97 vs {MAE} tie, −0.83 vs {SUP}]" in cell_text(dp)  # Welch's interval vs MAE holds 0
    mae = row(table, "mae").cells[TOP1]
    assert MAE not in mae.deltas and mae.deltas[SUP] == pytest.approx(-1.8)
    det = row(table, "droppos").cells[Column("detection", "mask_rcnn", "fmnist", "bbox_AP")]
    assert det.deltas == {MAE: pytest.approx(31.2 - 29.4)}  # against a recovered MAE run; no supervised detection
    plain = aggregate(discover([FIX / "suite"]).runs)  # no reference named: no delta anywhere
    assert not any(c.deltas for r in plain.rows for c in r.cells.values())


def test_unfinished_runs_never_become_numbers(table):
    scratch = row(table, "scratch")
    cls = scratch.cells[TOP1]
    assert cls.mean is None and cls.status == "partial" and cell_text(cls) == "partial: 69.00 @ epoch 3/10"
    seg = scratch.cells[Column("segmentation", "upernet", "fmnist", "mIoU")]
    assert (seg.mean, cell_text(seg)) == (None, "missing")
    probe = scratch.cells[Column("probe", "position", "fmnist", "top1")]
    assert cell_text(probe) == "failed"
    assert cell_text(None) == "—"
    md = main_table(table, [])
    scratch_line = next(line for line in md.splitlines() if line.startswith("| scratch"))
    assert "0.00" not in scratch_line and "partial: 69.00" in scratch_line


def test_probe_columns(table):
    order = Column("probe", "order", "fmnist", "cos_dist")
    assert order in table.columns and Column("probe", "order", "fmnist", "acc_drop") in table.columns
    cell = row(table, "droppos").cells[order]
    assert cell_text(cell) == f"0.212 [Δ +0.158 vs {MAE}]"  # three decimals below 1


def test_recovered_values_are_marked(table):
    mae_det = row(table, "mae").cells[Column("detection", "mask_rcnn", "fmnist", "segm_AP")]
    assert mae_det.status == "recovered" and cell_text(mae_det).startswith("26.00†")


def test_pretraining_only_with_all_metrics(table):
    assert not any(c.task == "pretrain" for c in table.columns)
    full = aggregate(discover([FIX / "suite"]).runs, all_metrics=True)
    assert Column("pretrain", "droppos", "fmnist", "pos_acc") in full.columns
    assert Column("classification", "finetune", "fmnist", "top5") in full.columns


def _run(method, epochs, value, seed=0, path="r", status="finished", name=None, arch="vit_small_p16", sha=None):
    record = {"id": name or f"{method}{epochs}", "method": method, "arch": arch, "epochs": epochs}
    if sha:
        record["sha256"] = sha
    return RunResult(path=Path(path), task="classification", protocol="linear", dataset="d", backbone=record,
               seed=seed, metrics={"top1": value}, status=status)


def test_mixed_statuses_in_one_cell_and_named_references():
    runs = [_run("droppos", 20, 70.0, 0, "a"), _run("droppos", 20, 72.0, 1, "b"),
            _run("droppos", 20, 10.0, 2, "c", "partial"), _run("mae", 10, 60.0, 0, "d"), _run("mae", 20, 65.0, 0, "e"),
            _run("droppos", 40, 75.0, 0, "f")]
    t = aggregate(runs, references=["mae20"])
    col = Column("classification", "linear", "d", "top1")
    cell = next(r for r in t.rows if r.key == "droppos20").cells[col]
    assert cell.values == [70.0, 72.0] and cell.partial == [(10.0, "")]
    assert cell_text(cell) == "71.00 ± 12.71 (n=2) [Δ +6.00 vs mae20] (+1 partial)"  # t(0.975, 1) = 12.706
    assert next(r for r in t.rows if r.key == "droppos40").cells[col].deltas == {"mae20": pytest.approx(10.0)}
    assert next(r for r in t.rows if r.key == "mae10").cells[col].deltas == {"mae20": pytest.approx(-5.0)}


def test_three_external_backbones_of_one_size_are_three_named_rows():
    """DINO-, MoCo v3- and DeiT-style files of one architecture and unknown method: three rows, deltas
    only against the row marked as reference."""
    runs = [_run("unknown", None, 60.0, 0, "a", name="dino"), _run("unknown", None, 62.0, 0, "b", name="mocov3"),
            _run("unknown", None, 65.0, 0, "c", name="deit")]
    t = aggregate(runs, references=["deit"])
    col = Column("classification", "linear", "d", "top1")
    assert sorted(r.key for r in t.rows) == ["deit", "dino", "mocov3"]
    deltas = {r.key: r.cells[col].deltas for r in t.rows}
    assert deltas == {"deit": {}, "dino": {"deit": pytest.approx(-5.0)}, "mocov3": {"deit": pytest.approx(-3.0)}}
    assert aggregate(runs, references=["supervised"]).warnings[0].startswith("reference row(s) ['supervised'] not found")


def test_one_name_for_two_backbones_is_an_error_naming_both_runs():
    from droppos.errors import UserError

    with pytest.raises(UserError, match=r"backbone name 'x' is given to two different backbones: a \(method droppos.*"
                                        r"and b \(method mae"):
        aggregate([_run("droppos", 10, 1.0, 0, "a", name="x"), _run("mae", 10, 2.0, 1, "b", name="x")])
    with pytest.raises(UserError, match="two different backbones"):  # same description, other source file
        aggregate([_run("droppos", 10, 1.0, 0, "a", name="x", sha="aa"), _run("droppos", 10, 2.0, 1, "b", name="x",
                                                                            sha="bb")])


def test_duplicate_seed_is_warned_and_counted_once():
    t = aggregate([_run("mae", 10, 60.0, 0, "x1"), _run("mae", 10, 61.0, 0, "x2", "partial")])
    assert t.rows[0].cells[Column("classification", "linear", "d", "top1")].values == [60.0]
    assert len(t.warnings) == 1 and "duplicate run" in t.warnings[0] and "ignoring x2" in t.warnings[0]


def test_published_numbers_have_sources_and_meet_runs(table, tmp_path):
    pubs = load_published()
    assert DEFAULT_FILE.name == "published.csv" and len(pubs) == 22
    first_party = [p for p in pubs if not p.third_party]
    assert {p.source for p in first_party} == {"repo README", "paper", "model zoo page", "paper (TF/TPU)",
                                               "repo (PyTorch/GPU)", "paper (DeiT) and repo README"}
    assert sorted(p.value for p in first_party) == sorted([83.0, 84.2, 85.8, 83.6, 85.9, 51.6, 45.9, 55.5, 49.2, 48.13,
                                                           68.0, 67.8, 75.8, 76.0, 81.8, 50.3, 53.3, 48.1, 53.6])
    assert all(p.comparable and p.schedule and p.reference for p in pubs)
    # MAE's linear probing as the paper and the PyTorch repository give it, B and L
    linear = {(p.arch, p.value) for p in pubs if p.column.protocol == "linear"}
    assert linear == {("vit_base_p16", 68.0), ("vit_base_p16", 67.8), ("vit_large_p16", 75.8), ("vit_large_p16", 76.0)}
    # a number only a third party lists is never comparable, whatever runs exist
    third = [p for p in pubs if p.third_party]
    assert len(third) == 3 and all(p.method == "droppos" for p in third)
    assert all(comparability(p, table).startswith("not comparable (third party") for p in third)
    # the listing states neither architecture nor pretraining epochs: unknown, not guessed
    assert all(p.arch == "" and p.pretrain_epochs is None and "architecture and epochs unknown" in p.label for p in third)
    # MAE's ViT-L 75.8 is the paper's TF/TPU number: not labelled with the repo's 50-epoch schedule
    tpu_l = next(p for p in pubs if p.text == "75.8")
    assert "50 ep" not in tpu_l.schedule.split(";")[0] and "76.0" in tpu_l.comparable
    mseg = next(p for p in pubs if p.column.metric == "mIoU" and p.text == "48.13")
    assert mseg.key == ("mae", "vit_base_p16", 1600) and mseg.text == "48.13"
    assert "0.x configs/mae/upernet_mae-base_fp16_8x2_512x512_160k_ade20k.py" in mseg.comparable  # the run's own config
    assert comparability(mseg, table).startswith("reference only: no run of segmentation/upernet on ade20k")
    full = aggregate(discover([FIX / "suite"]).runs)
    dp800 = next(p for p in pubs if p.key == ("droppos", "vit_base_p16", 800))
    assert comparability(dp800, full).startswith("same backbone and dataset as droppos-vit_base_p16-e800")
    md = main_table(full, pubs)
    assert "| *published: droppos vit_base_p16 800ep [repo README]* |  | *84.2* |" in md
    bad = tmp_path / "pub.csv"
    bad.write_text("method,arch,value\nmae,vit_base_p16,1\n")
    with pytest.raises(ValueError, match="pub.csv: published-numbers CSV lacks columns"):
        load_published(bad)


def test_runs_on_two_builds_of_one_data_set_are_never_seeds_of_one_cell():
    import dataclasses

    a = dataclasses.replace(_run("mae", 10, 60.0, 0, "a"), data_id="aaaaaaaaaaaa")
    b = dataclasses.replace(_run("mae", 10, 70.0, 1, "b"), data_id="bbbbbbbbbbbb")
    c = dataclasses.replace(_run("mae", 10, 62.0, 2, "c"), data_id="aaaaaaaaaaaa")
    t = aggregate([a, b, c])
    cells = {col.dataset: cell for col, cell in t.rows[0].cells.items()}
    assert cells["d@aaaaaa"].values == [60.0, 62.0] and cells["d@bbbbbb"].values == [70.0]
    assert any("names 2 different builds" in w for w in t.warnings)


def test_a_killed_finetune_is_read_from_its_log(tmp_path):
    """The classification log writes val_top1: a run without metrics.json still shows, as partial."""
    import json

    run = tmp_path / "ft"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"task": "classification", "protocol": "finetune", "dataset": "d",
                                              "seed": 0, "schedule": {"epochs": 4}, "status": "running",
                                              "backbone": {"id": "x", "method": "mae", "arch": "a", "epochs": 1}}))
    (run / "log.jsonl").write_text(json.dumps({"step": 10, "epoch": 1, "val_top1": 55.0, "val_top5": 90.0}) + "\n")
    runs = discover([tmp_path]).runs
    assert len(runs) == 1 and runs[0].status == "partial" and runs[0].metrics["top1"] == 55.0


def test_cost_columns_per_backbone():
    import dataclasses

    from droppos.results.markdown import main_table

    runs = [dataclasses.replace(_run("mae", 10, 60.0, 0, "a"), cost={"params_M": 5.5, "GFLOPs": 1.25, "input": [64, 64],
                                                                      "wall_s": 120.0, "peak_rss_gib": 1.5}),
            dataclasses.replace(_run("mae", 10, 62.0, 1, "b"), cost={"params_M": 5.5, "GFLOPs": 1.25, "input": [64, 64],
                                                                      "wall_s": 60.0, "peak_rss_gib": 2.0}),
            _run("droppos", 10, 70.0, 0, "c")]
    t = aggregate(runs)
    mae = next(r for r in t.rows if r.key == "mae10")
    assert mae.cost == {"params_M": 5.5, "GFLOPs": {"cls@64": 1.25}, "wall_s": 180.0, "peak_rss_gib": 2.0}
    md = main_table(t, [])
    assert "| params (M) | GFLOPs (task@px) | run time (min) | peak memory (GiB) |" in md
    assert "| 5.50 | cls@64 1.25 | 3.0 | 2.00 |" in md and "| — | — | — | — |" in md  # droppos10 has no cost


def test_vit_b_gflops_match_the_published_count():
    """fvcore on this project's ViT-B/16 at 224 px: 17.6 GFLOPs in the DeiT / ViTDet tables' convention."""
    from droppos.backbones.source import load_backbone

    from droppos.utils.cost import backbone_cost

    cost = backbone_cost(load_backbone("scratch:base_p16_224").encoder(), 224)
    assert cost["params_M"] == pytest.approx(85.8, abs=0.11) and cost["GFLOPs"] == pytest.approx(17.6, rel=0.01)


def test_a_difference_whose_welch_interval_holds_zero_is_a_tie():
    runs = [_run("droppos", 10, v, seed, f"d{seed}") for seed, v in enumerate([70.0, 72.0, 71.0])]
    runs += [_run("mae", 10, v, seed, f"m{seed}") for seed, v in enumerate([70.5, 71.5, 70.0])]
    runs += [_run("scratch", 0, v, seed, f"s{seed}") for seed, v in enumerate([60.0, 60.5, 61.0])]
    runs += [_run("sup", 10, 75.0, 0, "u0")]
    t = aggregate(runs, references=["mae10"])
    col = Column("classification", "linear", "d", "top1")
    cells = {r.key: r.cells[col] for r in t.rows}
    assert cells["droppos10"].ties == {"mae10": True} and "vs mae10 tie]" in cell_text(cells["droppos10"])
    assert cells["scratch0"].ties == {"mae10": False} and "tie" not in cell_text(cells["scratch0"])
    assert cells["sup10"].ties == {} and "tie" not in cell_text(cells["sup10"])  # n=1: no spread, no verdict
    # the sentences the README quotes come from the same rule
    from droppos.results.markdown import comparisons, render

    text = comparisons(t)
    assert ("- droppos10 vs mae10, cls linear (d) top1: +0.33; tie: Welch 95% interval [−1.74, +2.41] contains 0 "
            "(n=3 vs n=3)") in text
    assert ("- scratch0 vs mae10, cls linear (d) top1: −10.17; below: Welch 95% interval [−11.73, −8.61] excludes 0 "
            "(n=3 vs n=3)") in text
    assert "- sup10 vs mae10, cls linear (d) top1: +4.33; not ranked (n=1 vs n=3: one seed gives no interval)" in text
    assert "## Differences against the references" in render(t, [], [])
