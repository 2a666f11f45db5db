"""``droppos pretrain``: DropPos or MAE pretraining.

Examples::

    droppos pretrain --data data/fmnist --output runs/droppos_tiny --model tiny --patch-size 4 --img-size 32 --epochs 10
    torchrun --nproc-per-node 8 -m droppos.cli pretrain --data /imagenet --output runs/b16 --epochs 800
    droppos pretrain --output runs/droppos_tiny --resume          # continue where it stopped
    droppos pretrain --config fmnist_tiny                         # a shipped config (pretrain/configs)

Every option of ``PretrainConfig`` is a flag; ``--config FILE.yaml`` sets many at once; with
``--resume`` the run folder's saved config is the base and flags given now override it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from droppos.utils.config import add_dataclass_arguments, dataclass_from_args, load_mapping

from .config import METHOD_DEFAULTS, PretrainConfig

CONFIG_DIR = Path(__file__).parent / "configs"


def shipped_configs() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def resolve_config(value: str) -> str:
    """A path, or the name of a config shipped in ``pretrain/configs``."""
    if Path(value).is_file() or value.endswith((".yaml", ".yml", ".json")):
        return value
    if (CONFIG_DIR / f"{value}.yaml").is_file():
        return str(CONFIG_DIR / f"{value}.yaml")
    raise argparse.ArgumentTypeError(f"no config file {value!r} and no shipped config of that name; "
                                     f"shipped: {', '.join(shipped_configs())}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=resolve_config,
                        help=f"YAML/JSON file of options, or a shipped name ({', '.join(shipped_configs())}); flags override it")
    run = parser.add_mutually_exclusive_group()
    run.add_argument("--resume", action="store_true", help="continue the run in --output (start it if empty)")
    run.add_argument("--overwrite", action="store_true", help="discard the run in --output and start over")
    add_dataclass_arguments(parser, PretrainConfig)


def run(args: argparse.Namespace) -> int:
    from .engine import PretrainRun

    base = None
    if args.resume:
        out = Path(args.output or PretrainConfig().output)
        if (out / "config.json").is_file():
            base = load_mapping(out / "config.json")
            base.pop("stop_after", None)  # a limit of the process that stopped, never of the run
        if (out / "metrics.json").is_file() and (out / "encoder.pth").is_file():
            print(f"{out}: run already finished (encoder.pth, metrics.json); nothing to do")
            return 0
    if base is None:  # a new run: the method's own defaults under the config file and the flags
        method = args.method or (load_mapping(args.config).get("method") if args.config else None) or "droppos"
        base = dict(METHOD_DEFAULTS.get(method, {}))
    cfg = dataclass_from_args(PretrainConfig, args, base=base)
    PretrainRun(cfg, resume=args.resume, overwrite=args.overwrite).train()
    return 0
