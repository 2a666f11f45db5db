"""Distributed set-up in one place: torchrun (one or many nodes), SLURM (srun), or one process.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT. Under ``srun`` without
torchrun, the SLURM variables are translated (MASTER_ADDR from the first host of
SLURM_JOB_NODELIST unless set). The environment is read when ``init_distributed`` is called, never
at import.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _first_slurm_host(nodelist: str) -> str:
    """'gpu[01-04,07],cpu1' -> 'gpu01'."""
    m = re.match(r"([^\[,]+)(\[([^\]]+)\])?", nodelist)
    if not m:
        return nodelist
    base, _, ranges = m.groups()
    if not ranges:
        return base
    first = ranges.split(",")[0].split("-")[0]
    return base + first


def env_dist_info(env: dict | None = None) -> DistInfo:
    """Rank information from torchrun's or SLURM's environment variables (single process if none)."""
    env = os.environ if env is None else env
    if "RANK" in env and "WORLD_SIZE" in env:
        return DistInfo(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)))
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        return DistInfo(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0)))
    return DistInfo()


def init_distributed(backend: str | None = None) -> DistInfo:
    """Initialise the default process group if the environment asks for several processes."""
    info = env_dist_info()
    if not info.distributed or dist.is_initialized():
        return info
    if "SLURM_PROCID" in os.environ and "RANK" not in os.environ:
        os.environ.setdefault("MASTER_ADDR", _first_slurm_host(os.environ.get("SLURM_JOB_NODELIST", "127.0.0.1")))
        os.environ.setdefault("MASTER_PORT", "29500")
        os.environ.update(RANK=str(info.rank), WORLD_SIZE=str(info.world_size), LOCAL_RANK=str(info.local_rank))
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(info.local_rank)
    dist.init_process_group(backend=backend)
    return info


def get_device(info: DistInfo, device: str = "auto") -> torch.device:
    """``auto`` -> the process's GPU when there is one, else the CPU; ``cuda`` without a GPU is one line."""
    from droppos.errors import UserError

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"--device {device}: no CUDA GPU is visible to this process; use --device cpu "
                            "(or auto), or check CUDA_VISIBLE_DEVICES and the driver")
        return torch.device("cuda", info.local_rank)
    if device != "cpu":
        raise UserError(f"--device {device}: expected auto, cpu or cuda")
    return torch.device(device)


def amp_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype of a ``precision`` option: 'auto' -> bf16 on GPU, None (fp32) elsewhere;
    'fp32' -> None; 'bf16' / 'fp16' as named."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        t = t.clone()
        dist.all_reduce(t)
        t /= dist.get_world_size()
    return t


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
