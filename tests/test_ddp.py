"""Two processes (gloo, the stand-in for two GPUs) against one: the same training, and exact resume after a
real kill.

* DDP equivalence: a 2-process run with batch B per process equals the 1-process run with batch 2B, within
  float tolerance, for DropPos, MAE, supervised pretraining, fine-tuning and linear probing: gradients
  synced, samplers sharded, statistics reduced, and every per-sample draw (crops, augmentations, masks)
  the same whichever process makes it. The per-batch draws of stochastic depth and mixup are each process's
  own (as in DeiT and MAE), so those runs set them to 0; DropPos's attentive weighting normalises each
  process's loss by its own weight sum (as the released code), so its run turns it off.
* Exact resume: a 2-process pretraining and a 2-process fine-tuning killed with SIGKILL at a random point
  and resumed equal the uninterrupted 2-process run bit for bit (every process's RNG states are saved), and
  a resume with another number of processes is one line naming both.
"""

from __future__ import annotations

import json
import random
import shutil
import time

import pytest
import torch
from imagefolders import make_colour_imagefolder, write_tiny_encoder
from launch_helpers import CLI, env, free_port, kill_group, run_two, start, torchrun, wait_all

pytestmark = pytest.mark.slow

PRETRAIN = ["--model", "tiny", "--patch-size", "4", "--img-size", "16", "--decoder-dim", "32", "--decoder-heads", "2",
            "--workers", "0", "--warmup-epochs", "1", "--blr", "1e-3", "--log-every", "1"]
METHODS = {"droppos": ["--method", "droppos", "--attn-guide", "false"],
           "mae": ["--method", "mae"],
           "supervised": ["--method", "supervised", "--mixup", "0", "--cutmix", "0", "--drop-path", "0"]}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_colour_imagefolder(tmp_path_factory.mktemp("imgs"), n_train=8, n_val=4, size=16, classes=2)


@pytest.fixture(scope="module")
def encoder_file(tmp_path_factory):
    return write_tiny_encoder(tmp_path_factory.mktemp("enc") / "encoder.pth", method="droppos", epochs=1)


def one_and_two(tmp_path, args_for):
    """Run ``args_for(out, batch)`` as 1 process with batch 8 and as 2 torchrun processes with batch 4."""
    import subprocess

    one, two = tmp_path / "one", tmp_path / "two"
    res = subprocess.run([*CLI, *args_for(one, 8)], env=env(), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    (done,) = run_two([torchrun(args_for(two, 4))], [env()], tmp_path, name="ddp")
    assert done.returncode == 0, done.out[-4000:]
    return one, two


def assert_close_states(a: dict, b: dict, atol: float):
    assert a.keys() == b.keys()
    worst = max((x.float() - b[k].float()).abs().max().item() for k, x in a.items() if x.is_floating_point())
    assert worst < atol, worst
    return worst


@pytest.mark.parametrize("method", list(METHODS))
def test_two_processes_pretrain_as_one_with_the_global_batch(tmp_path, data, method):
    one, two = one_and_two(tmp_path, lambda out, b: ["pretrain", "--data", str(data), "--output", str(out),
                                                     "--epochs", "2", "--batch-size", str(b), *PRETRAIN,
                                                     *METHODS[method]])
    a = torch.load(one / "encoder.pth", weights_only=True)["state_dict"]
    b = torch.load(two / "encoder.pth", weights_only=True)["state_dict"]
    init = torch.load(two / "checkpoint.pth", weights_only=True)
    assert init["world_size"] == 2 and len(init["rng"]) == 2
    assert_close_states(a, b, atol=2e-5)
    ma = json.loads((one / "metrics.json").read_text())
    mb = json.loads((two / "metrics.json").read_text())
    assert ma["steps"] == mb["steps"] == 4
    assert ma["metrics"]["loss"] == pytest.approx(mb["metrics"]["loss"], rel=1e-4)


@pytest.mark.parametrize("protocol", ["finetune", "linear"])
def test_two_processes_classify_as_one_with_the_global_batch(tmp_path, data, encoder_file, protocol):
    extra = ["--drop-path", "0", "--mixup", "0", "--cutmix", "0", "--warmup-epochs", "1"] if protocol == "finetune" \
        else ["--warmup-epochs", "1", "--lr", "0.5"]
    one, two = one_and_two(tmp_path, lambda out, b: ["classify", protocol, "--backbone", str(encoder_file), "--data",
                                                     str(data), "--output", str(out), "--workers", "0", "--epochs",
                                                     "2", "--batch-size", str(b), *extra])
    ma = json.loads((one / "metrics.json").read_text())
    mb = json.loads((two / "metrics.json").read_text())
    assert [h["train_loss"] for h in ma["history"]] == pytest.approx([h["train_loss"] for h in mb["history"]],
                                                                     rel=1e-4)
    assert ma["metrics"] == pytest.approx(mb["metrics"])
    a = torch.load(one / "checkpoint.pth", weights_only=True)["model"]
    b = torch.load(two / "checkpoint.pth", weights_only=True)["model"]
    assert_close_states(a, b, atol=2e-5)


# ---------------------------------------------------------------------------------------- kill and resume
def _kill_after_checkpoint(argv: list[str], out, tmp_path, rng: random.Random, name: str) -> None:
    """Start ``argv`` (2 processes), SIGKILL the whole group at a random moment after its first checkpoint."""
    log = tmp_path / f"{name}.log"
    p = start(argv, env(), log)
    t0 = time.monotonic()
    while not (out / "checkpoint.pth").exists():
        if p.poll() is not None or time.monotonic() - t0 > 300:
            kill_group(p)
            raise AssertionError(f"no checkpoint before the end; log:\n{log.read_text()[-3000:]}")
        time.sleep(0.01)
    time.sleep(rng.uniform(0.0, 0.6))
    assert p.poll() is None, "the run ended before the kill: make it longer"
    kill_group(p)
    assert not (out / "metrics.json").exists()


@pytest.mark.parametrize("method", ["droppos", "supervised"])
def test_pretraining_killed_and_resumed_equals_the_uninterrupted_run(tmp_path, method):
    """Defect 5: a 2-process pretraining stopped and resumed differed (rank 0's RNG restored on every rank)."""
    data = make_colour_imagefolder(tmp_path / "imgs", n_train=24, n_val=2, size=16, classes=2)
    common = ["--data", str(data), "--epochs", "3", "--batch-size", "2", "--save-every-iters", "1", *PRETRAIN,
              *METHODS[method]]
    if method == "supervised":
        common[common.index("--drop-path") + 1] = "0.1"  # stochastic depth draws from each process's own stream
    (full,) = run_two([torchrun(["pretrain", "--output", str(tmp_path / "full"), *common])], [env()], tmp_path,
                      name="full")
    assert full.returncode == 0, full.out[-3000:]
    out = tmp_path / "killed"
    _kill_after_checkpoint(torchrun(["pretrain", "--output", str(out), *common]), out, tmp_path,
                           random.Random(method), "killed")
    (resumed,) = run_two([torchrun(["pretrain", "--resume", "--output", str(out), *common])], [env()], tmp_path,
                         name="resumed")
    assert resumed.returncode == 0, resumed.out[-3000:]
    assert "resumed" in resumed.out
    a = torch.load(tmp_path / "full" / "encoder.pth", weights_only=True)["state_dict"]
    b = torch.load(out / "encoder.pth", weights_only=True)["state_dict"]
    assert all(torch.equal(v, b[k]) for k, v in a.items())

    # the same folder resumed by one process: refused, naming both numbers
    import subprocess

    (out / "metrics.json").unlink()  # as if it had stopped at its last checkpoint

    res = subprocess.run([*CLI, "pretrain", "--resume", "--output", str(out), *common], env=env(),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "written by a run of 2 process(es), resumed with 1" in res.stderr


def test_finetuning_killed_and_resumed_equals_the_uninterrupted_run(tmp_path, encoder_file):
    """Defect 5: a 2-process fine-tune killed with SIGKILL after epoch 1 and resumed ended 9.5e-5 away."""
    data = make_colour_imagefolder(tmp_path / "imgs", n_train=16, n_val=4, size=16, classes=3)
    common = ["classify", "finetune", "--backbone", str(encoder_file), "--data", str(data), "--workers", "0",
              "--epochs", "4", "--batch-size", "2", "--warmup-epochs", "1"]  # mixup, cutmix and drop path on
    (full,) = run_two([torchrun([*common, "--output", str(tmp_path / "full")])], [env()], tmp_path, name="full")
    assert full.returncode == 0, full.out[-3000:]
    out = tmp_path / "killed"
    _kill_after_checkpoint(torchrun([*common, "--output", str(out)]), out, tmp_path, random.Random(1), "killed")
    (resumed,) = run_two([torchrun([*common, "--output", str(out), "--resume"])], [env()], tmp_path, name="resumed")
    assert resumed.returncode == 0, resumed.out[-3000:]
    a = torch.load(tmp_path / "full" / "checkpoint.pth", weights_only=True)
    b = torch.load(out / "checkpoint.pth", weights_only=True)
    assert a["epoch"] == b["epoch"] == 4
    assert all(torch.equal(v, b["model"][k]) for k, v in a["model"].items())
    assert a["history"] == b["history"]


def test_two_processes_resume_exactly_where_one_stopped_is_refused_in_one_line(tmp_path, encoder_file, data):
    """A run resumed with another number of processes is one line naming both, before anything is written."""
    import subprocess

    out = tmp_path / "ft"
    args = ["classify", "linear", "--backbone", str(encoder_file), "--data", str(data), "--workers", "0",
            "--epochs", "1", "--batch-size", "4", "--output", str(out)]
    res = subprocess.run([*CLI, *args], env=env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    (out / "metrics.json").unlink()
    before = (out / "checkpoint.pth").read_bytes()
    (two,) = run_two([torchrun([*args, "--resume"], port=free_port())], [env()], tmp_path, name="two")
    assert two.returncode != 0
    assert two.out.count("written by a run of 1 process(es), resumed with 2") == 1  # once: the other process is quiet
    assert (out / "checkpoint.pth").read_bytes() == before


def test_helpers_wait_all_reports_a_hang(tmp_path):
    """The launch helpers end a stuck process group and say so (what a hang looks like in these tests)."""
    import sys

    log = tmp_path / "x.log"
    p = start([sys.executable, "-c", "import time; print('waiting', flush=True); time.sleep(60)"], env(), log)
    with pytest.raises(AssertionError, match="timed out after 2 s"):
        wait_all([p], [log], timeout=2)


def test_a_resume_on_another_number_of_processes_is_exact_where_nothing_is_drawn_per_process(tmp_path):
    """DropPos without drop path draws every mask and crop per sample: 2 processes of batch 2 killed and resumed
    by 1 process of batch 4 (the same global batch, the same sample order) continue the same run."""
    import subprocess

    data = make_colour_imagefolder(tmp_path / "imgs", n_train=24, n_val=2, size=16, classes=2)
    common = ["--data", str(data), "--epochs", "3", "--save-every-iters", "1", *PRETRAIN, *METHODS["droppos"]]
    (full,) = run_two([torchrun(["pretrain", "--output", str(tmp_path / "full"), "--batch-size", "2", *common])],
                      [env()], tmp_path, name="full")
    assert full.returncode == 0, full.out[-3000:]
    out = tmp_path / "killed"
    _kill_after_checkpoint(torchrun(["pretrain", "--output", str(out), "--batch-size", "2", *common]), out, tmp_path,
                           random.Random(7), "killed")
    other = tmp_path / "other"
    shutil.copytree(out, other)
    res = subprocess.run([*CLI, "pretrain", "--resume", "--output", str(out), "--batch-size", "4", *common], env=env(),
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "resuming a run of 2 process(es) with 1: exact" in res.stdout
    a = torch.load(tmp_path / "full" / "encoder.pth", weights_only=True)["state_dict"]
    b = torch.load(out / "encoder.pth", weights_only=True)["state_dict"]
    assert_close_states(a, b, atol=2e-5)
    # with another global batch it would not be the same run: refused, naming both numbers and why
    res = subprocess.run([*CLI, "pretrain", "--resume", "--output", str(other), "--batch-size", "2", *common], env=env(),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2
    assert "written by a run of 2 process(es), resumed with 1: its global batch would change (2 x 1 x 2 = 4 -> " \
           "2 x 1 x 1 = 2" in res.stderr
