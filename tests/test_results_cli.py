"""``droppos results RUNS... --out DIR``: the Markdown table printed and the four files written."""

import csv
import json
from pathlib import Path

from droppos.cli import main

FIX = Path(__file__).parent / "fixtures" / "results"


def test_results_command_writes_md_csv_json_png(tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["results", str(FIX / "suite"), str(FIX / "external"), str(FIX / "broken"), "--out", str(out),
               "--reference", "mae-vit_tiny_p4-e10", "supervised-vit_tiny_p4-e10"])
    printed, err = capsys.readouterr()
    assert rc == 0
    assert printed.startswith("| backbone | cls finetune (fmnist) top1 |")
    assert ("| droppos-vit_tiny_p4-e10 | 84.17 ± 0.76 (n=3) [Δ +0.97 vs mae-vit_tiny_p4-e10 tie, −0.83 vs "
            "supervised-vit_tiny_p4-e10] |") in printed
    assert "*published: mae vit_base_p16 1600ep [paper]*" in printed
    for name in ("broken/not_json/metrics.json", "scratch-tiny/seg/metrics.json", "bad_log/log.jsonl:2"):
        assert name in err

    md = (out / "results.md").read_text()
    assert "## Published reference numbers" in md and "[model zoo page](https://github.com/open-mmlab" in md
    assert "- **partial** " in md and "- **missing** " in md and "- **failed** " in md and "## Warnings" in md

    rows = list(csv.DictReader((out / "results.csv").open()))
    dp = next(r for r in rows if r["backbone"] == "droppos-vit_tiny_p4-e10" and r["metric"] == "top1"
              and r["task"] == "classification")
    assert float(dp["mean"]) == 84.166667 and dp["n"] == "3" and dp["seeds"] == "0;1;2"
    assert dp["delta_vs_mae-vit_tiny_p4-e10"] and dp["method"] == "droppos" and dp["pretrain_epochs"] == "10"
    scratch = next(r for r in rows if r["backbone"] == "scratch-vit_tiny_p4" and r["task"] == "segmentation")
    assert scratch["mean"] == "" and scratch["status"] == "missing"  # empty, never 0
    assert any(r["metric"] == "bbox_AP75" for r in rows)  # the CSV holds every metric
    pub = [r for r in rows if r["kind"] == "published"]
    assert len(pub) == 22 and all(r["source"] and r["comparable"] for r in pub)

    data = json.loads((out / "results.json").read_text())
    assert data["schema"] == "droppos-bench/results/v1"
    assert len(data["runs"]) == 24 and any("not_json" in w for w in data["warnings"])

    png = (out / "results.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


def test_no_published_rows_and_no_plot(tmp_path, capsys):
    rc = main(["results", str(FIX / "suite/mae-tiny"), "--out", str(tmp_path), "--published", "none", "--no-plot"])
    printed = capsys.readouterr().out
    assert rc == 0 and "*published:" not in printed and not (tmp_path / "results.png").exists()
    assert (tmp_path / "results.md").is_file()


def test_empty_and_missing_folders_fail_with_a_message(tmp_path, capsys):
    assert main(["results", str(tmp_path), "--out", str(tmp_path / "o")]) == 1
    assert "no runs found under" in capsys.readouterr().err
    assert main(["results", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "nope: no such run folder" in capsys.readouterr().err
