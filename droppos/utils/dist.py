"""Processes, devices and collectives in one place: torchrun, srun, detectron2's launch, or one process.

Who am I (:func:`env_dist_info`), read when asked, never at import:

* **torchrun** (or any launcher that speaks its language, detectron2's and the project's own
  included): ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``.
* **srun without torchrun**: one task of a job step is one process; ``SLURM_PROCID``,
  ``SLURM_STEP_NUM_TASKS``, ``SLURM_LOCALID``, ``SLURM_NODEID``. Only the process srun itself
  started (``SLURM_TASK_PID`` is its pid) is a task: a command run from an ``sbatch`` script with
  ``--ntasks 8``, or started by a task (the bench's probes on node 0), is one process, not one of N.
  The master address is the first host of the step's node list (python-hostlist expands any SLURM
  host list, ``rack1-n[01-02]-ib`` included); the port is ``MASTER_PORT`` or derived from the job
  and step ids (as submitit's ``TorchDistributedEnvironment`` derives it from the job id), so two
  jobs that share their first node do not collide.
* otherwise one process.

Which device (:func:`get_device`): the process's GPU among those it can see. With
``srun --gpus-per-task=1`` (or ``CUDA_VISIBLE_DEVICES`` of one GPU) that is index 0, whatever the
local rank; with one GPU per local rank visible, the local rank.

Collectives (:func:`all_reduce`, :func:`all_gather`, :func:`broadcast_object`, :func:`barrier`,
...) are the only calls of ``torch.distributed`` collectives in the project (a test over the code
checks it): each takes the training device and moves its tensor there first, because NCCL reduces
CUDA tensors only (gloo, on a CPU, accepts anything and cannot show the mistake).
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

#: launchers: how the processes of a run were started
TORCHRUN, SLURM, SINGLE = "torchrun", "slurm", "none"


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    node_rank: int = 0
    launcher: str = SINGLE

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_local_main(self) -> bool:
        return self.local_rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _int(env, *names: str, default: int | None = None) -> int | None:
    for n in names:
        v = env.get(n)
        if v not in (None, ""):
            try:
                return int(v)
            except ValueError:
                raise ValueError(f"environment variable {n}={v!r} is not an integer") from None
    return default


def is_slurm_task(env=None, pid: int | None = None) -> bool:
    """Whether this process is one task of a multi-task srun step (not a child of one, nor a batch script)."""
    env = os.environ if env is None else env
    tasks = _int(env, "SLURM_STEP_NUM_TASKS", default=1)
    return ("SLURM_PROCID" in env and tasks > 1
            and _int(env, "SLURM_TASK_PID", default=-1) == (os.getpid() if pid is None else pid))


def env_dist_info(env=None, pid: int | None = None) -> DistInfo:
    """Rank information of this process (see the module docstring); one process when nothing says otherwise."""
    env = os.environ if env is None else env
    if "RANK" in env and "WORLD_SIZE" in env:
        world = _int(env, "WORLD_SIZE")
        local_world = _int(env, "LOCAL_WORLD_SIZE", default=world)
        local = _int(env, "LOCAL_RANK", default=0)
        rank = _int(env, "RANK")
        node = _int(env, "GROUP_RANK", default=rank // max(local_world, 1))
        return DistInfo(rank, world, local, local_world, node, TORCHRUN)
    if is_slurm_task(env, pid):
        world = _int(env, "SLURM_STEP_NUM_TASKS")
        nodes = _int(env, "SLURM_STEP_NUM_NODES", "SLURM_JOB_NUM_NODES", "SLURM_NNODES", default=1)
        return DistInfo(_int(env, "SLURM_PROCID"), world, _int(env, "SLURM_LOCALID", default=0),
                        max(world // max(nodes, 1), 1), _int(env, "SLURM_NODEID", default=0), SLURM)
    return DistInfo()


def slurm_hosts(nodelist: str) -> list[str]:
    """Every host of a SLURM host list, in order (python-hostlist)."""
    import hostlist

    try:
        return hostlist.expand_hostlist(nodelist)
    except hostlist.BadHostlist as e:
        raise ValueError(f"SLURM host list {nodelist!r} could not be read ({e})") from None


def job_port(job_id: str, step: str = "") -> int:
    """A rendezvous port of a SLURM job (and step), the same on every node and different across jobs:
    seeded from the ids in 20000-60000, submitit's ``TorchDistributedEnvironment`` rule."""
    return random.Random(f"{job_id}.{step}" if step else job_id).randint(20000, 60000)


def slurm_rendezvous(env=None) -> dict[str, str]:
    """torchrun's variables for an srun task: MASTER_ADDR / MASTER_PORT (unless set), RANK, WORLD_SIZE,
    LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK."""
    env = os.environ if env is None else env
    info = env_dist_info(env)
    nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    out = {"RANK": str(info.rank), "WORLD_SIZE": str(info.world_size), "LOCAL_RANK": str(info.local_rank),
           "LOCAL_WORLD_SIZE": str(info.local_world_size), "GROUP_RANK": str(info.node_rank)}
    out["MASTER_ADDR"] = env.get("MASTER_ADDR") or (slurm_hosts(nodelist)[0] if nodelist else "127.0.0.1")
    out["MASTER_PORT"] = env.get("MASTER_PORT") or str(job_port(env.get("SLURM_JOB_ID", "0"),
                                                                env.get("SLURM_STEP_ID", "")))
    return out


def init_distributed(device: str = "auto", backend: str | None = None) -> DistInfo:
    """Start the default process group when the environment asks for several processes.

    srun tasks get torchrun's variables first (:func:`slurm_rendezvous`), so every engine (mmengine's
    and detectron2's included) sees one kind of environment. The backend is NCCL on GPUs and gloo on
    CPUs (``DROPPOS_DIST_BACKEND`` overrides it); a GPU process is bound to its device first. A torchrun
    worker dies with its agent (:func:`die_with_parent`).
    """
    info = env_dist_info()
    if not info.distributed or dist.is_initialized():
        return info
    if info.launcher == SLURM:
        os.environ.update(slurm_rendezvous())
    elif info.launcher == TORCHRUN:
        die_with_parent()
    dev = get_device(info, device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    backend = backend or os.environ.get("DROPPOS_DIST_BACKEND") or ("nccl" if dev.type == "cuda" else "gloo")
    kwargs = {"device_id": dev} if backend == "nccl" else {}
    dist.init_process_group(backend=backend, timeout=timedelta(minutes=30), **kwargs)
    return info


def die_with_parent() -> None:
    """Ask Linux to end this process when the one that started it (torchrun's agent) dies: a killed agent
    (``kill -9``, a lost node) must not leave its workers training on, and writing, without it."""
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return
    import ctypes

    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGKILL)


def get_device(info: DistInfo, device: str = "auto") -> torch.device:
    """``auto`` -> this process's GPU when there is one, else the CPU; ``cuda`` without a GPU is one line."""
    from droppos.errors import UserError

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"--device {device}: no CUDA GPU is visible to this process; use --device cpu "
                            "(or auto), or check CUDA_VISIBLE_DEVICES and the driver")
        return torch.device("cuda", device_index(info, torch.cuda.device_count()))
    if device != "cpu":
        raise UserError(f"--device {device}: expected auto, cpu or cuda")
    return torch.device(device)


def device_index(info: DistInfo, visible: int) -> int:
    """The GPU of this process among ``visible`` ones: 0 when it sees one (``--gpus-per-task=1``), else its
    local rank (one GPU per local process)."""
    from droppos.errors import UserError

    if visible == 1:
        return 0
    if info.local_rank < visible:
        return info.local_rank
    raise UserError(f"local rank {info.local_rank} of {info.local_world_size} processes on this node, but only "
                    f"{visible} GPUs are visible (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); "
                    "start one process per visible GPU (torchrun --nproc-per-node, srun --gpus-per-task=1)")


def amp_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype of a ``precision`` option: 'auto' -> bf16 on GPU, None (fp32) elsewhere;
    'fp32' -> None; 'bf16' / 'fp16' as named."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


# ---------------------------------------------------------------------------------------- collectives
def initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if initialized() else 1


def rank() -> int:
    return dist.get_rank() if initialized() else 0


def all_reduce(t: torch.Tensor, device: torch.device | str, op: str = "sum") -> torch.Tensor:
    """A copy of ``t`` on ``device``, summed (``op="sum"``), averaged (``"mean"``) or maxed (``"max"``) over
    processes; ``t`` itself is untouched. One process: the copy alone."""
    out = t.detach().to(device, copy=True)
    if initialized() and dist.get_world_size() > 1:
        reduce_op = dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM
        dist.all_reduce(out, op=reduce_op)
        if op == "mean":
            out /= dist.get_world_size()
    return out


def all_reduce_mean(t: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    return all_reduce(t, device, "mean")


def all_gather(t: torch.Tensor, device: torch.device | str) -> list[torch.Tensor]:
    """``t`` of every process (same shape everywhere), on ``device``, in rank order."""
    t = t.detach().to(device)
    if not initialized() or dist.get_world_size() == 1:
        return [t]
    out = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(out, t.contiguous())
    return out


def broadcast_(t: torch.Tensor, device: torch.device | str, src: int = 0) -> torch.Tensor:
    """``t`` (in place when it already lives on ``device``) replaced by process ``src``'s; returns it."""
    if not initialized() or dist.get_world_size() == 1:
        return t
    on = t if t.device == torch.device(device) else t.to(device)
    with torch.no_grad():
        dist.broadcast(on, src)
        if on is not t:
            t.copy_(on)
    return t


def all_gather_object(obj: Any, device: torch.device | str) -> list[Any]:
    """``obj`` (picklable) of every process, in rank order; serialised through tensors on ``device``."""
    if not initialized() or dist.get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)  # serialised on the current device: NCCL's is set by init_distributed
    return out


def broadcast_object(obj: Any, device: torch.device | str, src: int = 0) -> Any:
    """Process ``src``'s ``obj`` on every process (picklable; serialised through tensors on ``device``)."""
    if not initialized() or dist.get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=torch.device(device))
    return box[0]


def barrier(device: torch.device | str | None = None) -> None:
    """Every process waits for the others (on a GPU, NCCL's barrier on this process's device)."""
    if not initialized() or dist.get_world_size() == 1:
        return
    device = torch.device(device) if device is not None else None
    if device is not None and device.type == "cuda" and dist.get_backend() == "nccl":
        dist.barrier(device_ids=[device.index if device.index is not None else torch.cuda.current_device()])
    else:
        dist.barrier()


def cleanup() -> None:
    if initialized():
        dist.destroy_process_group()
