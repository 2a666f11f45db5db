"""Load a detection LazyConfig and apply the run's command-line settings to it."""

from __future__ import annotations

from pathlib import Path

from droppos.errors import UserError
from droppos.utils.config import check_override_keys, shipped_config

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
REQUIRED = ("model", "dataloader", "optimizer", "lr_multiplier", "train", "datasets")


def shipped_configs() -> list[str]:
    """Names of the configs in ``configs/`` (``mask_rcnn_vitdet_b_100ep``, ...)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.py") if not p.stem.startswith("_"))


def resolve_config_file(name: str | Path) -> Path:
    """A config file path, or the name of a shipped config (with or without ``.py``)."""
    return shipped_config(name, CONFIG_DIR)


def _overridden(opts: list[str], key: str) -> bool:
    return any(o.split("=", 1)[0].strip() == key for o in opts or [])


def load_config(args, init=None):
    """``LazyConfig.load(args.config_file)`` + ``args.opts`` overrides + the run's settings.

    Sets ``train.output_dir`` (``--output``), ``datasets.root`` (``--data``, else the config's,
    else ``$DETECTRON2_DATASETS/coco``), ``train.seed`` (``--seed``), ``train.device`` (``cpu``
    when no GPU is visible, unless overridden; AMP and fp16 gradient compression off on CPU) and
    ``train.init_checkpoint`` (from ``init``).
    """
    import torch
    from detectron2.config import LazyConfig

    from .datasets import resolve_root

    path = resolve_config_file(args.config_file)
    cfg = LazyConfig.load(str(path))
    opts = list(args.opts or [])
    bad = [o for o in opts if "=" not in o]
    if bad:
        raise UserError(f"override {bad[0]!r} is not KEY=VALUE (e.g. train.max_iter=100)")
    none = [o for o in opts if o.split("=", 1)[1].strip() == "None"]
    if none:  # hydra's grammar, which detectron2 parses overrides with, reads None as the string 'None'
        key = none[0].split("=", 1)[0].strip()
        raise UserError(f"override {none[0]!r} would set the string 'None'; write {key}=null for no value")
    check_override_keys(cfg, [o.split("=", 1)[0].strip() for o in opts])
    cfg = LazyConfig.apply_overrides(cfg, opts)
    missing = [k for k in REQUIRED if k not in cfg]
    if missing:
        raise UserError(f"{path}: not a detection config of this project (no {', '.join(missing)}); "
                         f"see {CONFIG_DIR}")
    cfg.train.output_dir = str(args.output)
    if getattr(args, "data", None):
        cfg.datasets.root = str(args.data)
    cfg.datasets.root = str(resolve_root(cfg.datasets.root))
    if not _overridden(opts, "train.seed"):
        cfg.train.seed = int(args.seed)
    if not _overridden(opts, "train.device") and not torch.cuda.is_available():
        cfg.train.device = "cpu"
    if not str(cfg.train.device).startswith("cuda"):
        # AMPTrainer and fp16 gradient compression need CUDA: SimpleTrainer, fp32 on CPU
        cfg.train.amp.enabled = False
        cfg.train.ddp.fp16_compression = False
    if init is not None:
        cfg.train.init_checkpoint = init.get("checkpoint") or ""
    return cfg
