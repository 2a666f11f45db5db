"""Bad datasets and arguments stop `droppos segment` before training, with one line naming the file."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("mmseg")

from droppos.cli import main  # noqa: E402
from segmentation_helpers import tiny_run_options, write_pair  # noqa: E402


def _good(root, n=2):
    for split in ("training", "validation"):
        for i in range(n):
            label = np.zeros((32, 32), np.uint8)
            label[4:12, 4:12] = 1 + i
            write_pair(root, split, f"ADE_{split}_{i:08d}", label)
    return root


def _segment(root, tmp_path, *extra):
    return main(["segment", "--config", "upernet_vit_fmnist", "--init", "scratch", "--data", str(root),
                 "--work-dir", str(tmp_path / "run"), *extra, "--cfg-options", *tiny_run_options(1)])


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "no error message"
    return err[-1]


def test_label_values_outside_the_class_range(tmp_path, capsys):
    root = _good(tmp_path / "ds")
    label = np.zeros((32, 32), np.uint8)
    label[0, 0] = 11  # 10 classes + background 0
    write_pair(root, "training", "ADE_bad", label)
    assert _segment(root, tmp_path) == 2
    line = _error_line(capsys)
    assert "ADE_bad.png" in line and "outside 0..10" in line


def test_image_and_label_sizes_differ(tmp_path, capsys):
    root = _good(tmp_path / "ds")
    write_pair(root, "validation", "ADE_small", np.zeros((32, 32), np.uint8), image_size=(40, 32))
    assert _segment(root, tmp_path) == 2
    line = _error_line(capsys)
    assert "ADE_small.png" in line and "differs" in line


def test_missing_split_folder(tmp_path, capsys):
    root = _good(tmp_path / "ds")
    for p in sorted((root / "annotations" / "validation").iterdir()):
        p.unlink()
    (root / "annotations" / "validation").rmdir()
    assert _segment(root, tmp_path) == 2
    assert "annotations/validation" in _error_line(capsys)


def test_missing_dataset_and_bad_init(tmp_path, capsys):
    assert _segment(tmp_path / "nowhere", tmp_path) == 2
    assert "nowhere" in _error_line(capsys)
    root = _good(tmp_path / "ds")
    assert main(["segment", "--config", "upernet_vit_fmnist", "--init", str(tmp_path / "nope.pth"),
                 "--data", str(root), "--work-dir", str(tmp_path / "run")]) == 2
    assert "nope.pth" in _error_line(capsys)
    assert _segment(root, tmp_path, "--eval-only") == 2
    assert "--eval-only needs trained decode heads" in _error_line(capsys)
    assert main(["segment", "--config", "no_such_config", "--init", "scratch", "--work-dir", str(tmp_path)]) == 2
    assert "upernet_vit_fmnist" in _error_line(capsys)
