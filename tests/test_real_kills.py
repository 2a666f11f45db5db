"""Real kills: a run is SIGKILLed at seeded random points of its life (during a step, while a checkpoint is
being written, during an evaluation), relaunched with the same command each time, and must end equal, bit
for bit, to the run that was never interrupted. Nothing in the code under test cooperates with the kills:
they are timed from outside, from the files the run writes (its log lines, the temporary file of an
atomic checkpoint write)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from imagefolders import make_colour_imagefolder, write_tiny_encoder
from test_pretrain_engine import make_imagefolder

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def _log_lines(folder: Path) -> list[dict]:
    try:
        text = (folder / "log.jsonl").read_text()
    except OSError:
        return []
    out = []
    for ln in text.splitlines():
        try:
            out.append(json.loads(ln))
        except ValueError:  # a line being written
            pass
    return out


def in_checkpoint_write(folder: Path):
    return lambda: any(folder.glob(".checkpoint.pth.*.tmp"))


def in_step(folder: Path, rng: random.Random):
    """After 1-3 more log lines than now, and a random few milliseconds: inside the following steps."""
    target = len(_log_lines(folder)) + rng.randint(1, 3)
    delay = rng.uniform(0.0, 0.02)
    state = {}

    def ready():
        if len(_log_lines(folder)) >= target:
            state.setdefault("t", time.monotonic())
            return time.monotonic() - state["t"] >= delay
        return False
    return ready


def in_evaluation(folder: Path, iters: int):
    """The last step of an epoch is logged and that epoch's evaluation line is not yet: the run is evaluating."""
    def ready():
        lines = _log_lines(folder)
        return bool(lines) and "epoch" not in lines[-1] and lines[-1]["step"] % iters == 0
    return ready


def run_with_kills(argv: list[str], folder: Path, kills: list) -> list[str]:
    """Launch ``argv``, SIGKILL it when each of ``kills`` (a factory of a readiness check) holds, relaunch; the
    last launch runs to its end. Returns where each kill landed ('killed' or 'ended before')."""
    landed = []
    for make in kills:
        proc = subprocess.Popen(argv, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        ready, deadline = make(), time.time() + 300
        while proc.poll() is None and not ready() and time.time() < deadline:
            time.sleep(0.001)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            landed.append("killed")
        else:
            landed.append("ended before")
            assert proc.returncode == 0, proc.stderr.read().decode()[-3000:]
    res = subprocess.run(argv, env=ENV, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    return landed


def _equal_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.slow
def test_pretraining_killed_at_random_points_equals_the_uninterrupted_run(tmp_path):
    data = make_imagefolder(tmp_path / "data", per_class=12)  # 24 images: 6 steps per epoch
    def argv(out):
        return [sys.executable, "-m", "droppos.cli", "pretrain", "--data", str(data), "--output", str(out),
                "--model", "tiny", "--patch-size", "4", "--img-size", "16", "--epochs", "3", "--warmup-epochs", "1",
                "--batch-size", "4", "--workers", "0", "--decoder-dim", "32", "--decoder-heads", "2",
                "--save-every-iters", "1", "--log-every", "1", "--resume"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run(argv(straight), env=ENV, check=True, capture_output=True)
    rng = random.Random(0)
    landed = run_with_kills(argv(killed), killed, [lambda: in_checkpoint_write(killed), lambda: in_step(killed, rng),
                                                   lambda: in_step(killed, rng)])
    assert landed.count("killed") >= 2, landed
    a = torch.load(straight / "encoder.pth", weights_only=True)
    b = torch.load(killed / "encoder.pth", weights_only=True)
    _equal_state(a["state_dict"], b["state_dict"])
    ma, mb = (json.loads((d / "metrics.json").read_text())["metrics"] for d in (straight, killed))
    assert ma == mb
    assert not list(killed.glob(".*.tmp")), "a write cut short left its temporary file"


@pytest.mark.slow
def test_fine_tuning_killed_at_random_points_equals_the_uninterrupted_run(tmp_path):
    """Mixup, RandAugment, drop path and random erasing on: kills during an evaluation, during a checkpoint
    write and during a step."""
    data = make_colour_imagefolder(tmp_path / "imgs", n_train=40, n_val=90)
    enc = write_tiny_encoder(tmp_path / "encoder.pth", method="droppos", epochs=1)
    def argv(out):
        return [sys.executable, "-m", "droppos.cli", "classify", "finetune", "--backbone", str(enc), "--data",
                str(data), "--output", str(out), "--workers", "0", "--batch-size", "8", "--epochs", "4",
                "--warmup-epochs", "1", "--resume", "--log-every", "1"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run(argv(straight), env=ENV, check=True, capture_output=True)
    iters = 40 // 8
    rng = random.Random(1)
    landed = run_with_kills(argv(killed), killed, [lambda: in_evaluation(killed, iters),
                                                   lambda: in_checkpoint_write(killed), lambda: in_step(killed, rng)])
    assert landed.count("killed") >= 2, landed
    a = torch.load(straight / "classifier.pth", weights_only=True)
    b = torch.load(killed / "classifier.pth", weights_only=True)
    _equal_state(a["state_dict"], b["state_dict"])
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (straight, killed))
    assert ma["metrics"] == mb["metrics"] and ma["history"] == mb["history"]


def test_only_the_temporary_files_of_cut_writes_are_removed(tmp_path):
    from droppos.utils.files import atomic_write_text, remove_partial_writes

    atomic_write_text(tmp_path / "metrics.json", "{}")
    (tmp_path / ".checkpoint.pth.ab_c9x1z.tmp").write_bytes(b"x" * 10)  # what a kill leaves
    (tmp_path / "init").mkdir()
    (tmp_path / "init" / ".backbone.pth.q0w9e8r7.tmp").write_bytes(b"y" * 5)
    mine = [tmp_path / ".notes.tmp", tmp_path / "draft.tmp", tmp_path / ".a.b.toolong12.tmp"]
    for f in mine:
        f.write_text("the user's")
    assert remove_partial_writes(tmp_path) == 15
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == sorted(["metrics.json"] + [f.name for f in mine])


BENCH = """\
name: killed
seeds: [0]
data:
  imagefolder: {{path: {data}, build: false}}
backbones:
  - name: dp
    pretrain: {{method: droppos, model: tiny, patch_size: 4, img_size: 16, epochs: 3, warmup_epochs: 1,
               batch_size: 4, workers: 0, log_every: 1, decoder_dim: 32, decoder_heads: 2, save_every_iters: 1}}
  - name: scratch
    checkpoint: scratch:tiny_p4_16
tasks:
  - {{name: knn, kind: classify, protocol: knn, options: {{k: 3, batch_size: 8, workers: 0}}}}
  - {{name: linear, kind: classify, protocol: linear, options: {{epochs: 3, batch_size: 8, workers: 0, log_every: 1}}}}
"""


def _group_kill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)  # the bench and its run, as a scheduler's kill does
    proc.wait()


def bench_with_kills(argv: list[str], kills: list) -> list[str]:
    """As :func:`run_with_kills`, for the bench: each launch in a session of its own, the whole group killed."""
    landed = []
    for make in kills:
        proc = subprocess.Popen(argv, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        ready, deadline = make(), time.time() + 600
        while proc.poll() is None and not ready() and time.time() < deadline:
            time.sleep(0.001)
        if proc.poll() is None:
            _group_kill(proc)
            landed.append("killed")
        else:
            landed.append("ended before")
            assert proc.returncode == 0, proc.stderr.read().decode()[-3000:]
    res = subprocess.run(argv, env=ENV, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    return landed


def _runs(out: Path) -> dict[str, dict]:
    """Every run's numbers: metrics and (for classification) the per-epoch history, by run folder."""
    found = {}
    for path in sorted(out.rglob("metrics.json")):
        if "results" in path.relative_to(out).parts:
            continue
        m = json.loads(path.read_text())
        found[str(path.parent.relative_to(out))] = {"metrics": m["metrics"], "history": m.get("history"),
                                                    "status": m.get("status")}
    return found


@pytest.mark.slow
def test_the_bench_killed_at_random_points_equals_the_uninterrupted_bench(tmp_path):
    """The whole bench (its process group) killed during a pretraining step, during a pretraining checkpoint
    write and during a downstream run, relaunched each time with the same command: every run ends with the
    numbers of the bench that was never interrupted, and the pretrained encoder is bit-identical."""
    data = make_colour_imagefolder(tmp_path / "data", n_train=24, n_val=6, size=16, classes=2)
    spec = tmp_path / "spec.yaml"
    spec.write_text(BENCH.format(data=data))

    def argv(out):
        return [sys.executable, "-m", "droppos.cli", "bench", str(spec), "--out", str(out), "--no-results"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run(argv(straight), env=ENV, check=True, capture_output=True, timeout=900)
    pre = killed / "dp" / "pretrain"
    rng = random.Random(2)
    downstream = sorted(f"{b}/{t}/seed0" for b in ("dp", "scratch") for t in ("knn", "linear"))

    def in_downstream():
        """A random downstream run, some moments after its folder appears."""
        folder, delay, state = killed / rng.choice(downstream), rng.uniform(0.5, 3.0), {}

        def ready():
            if (folder / "run.json").is_file():
                state.setdefault("t", time.monotonic())
                return time.monotonic() - state["t"] >= delay
            return False
        return ready
    landed = bench_with_kills(argv(killed), [lambda: in_step(pre, rng), lambda: in_checkpoint_write(pre),
                                             in_downstream])
    assert landed.count("killed") >= 2, landed
    a = torch.load(straight / "dp" / "pretrain" / "encoder.pth", weights_only=True)
    b = torch.load(pre / "encoder.pth", weights_only=True)
    _equal_state(a["state_dict"], b["state_dict"])
    want, got = _runs(straight), _runs(killed)
    assert set(want) == {"dp/pretrain", *downstream} and got == want
    assert all(r["status"] == "finished" for r in got.values())
    assert not list(killed.rglob(".*.tmp")), "a write cut short left its temporary file"
