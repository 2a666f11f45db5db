"""What every classification protocol does first and last: run folder, processes, backbone, data,
resume checkpoints and ``metrics.json``.

Run folder: ``config.yaml``/``config.json`` (resolved config), ``log.jsonl`` + ``tb/`` (per-epoch
and per-iteration scalars), ``checkpoint.pth`` (resume, atomic, ``weights_only``-loadable),
``metrics.json`` (the results aggregator's input) and, per protocol, ``classifier.pth`` or
``features.pth``.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from droppos.backbones.protocol import Backbone
from droppos.errors import UserError
from droppos.utils import dist as du
from droppos.runs import open_run, removed_on_failure, together, write_metrics
from droppos.utils.checkpoint import atomic_save, safe_load
from droppos.utils.config import write_config
from droppos.utils.logging import RunLogger
from droppos.utils.rng import check_world_size, gather_rng_states, restore_rng_state, saved_world_size

from .config import CommonConfig
from .data import check_imagefolder, dataset_name, resolve_data
from .errors import InputError

RUN_FILES = ("checkpoint.pth", "metrics.json", "log.jsonl", "classifier.pth", "features.pth")


@dataclass
class Setup:
    """Everything a protocol needs, built from its config by :func:`prepare`."""

    cfg: CommonConfig
    protocol: str
    info: du.DistInfo
    device: torch.device
    amp: torch.dtype | None
    run_dir: Path
    backbone: Backbone
    img_size: int
    data_root: Path
    classes: list[str]
    dataset: str
    logger: RunLogger

    @property
    def ckpt_path(self) -> Path:
        return self.run_dir / "checkpoint.pth"

    @property
    def pin(self) -> bool:
        return self.device.type == "cuda"


def prepare(cfg: CommonConfig, protocol: str, resume: bool = False, overwrite: bool = False) -> Setup:
    """Check the run folder, start the processes, read the backbone, check the data, save the config."""
    if not cfg.backbone:
        raise InputError("no --backbone given: pass a checkpoint (encoder.pth, an official release, timm weights) "
                         "or scratch:<size>_p<patch>_<img>")
    info = du.init_distributed(cfg.device)
    device = du.get_device(info, cfg.device)
    run_dir = Path(cfg.output)
    with removed_on_failure(run_dir, main=info.is_main):  # a bad backbone or data set leaves no empty run behind
        _open_run_dir(run_dir, info, device, resume, overwrite, protocol, cfg.data)
        torch.manual_seed(cfg.seed + info.rank)
        random.seed(cfg.seed + info.rank)
        np.random.seed(cfg.seed + info.rank)
        # checked on every process; one line (once per machine) when any fails
        s, log_bytes = together(info, device, lambda: _setup(cfg, protocol, info, device, run_dir, resume))
    s.logger = RunLogger(run_dir, enabled=info.is_main, keep_bytes=log_bytes)
    if info.is_main:
        write_config(cfg, run_dir)
        for note in s.backbone.notes:
            print(f"backbone: {note}")
    return s


def _setup(cfg: CommonConfig, protocol: str, info: du.DistInfo, device: torch.device, run_dir: Path,
           resume: bool) -> tuple[Setup, int | None]:
    """The backbone, the data and, for ``resume``, the whole request checked against the checkpoint."""
    try:
        bb = cfg.read()
        img_size = bb.input_size(cfg.img_size)  # a size the position embedding cannot be resampled to: error here
    except UserError:
        raise
    except (ValueError, FileNotFoundError) as e:
        raise InputError(str(e)) from None
    root = Path(cfg.data)
    classes = check_imagefolder(root)
    s = Setup(cfg=cfg, protocol=protocol, info=info, device=device, amp=du.amp_dtype(cfg.precision, device),
              run_dir=run_dir, backbone=bb, img_size=img_size, data_root=root, classes=classes,
              dataset=dataset_name(root, cfg.dataset), logger=None)
    log_bytes = None
    if resume and s.ckpt_path.is_file():  # the whole --resume request is checked before anything is written
        ck = safe_load(s.ckpt_path)
        _check_resumable(ck.get("meta", {}), s)
        check_world_size(ck, info.world_size, s.ckpt_path, why_not_elastic(ck, s))
        log_bytes = ck.get("log_bytes")
    return s, log_bytes


def _open_run_dir(run_dir: Path, info: du.DistInfo, device: torch.device, resume: bool, overwrite: bool,
                  protocol: str, data: str) -> None:
    """Claim the run folder (main process) and build the embedded default data there on first use."""
    probe = protocol in ("position", "order")
    hint = "pass --overwrite to run it again" if probe else "pass --resume to continue it or --overwrite to start over"
    open_run(run_dir, f"{'probe' if probe else 'classify'} {protocol}", info, device, resume=resume,
             overwrite=overwrite, remove=RUN_FILES, continue_hint=hint, check=lambda: _build_default_data(data))


def _build_default_data(data: str) -> None:
    resolve_data(data)  # builds the embedded default on first use


def run_meta(s: Setup, **extra) -> dict:
    """Description stored in checkpoints and classifier files (plain types only)."""
    return {"protocol": s.protocol, "backbone": s.backbone.backbone, "arch": {**s.backbone.arch.to_dict(), "img_size": [s.img_size] * 2},
            "classes": list(s.classes), "num_classes": len(s.classes), "dataset": s.dataset, **extra}


def save_checkpoint(s: Setup, payload: dict) -> None:
    """Write ``checkpoint.pth`` with every process's RNG states (a collective: every process calls it)."""
    rng = gather_rng_states(s.device)
    if s.info.is_main:
        atomic_save({"meta": run_meta(s), "rng": rng, "world_size": s.info.world_size,
                     "global_batch": s.cfg.batch_size * s.info.world_size, "log_bytes": s.logger.size, **payload},
                    s.ckpt_path)


def load_checkpoint(s: Setup) -> dict | None:
    """The run's ``checkpoint.pth`` if any, checked against this run's protocol, backbone, classes and number of
    processes; this process's RNG states restored."""
    if not s.ckpt_path.is_file():
        return None
    ck = safe_load(s.ckpt_path)
    _check_resumable(ck.get("meta", {}), s)
    if check_world_size(ck, s.info.world_size, s.ckpt_path, why_not_elastic(ck, s)) and s.info.is_main:
        print(f"resuming a run of {saved_world_size(ck)} process(es) with {s.info.world_size}: exact (the same "
              "global batch and sample order, and every random draw is per sample)")
    restore_rng_state(ck["rng"], s.info.rank)
    return ck


def why_not_elastic(ck: dict, s: Setup) -> str | None:
    """None when a checkpoint written by another number of processes continues exactly here (checkpoints are at
    epoch ends: the same global batch gives the same sample order), else why not."""
    cfg = s.cfg
    draws = [n for n in ("drop_path", "mixup", "cutmix") if getattr(cfg, n, 0) > 0]
    if draws:
        return f"{', '.join(draws)} draw per process (stochastic depth and mixup take one draw per batch)"
    old, new = ck.get("global_batch"), cfg.batch_size * s.info.world_size
    if old != new:
        return (f"its global batch would change ({old} -> {cfg.batch_size} x {s.info.world_size} = {new}; keep "
                "--batch-size x processes equal)")
    return None


def encoder_cost(s: Setup) -> dict:
    """Parameters and GFLOPs of the backbone's pooled feature at the run's input size."""
    from droppos.utils.cost import backbone_cost

    return backbone_cost(s.backbone.encoder(img_size=s.img_size), s.img_size)


def _check_resumable(meta: dict, s: Setup) -> None:
    """One line when the run folder's checkpoint is not a run of this protocol, backbone, data and architecture."""
    fix = "resume with the run's own options, or start over with --overwrite"
    if meta.get("protocol") != s.protocol:
        raise InputError(f"{s.ckpt_path}: a {meta.get('protocol')} checkpoint, this is a {s.protocol} run; "
                         "use another --output or --overwrite")
    if meta.get("num_classes") != len(s.classes) or meta.get("dataset", s.dataset) != s.dataset:
        raise InputError(f"{s.ckpt_path}: the run was trained on {meta.get('dataset')} ({meta.get('num_classes')} "
                         f"classes), --data {s.data_root} is {s.dataset} ({len(s.classes)} classes); {fix}")
    if meta.get("arch") != run_meta(s)["arch"]:
        raise InputError(f"{s.ckpt_path}: checkpoint architecture {meta.get('arch')} differs from this run's "
                         f"{run_meta(s)['arch']}; {fix}")
    old, new = meta.get("backbone") or {}, s.backbone.backbone
    same = (old.get("sha256") == new.get("sha256")) if old.get("sha256") and new.get("sha256") else \
        old.get("source") == new.get("source")
    if not same:
        raise InputError(f"{s.ckpt_path}: the run started from {old.get('source')} ({old.get('sha256', 'no hash')}), "
                         f"--backbone is {new.get('source')} ({new.get('sha256', 'no hash')}); {fix}")


def finish(s: Setup, metrics: dict[str, float], **extra) -> Path | None:
    """Write ``metrics.json`` (main process) and close the logger."""
    path = None
    if s.info.is_main:
        path = write_metrics(s.run_dir, task="classification", protocol=s.protocol, backbone=s.backbone.backbone,
                             dataset=s.dataset, metrics=metrics, seed=s.cfg.seed, img_size=s.img_size,
                             data_root=s.data_root, cost=encoder_cost(s),
                             num_classes=len(s.classes), config=dataclasses.asdict(s.cfg), **extra)
        s.logger.close()
        print(f"{s.protocol}: " + ", ".join(f"{k} {v:.2f}" for k, v in metrics.items()) + f" -> {path}")
    du.barrier(s.device)
    return path
