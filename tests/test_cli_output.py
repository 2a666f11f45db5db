"""What the terminal shows: the project's lines, not dependencies' known warnings (shown with ``droppos -v``)."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest

from droppos.cli import KNOWN_WARNINGS, quiet_known_warnings

SAMPLES = {  # one message of each known warning, as its package words it
    r"`torch\.jit\.script` is deprecated": "`torch.jit.script` is deprecated. Please switch to `torch.compile`",
    r"This DataLoader will create \d+ worker processes": "This DataLoader will create 4 worker processes in total.",
    r"Importing from timm\.models\.layers is deprecated": "Importing from timm.models.layers is deprecated, please "
                                                          "import via timm.layers",
    r"Fail to import ``MultiScaleDeformableAttention``": "Fail to import ``MultiScaleDeformableAttention`` from "
                                                         "``mmcv.ops.multi_scale_deform_attn``",
    r"torch\.meshgrid: in an upcoming release": "torch.meshgrid: in an upcoming release, it will be required",
}


def _shown(verbose: bool, monkeypatch) -> list[str]:
    monkeypatch.delenv("DROPPOS_WARNINGS", raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_known_warnings(verbose)
        for category, pattern in KNOWN_WARNINGS:
            warnings.warn(SAMPLES[pattern], category)
        warnings.warn("the project's own warning", UserWarning)
        warnings.warn("another package's new warning", FutureWarning)
    return [str(w.message) for w in caught]


def test_known_warnings_hidden_others_shown(monkeypatch):
    assert set(SAMPLES) == {p for _, p in KNOWN_WARNINGS}
    assert _shown(False, monkeypatch) == ["the project's own warning", "another package's new warning"]


def test_verbose_shows_every_warning_here_and_in_started_processes(monkeypatch):
    assert len(_shown(True, monkeypatch)) == len(KNOWN_WARNINGS) + 2
    assert os.environ["DROPPOS_WARNINGS"] == "all"  # inherited by torchrun / detectron2 / mmengine workers


@pytest.mark.slow
def test_a_classify_run_shows_no_known_warning(tmp_path):
    """A real k-NN run through the command: no known third-party warning on stderr, and `-v` brings them back."""
    env = {k: v for k, v in os.environ.items() if k != "DROPPOS_WARNINGS"}
    cli = [sys.executable, "-m", "droppos.cli"]

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*cli, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)

    assert run("data", "imagefolder", "--out", "data", "--size", "32", "--train-per-class", "4", "--val-per-class",
               "2", "--no-progress").returncode == 0
    knn = ["classify", "knn", "--backbone", "scratch:tiny_p8_32", "--data", "data", "--k", "3", "--workers", "4"]
    quiet = run(*knn, "--output", "a")
    assert quiet.returncode == 0 and "Warning" not in quiet.stderr, quiet.stderr
    loud = run("-v", *knn, "--output", "b")
    assert loud.returncode == 0
    if (os.cpu_count() or 1) < 4:  # torch advises against more loader workers than cores
        assert "This DataLoader will create 4 worker processes" in loud.stderr
