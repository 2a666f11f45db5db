"""Start two CPU processes the way each launcher does (torchrun, srun tasks, detectron2 machines), on this host.

Two gloo processes stand in for two GPUs or two machines. srun is imitated with its task variables; the
task is the process srun itself starts, so each one is started through ``sh -c 'SLURM_TASK_PID=$$ exec
...'`` (``exec`` keeps the shell's pid: the variable names the process that reads it, as slurmstepd's does).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "droppos.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env(**extra) -> dict:
    """This environment without any launcher's variables, one thread per process."""
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("SLURM_", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_",
                                 "GROUP_RANK", "TORCHELASTIC", "SUBMITIT_"))}
    return {**base, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra}


@dataclass
class Done:
    returncode: int
    out: str
    seconds: float


def start(argv: list[str], environ: dict, log: Path) -> subprocess.Popen:
    """A process in its own session (so that a SIGKILL of its group reaches every child it starts)."""
    f = open(log, "w")
    return subprocess.Popen(argv, env=environ, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, cwd=REPO)


def wait_all(procs: list[subprocess.Popen], logs: list[Path], timeout: float = 600) -> list[Done]:
    t0 = time.monotonic()
    done = []
    for p, log in zip(procs, logs):
        try:
            rc = p.wait(timeout=max(1.0, timeout - (time.monotonic() - t0)))
        except subprocess.TimeoutExpired:
            for q in procs:
                kill_group(q)
            raise AssertionError(f"timed out after {timeout:.0f} s; log {log}:\n{log.read_text()[-3000:]}") from None
        done.append(Done(rc, log.read_text(), time.monotonic() - t0))
    return done


def kill_group(p: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(p.pid, sig)
    except ProcessLookupError:
        pass
    p.wait()


def torchrun(args: list[str], nproc: int = 2, nnodes: int = 1, node_rank: int = 0, port: int | None = None) -> list[str]:
    run = [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(nnodes), "--nproc-per-node", str(nproc)]
    if nnodes > 1:
        run += ["--node-rank", str(node_rank), "--master-addr", "127.0.0.1", "--master-port", str(port)]
    else:
        run += ["--master-port", str(port or free_port())]
    return [*run, "-m", "droppos.cli", *args]


def srun_task(args: list[str]) -> list[str]:
    """``droppos ARGS`` as an srun task: the process reading SLURM_TASK_PID is the one it names."""
    import shlex

    return ["sh", "-c", "SLURM_TASK_PID=$$ exec " + shlex.join([*CLI, *args])]


def srun_env(rank: int, ntasks: int = 2, job: str = "77", **extra) -> dict:
    return env(SLURM_JOB_ID=job, SLURM_STEP_ID="0", SLURM_PROCID=str(rank), SLURM_LOCALID=str(rank),
               SLURM_NODEID="0", SLURM_NTASKS=str(ntasks), SLURM_STEP_NUM_TASKS=str(ntasks),
               SLURM_STEP_NUM_NODES="1", SLURM_JOB_NUM_NODES="1", SLURM_STEP_NODELIST="localhost",
               SLURM_JOB_NODELIST="localhost", MASTER_ADDR="127.0.0.1", **extra)


def run_two(argvs: list[list[str]], envs: list[dict], tmp: Path, timeout: float = 600, name: str = "p") -> list[Done]:
    logs = [tmp / f"{name}{i}.log" for i in range(len(argvs))]
    procs = [start(a, e, log) for a, e, log in zip(argvs, envs, logs)]
    return wait_all(procs, logs, timeout)
