"""Every documented launch path, with two CPU processes standing in for two GPUs or two machines.

torchrun on one node (the DDP tests, tests/test_ddp.py) and on two nodes of one host; srun tasks without
torchrun; a single command inside a multi-task allocation; detectron2's ``--num-machines 2``;
mmengine's ``--launcher pytorch`` and ``--launcher slurm``; a claim that fails on one process ending
every process within seconds. Each defect of the cluster issue that a path showed has its test here.
"""

from __future__ import annotations

import json

import pytest
import torch
from imagefolders import make_colour_imagefolder
from launch_helpers import CLI, env, free_port, run_two, srun_env, srun_task, torchrun

pytestmark = pytest.mark.slow

PRETRAIN = ["pretrain", "--model", "tiny", "--patch-size", "4", "--img-size", "16", "--decoder-dim", "32",
            "--decoder-heads", "2", "--workers", "0", "--epochs", "1", "--warmup-epochs", "0", "--batch-size", "4",
            "--attn-guide", "false"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_colour_imagefolder(tmp_path_factory.mktemp("imgs"), n_train=8, n_val=4, size=16, classes=2)


def _pretrained_on_two(out) -> None:
    m = json.loads((out / "metrics.json").read_text())
    assert m["steps"] == 2  # 16 images / 2 processes / batch 4
    ck = torch.load(out / "checkpoint.pth", weights_only=True)
    assert ck["world_size"] == 2 and len(ck["rng"]) == 2


def test_torchrun_two_nodes_of_one_process(tmp_path, data):
    out, port = tmp_path / "run", free_port()
    args = [*PRETRAIN, "--data", str(data), "--output", str(out)]
    done = run_two([torchrun(args, nproc=1, nnodes=2, node_rank=r, port=port) for r in (0, 1)], [env(), env()],
                   tmp_path, timeout=300)
    assert [d.returncode for d in done] == [0, 0], done[1].out[-3000:]
    _pretrained_on_two(out)


def test_srun_tasks_without_torchrun(tmp_path, data):
    out = tmp_path / "run"
    args = [*PRETRAIN, "--data", str(data), "--output", str(out)]
    done = run_two([srun_task(args), srun_task(args)], [srun_env(0), srun_env(1)], tmp_path, timeout=300)
    assert [d.returncode for d in done] == [0, 0], done[0].out[-3000:] + done[1].out[-3000:]
    _pretrained_on_two(out)


def test_a_single_command_in_a_multi_task_allocation_runs_alone(tmp_path, data):
    """Defect 2: a probe run from an sbatch script with --ntasks 2 waited forever in init_process_group."""
    out = tmp_path / "probe"
    args = ["probe", "position", "--backbone", "scratch:tiny_p4_16", "--data", str(data), "--output", str(out),
            "--workers", "0", "--epochs", "1", "--train-images", "8", "--val-images", "4", "--head-batch-size", "32"]
    # sbatch's environment: the task variables of the allocation, SLURM_TASK_PID of the script's shell
    environ = {k: v for k, v in srun_env(0).items() if not k.startswith("SLURM_STEP")}
    (done,) = run_two([[*CLI, *args]], [{**environ, "SLURM_TASK_PID": "1"}], tmp_path, timeout=120)
    assert done.returncode == 0, done.out[-3000:]
    assert json.loads((out / "metrics.json").read_text())["status"] == "finished"


def test_a_failed_claim_ends_every_process_within_seconds(tmp_path, data):
    """Defect 8: when rank 0's claim failed the others waited at a barrier until the time-out."""
    from droppos.runs import claim, release

    out = tmp_path / "taken"
    claim(out, "classify knn")
    release(out)
    args = [*PRETRAIN, "--data", str(data), "--output", str(out)]
    (done,) = run_two([torchrun(args)], [env()], tmp_path, timeout=120)
    assert done.returncode != 0 and done.seconds < 60
    assert done.out.count("holds a 'classify knn' run; this is 'pretrain'") == 1  # once: rank 1 is quiet
    done = run_two([srun_task(args), srun_task(args)], [srun_env(0), srun_env(1)], tmp_path, timeout=120, name="s")
    assert [d.returncode for d in done] == [2, 2] and all(d.seconds < 60 for d in done)
    assert "holds a 'classify knn' run" in done[0].out and done[1].out.strip() == ""  # task 1 on node 0 is quiet


# ---------------------------------------------------------------------------------------- detectron2
@pytest.mark.detectron2
def test_detectron2_two_machines(tmp_path):
    """Defect 4: machine 1 was refused by the lock machine 0 held, and machine 0 waited in rendezvous."""
    pytest.importorskip("detectron2.engine")
    from detection_helpers import FMNIST, TINY, build_tiny_coco, write_encoder

    coco = build_tiny_coco(tmp_path / "coco", train=4, val=2)
    write_encoder(tmp_path / "encoder.pth")
    out, port = tmp_path / "det", free_port()

    def machine(rank):
        return [*CLI, "detect", "--config-file", FMNIST, "--backbone", str(tmp_path / "encoder.pth"), "--output",
                str(out), "--data", str(coco), "--num-gpus", "1", "--num-machines", "2", "--machine-rank", str(rank),
                "--dist-url", f"tcp://127.0.0.1:{port}", *TINY, "dataloader.train.total_batch_size=2",
                "train.max_iter=2", "train.checkpointer.period=10"]

    done = run_two([machine(0), machine(1)], [env(), env()], tmp_path, timeout=600)
    assert [d.returncode for d in done] == [0, 0], done[0].out[-3000:] + done[1].out[-3000:]
    assert "World size: 2" in (out / "log.txt").read_text()
    record = json.loads((out / "metrics.json").read_text())
    assert record["world_size"] == 2 and record["load_report"]["ok"]
    assert json.loads((out / "init.json").read_text())["world_size"] == 2

    # a claim that fails on machine 0 ends machine 1 too, within seconds, with the one line
    done = run_two([machine(0), machine(1)], [env(), env()], tmp_path, timeout=120, name="again")
    assert all(d.returncode == 2 and d.seconds < 90 for d in done), [d.out[-1500:] for d in done]
    assert all("already holds a run (last_checkpoint)" in d.out for d in done)


# ---------------------------------------------------------------------------------------- mmengine
def _seg_args(tmp_path, out, launcher):
    from segmentation_helpers import build_tiny_dataset, tiny_run_options

    data = tmp_path / "ade"
    if not data.exists():
        build_tiny_dataset(data, train=4, val=2)
    return ["segment", "--config", "upernet_vit_fmnist", "--backbone", "scratch", "--data", str(data), "--output",
            str(out), "--launcher", launcher, "--cfg-options", *tiny_run_options(iters=2)]


@pytest.mark.mmseg
def test_mmengine_launcher_pytorch(tmp_path):
    pytest.importorskip("mmseg")
    out = tmp_path / "seg"
    (done,) = run_two([torchrun(_seg_args(tmp_path, out, "pytorch"))], [env()], tmp_path, timeout=600)
    assert done.returncode == 0, done.out[-4000:]
    record = json.loads((out / "metrics.json").read_text())
    assert record["world_size"] == 2 and record["iterations"] == 2


@pytest.mark.mmseg
def test_mmengine_launcher_slurm(tmp_path):
    """Defect 3: srun task 1 was refused by the run-folder lock (the main process was read from RANK, which
    srun does not set), and task 0 then waited for it."""
    pytest.importorskip("mmseg")
    out = tmp_path / "seg"
    args = _seg_args(tmp_path, out, "slurm")
    done = run_two([srun_task(args), srun_task(args)], [srun_env(0), srun_env(1)], tmp_path, timeout=600)
    assert [d.returncode for d in done] == [0, 0], done[0].out[-3000:] + done[1].out[-3000:]
    record = json.loads((out / "metrics.json").read_text())
    assert record["world_size"] == 2 and record["iterations"] == 2


@pytest.mark.mmseg
def test_segment_refuses_a_launcher_that_did_not_start_it(tmp_path, capsys):
    pytest.importorskip("mmseg")
    from droppos.cli import main

    assert main(_seg_args(tmp_path, tmp_path / "x", "slurm")) == 2
    assert "--launcher slurm: this process was not started by srun" in capsys.readouterr().err
