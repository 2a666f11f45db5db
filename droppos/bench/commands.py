"""The command line of each run: the same ``droppos`` subcommands a user would type.

``*_args`` functions return the arguments after ``droppos`` (what the dry-run shows);
:func:`launch_command` turns them into the process to start, one process or a multi-GPU launch
(``torchrun`` for pretrain / classify / probe / segment, detectron2's own ``launch`` flags for
detect). Every engine that checkpoints is given its resume flag: each one starts a run when the folder is
empty and continues it otherwise (the probes keep no checkpoint and start again).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from .spec import BackboneSpec, DataSpec, TaskSpec


@dataclass
class Source:
    """The weights a downstream run starts from, how the readers should read them, and its name."""

    path: str  # file or scratch:<spec>
    fmt: str | None = None
    trust_pickle: bool = False
    arch: str | None = None
    part: str | None = None
    name: str | None = None  # the spec backbone's name: the row of its runs
    method: str | None = None
    epochs: int | None = None

    def flags(self) -> list[str]:
        """The backbone flags, spelled the same for every command (:mod:`droppos.backbones.options`)."""
        out = ["--backbone", self.path]
        for flag, value in (("--from", self.fmt), ("--arch", self.arch), ("--part", self.part), ("--name", self.name),
                            ("--method", self.method), ("--pretrain-epochs", self.epochs)):
            if value is not None:
                out += [flag, str(value)]
        return out + (["--trust-pickle"] if self.trust_pickle else [])


@dataclass
class Launch:
    """Processes of one run: ``gpus`` per node on ``nodes`` nodes (1 x 1 = a plain process)."""

    gpus: int = 1
    nodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500

    @property
    def distributed(self) -> bool:
        return self.gpus * self.nodes > 1


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


def pretrain_args(bb: BackboneSpec, folder: Path, data_path: str) -> list[str]:
    opts = {k: v for k, v in (bb.pretrain or {}).items() if k != "data"}
    return ["pretrain", "--resume", "--output", str(folder), "--data", data_path, *flags(opts)]


def classify_args(t: TaskSpec, src: Source, d: DataSpec, folder: Path, seed: int, options: dict) -> list[str]:
    out = [t.kind, t.protocol, "--resume", *src.flags(), "--data", d.path, "--output", str(folder), "--seed", str(seed)]
    if d.dataset and "dataset" not in options:
        out += ["--dataset", d.dataset]
    return out + flags(options)


def probe_args(t: TaskSpec, src: Source, d: DataSpec, folder: Path, seed: int, options: dict) -> list[str]:
    """``droppos probe``: the classification flags, without ``--resume`` (a probe keeps no checkpoint:
    an unfinished one simply starts again)."""
    args = classify_args(t, src, d, folder, seed, options)
    args.remove("--resume")
    return args


def detect_args(t: TaskSpec, src: Source, d: DataSpec, folder: Path, seed: int, options: dict) -> list[str]:
    return ["detect", "--config-file", t.config, *src.flags(), "--output", str(folder), "--data", d.path,
            "--seed", str(seed), "--resume", *overrides(options)]


def segment_args(t: TaskSpec, src: Source, d: DataSpec, folder: Path, seed: int, options: dict) -> list[str]:
    opts = {"randomness.seed": seed, **options}
    return ["segment", "--config", t.config, *src.flags(), "--output", str(folder), "--data", d.path, "--resume",
            "--cfg-options", *overrides(opts)]


TASK_ARGS = {"classify": classify_args, "probe": probe_args, "detect": detect_args, "segment": segment_args}


#: run kinds that always run in one process (a probe refuses torchrun; a dataset build is serial)
SINGLE_PROCESS = ("data", "probe")


def launch_command(kind: str, args: list[str], launch: Launch, python: str = sys.executable) -> list[str]:
    """The process that runs ``droppos ARGS`` with ``launch``'s processes."""
    if not launch.distributed or kind in SINGLE_PROCESS:
        return [python, "-m", "droppos.cli", *args]
    if kind == "detect":
        n = args.index("--resume") + 1  # detect_args puts the KEY=VALUE overrides after it
        dist = ["--num-gpus", str(launch.gpus), "--num-machines", str(launch.nodes), "--machine-rank", str(launch.node_rank),
                "--dist-url", f"tcp://{launch.master_addr}:{launch.master_port}" if launch.nodes > 1 else "auto"]
        return [python, "-m", "droppos.cli", *args[:n], *dist, *args[n:]]
    if kind == "segment":
        n = args.index("--cfg-options")
        args = [*args[:n], "--launcher", "pytorch", *args[n:]]
    run = [python, "-m", "torch.distributed.run", "--nnodes", str(launch.nodes), "--nproc-per-node", str(launch.gpus)]
    if launch.nodes > 1:
        run += ["--node-rank", str(launch.node_rank), "--master-addr", launch.master_addr,
                "--master-port", str(launch.master_port)]
    else:
        run += ["--standalone"]
    return [*run, "-m", "droppos.cli", *args]

