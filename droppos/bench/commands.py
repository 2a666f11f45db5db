"""The command line of each run: the same ``droppos`` subcommands a user would type.

``*_args`` functions return the arguments after ``droppos`` (what the dry-run shows);
:func:`launch_command` turns them into the process to start, one process or a multi-GPU launch,
as the task registry (:mod:`droppos.runs.tasks`) says: ``torchrun`` for pretrain and classify,
``torchrun`` + ``--launcher pytorch`` for segment, detectron2's own ``launch`` flags for detect,
one process for probes and dataset builds. Every engine that checkpoints is given its resume flag
(the registry's): each one starts a run when the folder is empty and continues it otherwise (the
probes keep no checkpoint and start again).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from droppos.backbones.options import BackboneOptions
from droppos.runs.tasks import TaskKind, task_kind

from .spec import BackboneSpec, DataSpec, TaskSpec


@dataclass
class Launch:
    """Processes of one run: ``gpus`` per node on ``nodes`` nodes (1 x 1 = a plain process). On one node the
    rendezvous takes a free port (torchrun ``--standalone``, detectron2 ``auto``); across nodes, ``master_port``
    (the bench derives it from the job id, so two jobs on one first node do not collide)."""

    gpus: int = 1
    nodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500

    @property
    def distributed(self) -> bool:
        return self.gpus * self.nodes > 1

    @property
    def processes(self) -> int:
        return self.gpus * self.nodes


def _value(v, style: str) -> str:
    """One option value as text: flags take true/false, config overrides Python literals."""
    if isinstance(v, bool):
        return ("True" if v else "False") if style == "override" else ("true" if v else "false")
    if v is None:
        return "None" if style == "override" else "none"
    if isinstance(v, list):
        return "[" + ",".join(_value(x, "override") if not isinstance(x, str) else repr(x) for x in v) + "]"
    return str(v)


def flags(options: dict) -> list[str]:
    """``{'warmup_epochs': 1, 'aa': ''}`` -> ``['--warmup-epochs', '1', '--aa', '']`` (lists: one value each)."""
    out: list[str] = []
    for k, v in options.items():
        out.append("--" + k.replace("_", "-"))
        if isinstance(v, list):
            out += [_value(x, "flag") for x in v]
        else:
            out.append(_value(v, "flag"))
    return out


def overrides(options: dict) -> list[str]:
    """``{'train.max_iter': 30, 'model.neck.rescales': [2, 1]}`` -> ``['train.max_iter=30', 'model.neck.rescales=[2,1]']``."""
    return [f"{k}={_value(v, 'override')}" for k, v in options.items()]


def data_args(d: DataSpec) -> list[str]:
    return ["data", d.kind, "--out", d.path, "--no-progress", *flags(d.build or {})]


def _resume(entry: TaskKind) -> list[str]:
    """The registry's resume flag of a task (none for the probes: an unfinished one simply starts again)."""
    return [entry.resume_flag] if entry.resume_flag else []


def pretrain_args(bb: BackboneSpec, folder: Path, data_path: str) -> list[str]:
    """``droppos pretrain``, named as its downstream runs name it (``--name``: one results row, pooled by
    pretraining seed)."""
    opts = {k: v for k, v in (bb.pretrain or {}).items() if k != "data"}
    return ["pretrain", *_resume(task_kind("pretrain")), "--output", str(folder), "--name", bb.name, "--data", data_path,
            *flags(opts)]


def classify_args(t: TaskSpec, src: BackboneOptions, d: DataSpec, folder: Path, seed: int, options: dict) -> list[str]:
    """``droppos classify`` and ``droppos probe``: the same flags (a probe has no resume flag)."""
    out = [t.kind, t.protocol, *_resume(task_kind(t.kind, t.protocol)), *src.args(), "--data", d.path, "--output",
           str(folder), "--seed", str(seed)]
    if d.dataset and "dataset" not in options:
        out += ["--dataset", d.dataset]
    return out + flags(options)


def detect_args(t: TaskSpec, src: BackboneOptions, d: DataSpec, folder: Path, seed: int, options: dict) -> list[str]:
    """``droppos detect``: the config overrides come last."""
    return ["detect", "--config-file", t.config, *src.args(), "--output", str(folder), "--data", d.path,
            "--seed", str(seed), *_resume(task_kind("detect")), *overrides(options)]


def segment_args(t: TaskSpec, src: BackboneOptions, d: DataSpec, folder: Path, seed: int, options: dict) -> list[str]:
    opts = {"randomness.seed": seed, **options}
    return ["segment", "--config", t.config, *src.args(), "--output", str(folder), "--data", d.path,
            *_resume(task_kind("segment")), "--cfg-options", *overrides(opts)]


TASK_ARGS = {"classify": classify_args, "probe": classify_args, "detect": detect_args, "segment": segment_args}


def run_task(kind: str, args: list[str]) -> TaskKind:
    """The registry entry of a run from its spec kind and its ``droppos`` arguments."""
    return task_kind(kind, args[1] if kind in ("classify", "probe") and len(args) > 1 else None)


def launch_command(kind: str, args: list[str], launch: Launch, python: str = sys.executable) -> list[str]:
    """The process that runs ``droppos ARGS`` with ``launch``'s processes, the way its task's launcher starts."""
    entry = run_task(kind, args)
    if not launch.distributed or entry.single_process:
        return [python, "-m", "droppos.cli", *args]
    if entry.launcher == "detectron2":
        dist = ["--num-gpus", str(launch.gpus), "--num-machines", str(launch.nodes), "--machine-rank", str(launch.node_rank),
                "--dist-url", f"tcp://{launch.master_addr}:{launch.master_port}" if launch.nodes > 1 else "auto"]
        return [python, "-m", "droppos.cli", args[0], *dist, *args[1:]]
    if entry.launcher == "mmengine":
        n = args.index("--cfg-options")
        args = [*args[:n], "--launcher", "pytorch", *args[n:]]
    run = [python, "-m", "torch.distributed.run", "--nnodes", str(launch.nodes), "--nproc-per-node", str(launch.gpus)]
    if launch.nodes > 1:
        run += ["--node-rank", str(launch.node_rank), "--master-addr", launch.master_addr,
                "--master-port", str(launch.master_port)]
    else:
        run += ["--standalone"]
    return [*run, "-m", "droppos.cli", *args]

