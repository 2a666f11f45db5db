"""Processes, devices and collectives (droppos.utils.dist): who a process is under each launcher, which
device it takes, and that every collective of the project goes through the one helper that puts its
tensor on the training device."""

from __future__ import annotations

import ast
import socket
from pathlib import Path

import pytest
import torch

from droppos.errors import UserError
from droppos.utils import dist as du

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("droppos", "pretrain", "transfer", "tools", "results", "benchmarks")
COLLECTIVES = {"all_reduce", "all_gather", "all_gather_object", "all_gather_into_tensor", "broadcast",
               "broadcast_object_list", "reduce", "reduce_scatter", "reduce_scatter_tensor", "gather", "scatter",
               "gather_object", "scatter_object_list", "barrier", "monitored_barrier", "all_to_all",
               "all_to_all_single", "send", "recv", "isend", "irecv",
               # detectron2.utils.comm's and mmengine.dist's helpers around them
               "synchronize", "reduce_dict", "shared_random_seed", "collect_results", "sync_random_seed"}
DIST_MODULES = ("torch.distributed", "detectron2.utils.comm", "mmengine.dist")


def _slurm(pid: int, **kw) -> dict:
    env = {"SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "0", "SLURM_PROCID": "1", "SLURM_LOCALID": "1",
           "SLURM_NODEID": "0", "SLURM_NTASKS": "2", "SLURM_STEP_NUM_TASKS": "2", "SLURM_STEP_NUM_NODES": "1",
           "SLURM_STEP_NODELIST": "rack1-n[01-02]-ib", "SLURM_JOB_NODELIST": "rack1-n[01-02]-ib",
           "SLURM_TASK_PID": str(pid)}
    env.update(kw)
    return env


# ---------------------------------------------------------------------------------------- who am I
def test_torchrun_variables_win():
    env = {"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "GROUP_RANK": "1",
           **_slurm(123)}
    assert du.env_dist_info(env, pid=123) == du.DistInfo(3, 8, 1, 2, 1, du.TORCHRUN)


def test_an_srun_task_is_one_of_n():
    info = du.env_dist_info(_slurm(555), pid=555)
    assert (info.rank, info.world_size, info.local_rank, info.local_world_size, info.launcher) == (1, 2, 1, 2, du.SLURM)


@pytest.mark.parametrize("case", ["batch script", "child of a task", "one-task step"])
def test_a_process_not_started_per_task_is_one_process(case):
    """Defect 2: a command inside an sbatch job with --ntasks 2 (SLURM_PROCID=0, SLURM_NTASKS=2) took itself
    for one of 2 and hung in init_process_group."""
    if case == "batch script":  # sbatch's environment: no step variables, SLURM_TASK_PID is the script's shell
        env = {k: v for k, v in _slurm(1, SLURM_PROCID="0").items() if not k.startswith("SLURM_STEP")}
    elif case == "child of a task":  # the bench's probe on node 0, started by the job's own task
        env = _slurm(1, SLURM_PROCID="0")
    else:
        env = _slurm(555, SLURM_STEP_NUM_TASKS="1")
    assert du.env_dist_info(env, pid=555) == du.DistInfo()


def test_rendezvous_of_an_srun_task(monkeypatch):
    """Defect 8: the host list 'rack1-n[01-02]-ib' gave 'rack1-n01' and every job used port 29500."""
    monkeypatch.setattr(du.os, "getpid", lambda: 555)
    env = _slurm(555)
    out = du.slurm_rendezvous(env)
    assert out["MASTER_ADDR"] == "rack1-n01-ib"
    assert (out["RANK"], out["WORLD_SIZE"], out["LOCAL_RANK"], out["LOCAL_WORLD_SIZE"]) == ("1", "2", "1", "2")
    assert out["MASTER_PORT"] == str(du.job_port("4242", "0"))
    ports = {du.job_port(str(j)) for j in range(1000, 1100)}
    assert len(ports) > 95 and all(20000 <= p <= 60000 for p in ports)  # jobs sharing a node differ
    assert du.job_port("4242") == du.job_port("4242")  # every node of a job derives the same port
    assert du.slurm_rendezvous({**env, "MASTER_PORT": "1234", "MASTER_ADDR": "h"})["MASTER_PORT"] == "1234"


@pytest.mark.parametrize("nodelist,hosts", [
    ("gpu[01-04,07],cpu1", ["gpu01", "gpu02", "gpu03", "gpu04", "gpu07", "cpu1"]),
    ("rack1-n[01-02]-ib", ["rack1-n01-ib", "rack1-n02-ib"]),
    ("a[1-2]b[3-4]", ["a1b3", "a1b4", "a2b3", "a2b4"]),
    ("node7", ["node7"]),
])
def test_slurm_host_lists(nodelist, hosts):
    assert du.slurm_hosts(nodelist) == hosts


def test_bad_host_list_is_one_line():
    with pytest.raises(ValueError, match="SLURM host list 'n\\[1-' could not be read"):
        du.slurm_hosts("n[1-")


# ---------------------------------------------------------------------------------------- which device
@pytest.mark.parametrize("local_rank,visible,index", [(0, 8, 0), (5, 8, 5), (5, 1, 0), (3, 4, 3)])
def test_device_index(local_rank, visible, index):
    """Defect 8: with srun --gpus-per-task=1 every task sees one GPU (index 0), whatever its local rank."""
    assert du.device_index(du.DistInfo(local_rank=local_rank, local_world_size=8), visible) == index


def test_more_processes_than_gpus_is_one_line():
    with pytest.raises(UserError, match="local rank 5 of 8 processes on this node, but only 4 GPUs are visible"):
        du.device_index(du.DistInfo(local_rank=5, local_world_size=8), 4)


# ---------------------------------------------------------------------------------------- collectives
def _dist_calls(path: Path) -> list[str]:
    """``module.collective(...)`` calls and ``from <dist module> import <collective>`` in one file."""
    tree = ast.parse(path.read_text(), str(path))
    aliases = {}  # local name -> dist module it stands for
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name in DIST_MODULES:
                    aliases[a.asname or a.name] = a.name
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                full = f"{node.module}.{a.name}"
                if full in DIST_MODULES:
                    aliases[a.asname or a.name] = full
                elif node.module in DIST_MODULES and a.name in COLLECTIVES:
                    found.append(f"{path.relative_to(REPO)}:{node.lineno}: from {node.module} import {a.name}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in COLLECTIVES:
            base = node.func.value
            name = ast.unparse(base)
            if name in aliases or name in DIST_MODULES:
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: {name}.{node.func.attr}")
    return found


def test_every_collective_goes_through_the_helper():
    """Defect 1, structurally: no collective outside droppos/utils/dist.py (detectron2's and mmengine's own
    internals aside), so none can take a tensor off the training device (NCCL reduces CUDA tensors only)."""
    helper = REPO / "droppos" / "utils" / "dist.py"
    found = [c for pkg in PACKAGES for f in sorted((REPO / pkg).rglob("*.py")) if f != helper
             for c in _dist_calls(f)]
    assert found == []
    assert len(_dist_calls(helper)) >= 6  # the scan does see collectives where they are


def test_the_scan_finds_collectives_written_every_way(tmp_path):
    f = REPO / "tests" / "_scan_probe.py"
    f.write_text("import torch.distributed as dist\nimport torch\nfrom mmengine.dist import broadcast\n"
                 "from detectron2.utils import comm\ndist.all_reduce(x)\ntorch.distributed.barrier()\n"
                 "comm.synchronize()\n")
    try:
        assert len(_dist_calls(f)) == 4
    finally:
        f.unlink()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cuda_only_group_refuses_cpu(rank, world, port, out):
    import torch.distributed as dist

    dist.init_process_group("cuda:gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        dist.all_reduce(torch.ones(()))  # what the pretraining engine did with its count of replaced images
    except Exception as e:  # noqa: BLE001
        if rank == 0:
            Path(out).write_text(str(e))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_a_cuda_only_group_refuses_a_cpu_tensor_as_nccl_does(tmp_path):
    """Defect 1 reproduced on a CPU: a process group that serves only CUDA tensors (NCCL's case) refuses the
    CPU tensor the engine all-reduced; gloo alone would have accepted it."""
    import torch.multiprocessing as mp

    out = tmp_path / "err.txt"
    mp.spawn(_cuda_only_group_refuses_cpu, args=(2, _free_port(), str(out)), nprocs=2)
    assert "No backend type associated with device type cpu" in out.read_text()


def _helper_worker(rank, world, port, out):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        t = torch.tensor([rank + 1.0])
        res = {"sum": du.all_reduce(t, "cpu").item(), "mean": du.all_reduce_mean(t, "cpu").item(),
               "max": du.all_reduce(t, "cpu", "max").item(), "untouched": t.item(),
               "gather": [x.item() for x in du.all_gather(t, "cpu")],
               "objects": du.all_gather_object({"rank": rank}, "cpu"),
               "broadcast": du.broadcast_object(f"from {rank}", "cpu"),
               "tensor": du.broadcast_(torch.tensor([float(rank)]), "cpu").item()}
        du.barrier("cpu")
        torch.save(res, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_collective_helpers_on_two_processes(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_helper_worker, args=(2, _free_port(), str(tmp_path / "r")), nprocs=2)
    for rank in (0, 1):
        r = torch.load(f"{tmp_path / 'r'}.{rank}", weights_only=True)
        assert (r["sum"], r["mean"], r["max"], r["untouched"]) == (3.0, 1.5, 2.0, rank + 1.0)
        assert r["gather"] == [1.0, 2.0] and r["objects"] == [{"rank": 0}, {"rank": 1}]
        assert r["broadcast"] == "from 0" and r["tensor"] == 0.0


def test_one_process_needs_no_group():
    t = torch.tensor([2.0])
    assert du.all_reduce(t, "cpu").item() == 2.0 and du.all_gather(t, "cpu")[0].item() == 2.0
    assert du.broadcast_object("x", "cpu") == "x" and du.world_size() == 1
    du.barrier("cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (NCCL)")
def test_nccl_reduces_what_the_helper_moves(tmp_path):
    """Where a GPU is lent: with NCCL, a raw CPU all-reduce fails and the helper's succeeds."""
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    dist.init_process_group("nccl", rank=0, world_size=1, device_id=torch.device("cuda", 0))
    try:
        with pytest.raises(Exception):
            dist.all_reduce(torch.ones(()))
        assert du.all_reduce(torch.ones(()), torch.device("cuda", 0)).item() == 1.0
        assert du.broadcast_object({"a": 1}, torch.device("cuda", 0)) == {"a": 1}
    finally:
        dist.destroy_process_group()
