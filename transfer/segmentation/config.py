"""Load a segmentation config (mmengine format) and adapt it to this machine and run.

Shipped configs live in ``configs/`` and are named without the folder or suffix::

    upernet_mae_b16_ade20k_512   UperNet + ViT-B/16, ADE20K, 160k iterations (published recipe)
    upernet_mae_l16_ade20k_512   the same for ViT-L/16
    upernet_vit_fmnist           tiny ViT on the embedded Fashion-MNIST scenes, CPU friendly
    linear_vit_fmnist            the frozen dense probe: BatchNorm + 1x1 conv on the last block (DINOv2's linear)
    linear4_vit_fmnist           the same on the last four blocks concatenated (DINOv2's boosted linear)
    linear_timm_fmnist           the frozen dense probe of a generic backbone (timm:, plug-ins)

They inherit from the config mmsegmentation ships (``_base_ = ['mmseg::mae/...']``), which
mmengine resolves from the installed package (through ``pkg_resources``: setuptools < 81).
"""

from __future__ import annotations

import warnings
from pathlib import Path

from droppos.errors import UserError
from droppos.utils.config import check_override_keys, shipped_config

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
LOADER_KEYS = ("train_dataloader", "val_dataloader", "test_dataloader")


def shipped_configs() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.py") if not p.name.startswith("_"))


def config_path(config: str | Path) -> Path:
    """A config file path, or the name of a shipped config -> its path (clear error otherwise)."""
    return shipped_config(config, CONFIG_DIR)


def load_config(config: str | Path, cfg_options: dict | None = None):
    """``mmengine.Config`` of ``config`` with ``cfg_options`` ({'a.b': value}) merged in (its custom imports run,
    so ``mmcv.ops`` is made importable first)."""
    from mmengine.config import Config

    from .mmcv_ops import ensure_mmcv_ops

    ensure_mmcv_ops()
    path = config_path(config)
    with warnings.catch_warnings():  # mmengine resolves `mmseg::` through pkg_resources
        warnings.filterwarnings("ignore", message=".*pkg_resources.*")
        cfg = Config.fromfile(str(path))
    if cfg_options:
        check_override_keys(cfg, cfg_options, "--cfg-options")
        cfg.merge_from_dict(cfg_options)
    return cfg


def protocol_of(config: str | Path) -> str:
    """The protocol a config's runs write to metrics.json: ``upernet``, or its own ``protocol`` (the dense
    probes: ``linear``, ``linear4``)."""
    from mmengine.config import Config

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*pkg_resources.*")  # read only: its custom_imports are not run
        cfg = Config.fromfile(str(config_path(config)), import_custom_modules=False)
    return str(cfg.get("protocol", "upernet"))


def set_data_root(cfg, root: str | Path) -> None:
    """Point every dataloader's dataset (and the top-level ``data_root``) at ``root``."""
    root = str(root)
    cfg.data_root = root
    for key in LOADER_KEYS:
        loader = cfg.get(key)
        if loader is not None and "dataset" in loader:
            loader.dataset.data_root = root


def adapt_to_machine(cfg, cuda: bool) -> list[str]:
    """Make the config runnable here; returns one line per change.

    Without a GPU: ``AmpOptimWrapper`` (which asserts CUDA) becomes ``OptimWrapper``, the
    distributed backend becomes gloo, cudnn_benchmark goes off. Everywhere: a dataloader with
    ``num_workers=0`` cannot keep ``persistent_workers``.
    """
    changes = []
    ow = cfg.get("optim_wrapper")
    if not cuda and ow is not None and ow.get("type") == "AmpOptimWrapper":
        ow.type = "OptimWrapper"
        for k in ("loss_scale", "dtype", "use_fsdp"):
            ow.pop(k, None)
        changes.append("no GPU: AmpOptimWrapper -> OptimWrapper (fp32)")
    env = cfg.get("env_cfg")
    if not cuda and env is not None:
        if env.get("dist_cfg", {}).get("backend") == "nccl":
            env.dist_cfg.backend = "gloo"
            changes.append("no GPU: distributed backend nccl -> gloo")
        env.cudnn_benchmark = False
    for key in LOADER_KEYS:
        loader = cfg.get(key)
        if loader is not None and loader.get("num_workers", 0) == 0 and loader.get("persistent_workers"):
            loader.persistent_workers = False
    return changes


def dataset_name(cfg) -> str:
    """``dataset_name`` of the config (our configs set it), else a guess from the dataset type."""
    name = cfg.get("dataset_name")
    if name:
        return str(name)
    dtype = str(cfg.get("train_dataloader", {}).get("dataset", {}).get("type", "unknown"))
    return dtype.removesuffix("Dataset").lower() or "unknown"


def parse_cfg_options(items: list[str] | None) -> dict:
    """``['a.b=1', 'c=[1,2]']`` -> {'a.b': 1, 'c': [1, 2]} (mmengine's DictAction syntax)."""
    from mmengine.config import DictAction

    out: dict = {}
    for item in items or []:
        if "=" not in item:
            raise UserError(f"--cfg-options: {item!r} is not KEY=VALUE")
        key, value = item.split("=", 1)
        out[key] = DictAction._parse_iterable(value)
    return out
