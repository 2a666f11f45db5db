"""Failure paths as one line (no traceback, never a silent number): the same option given twice with
different values, an output path that is a file, a training loss that diverges."""

from __future__ import annotations

import pytest
from cli_errors import one_line_error
from imagefolders import make_colour_imagefolder, write_tiny_encoder

from droppos.cli import main


@pytest.mark.parametrize("argv,needle", [
    (["pretrain", "--lr", "1e-3", "--data", "d", "--output", "o", "--lr", "2e-3"], "--lr is given twice (0.001, then 0.002)"),
    (["classify", "knn", "--backbone", "a.pth", "--data", "d", "--output", "o", "--backbone", "b.pth"],
     "--backbone is given twice ('a.pth', then 'b.pth')"),
    (["segment", "--init", "a.pth", "--backbone", "b.pth", "--output", "o"], "--init 'a.pth' and --backbone 'b.pth' set the same option"),
    (["results", "r", "--out", "x", "--out", "y"], "--out is given twice"),
])
def test_an_option_given_twice_with_different_values_is_refused(capsys, argv, needle):
    assert main(argv) == 2
    one_line_error(capsys, needle, "give")


def test_the_same_value_twice_is_accepted(tmp_path, capsys):
    """Given twice alike, an option means what it says once (scripts that append a default do this)."""
    assert main(["results", str(tmp_path / "none"), "--out", str(tmp_path / "o"), "--out", str(tmp_path / "o")]) == 2
    assert "none: no such run folder" in capsys.readouterr().err


def test_an_output_path_that_is_a_file_is_refused_and_kept(tmp_path, capsys):
    mine = tmp_path / "notes.txt"
    mine.write_text("the user's own file")
    data = make_colour_imagefolder(tmp_path / "imgs")
    enc = write_tiny_encoder(tmp_path / "encoder.pth", method="droppos", epochs=1)
    runs = tmp_path / "runs" / "r"
    runs.mkdir(parents=True)
    (runs / "metrics.json").write_text('{"task": "classification", "protocol": "knn", "metrics": {"top1": 1.0}, '
                                       '"backbone": {"method": "droppos"}}')
    commands = [
        ["classify", "knn", "--backbone", str(enc), "--data", str(data), "--workers", "0", "--output", str(mine)],
        ["probe", "position", "--backbone", str(enc), "--data", str(data), "--workers", "0", "--output", str(mine)],
        ["pretrain", "--data", str(data), "--model", "tiny", "--patch-size", "4", "--img-size", "16", "--output",
         str(mine)],
        ["results", str(runs), "--out", str(mine)],
        ["bench", "smoke", "--out", str(mine)],
    ]
    for argv in commands:
        assert main(argv) == 2, argv
        one_line_error(capsys, str(mine), "is a file, not a folder", "choose another")
    assert main(["classify", "knn", "--backbone", str(enc), "--data", str(data), "--workers", "0", "--output",
                 str(mine / "sub")]) == 2
    one_line_error(capsys, str(mine / "sub"), "Not a directory")
    assert mine.read_text() == "the user's own file"


def test_a_run_that_fails_its_checks_leaves_no_empty_folder_behind(tmp_path, capsys):
    """A missing backbone: the run folder (and the folders made for it) are removed, the user's own kept."""
    data = make_colour_imagefolder(tmp_path / "imgs")
    mine = tmp_path / "mine"
    mine.mkdir()
    for protocol in ("knn", "linear"):
        out = mine / "new" / protocol
        assert main(["classify", protocol, "--backbone", str(tmp_path / "nope.pth"), "--data", str(data),
                     "--workers", "0", "--output", str(out)]) == 2
        one_line_error(capsys, "nope.pth: no such checkpoint file")
        assert not (mine / "new").exists() and mine.is_dir()
    # a folder that held something before keeps it
    kept = mine / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    assert main(["classify", "knn", "--backbone", str(tmp_path / "nope.pth"), "--data", str(data), "--workers", "0",
                 "--output", str(kept)]) == 2
    assert (kept / "notes.txt").read_text() == "mine"


@pytest.mark.slow
def test_a_diverging_fine_tuning_is_one_line(tmp_path, capsys):
    data = make_colour_imagefolder(tmp_path / "imgs")
    enc = write_tiny_encoder(tmp_path / "encoder.pth", method="droppos", epochs=1)
    argv = ["classify", "finetune", "--backbone", str(enc), "--data", str(data), "--workers", "0", "--output",
            str(tmp_path / "ft"), "--epochs", "2", "--warmup-epochs", "0", "--blr", "1e9", "--batch-size", "8"]
    assert main(argv) == 2
    one_line_error(capsys, "the training loss diverged (nan) in epoch 0", "lower --blr")
    assert not (tmp_path / "ft" / "metrics.json").exists()
