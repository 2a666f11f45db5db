"""``droppos pretrain``: DropPos or MAE pretraining.

Examples::

    droppos pretrain --data data/fmnist --output runs/droppos_tiny --model tiny --patch-size 4 --img-size 32 --epochs 10
    torchrun --nproc-per-node 8 -m droppos.cli pretrain --data /imagenet --output runs/b16 --epochs 800
    droppos pretrain --output runs/droppos_tiny --resume          # continue where it stopped

Every option of ``PretrainConfig`` is a flag; ``--config FILE.yaml`` sets many at once; with
``--resume`` the run folder's saved config is the base and flags given now override it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from droppos.utils.config import add_dataclass_arguments, dataclass_from_args, load_mapping

from .config import PretrainConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML/JSON file of options (flags override it)")
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
        if (out / "metrics.json").is_file() and (out / "encoder.pth").is_file():
            print(f"{out}: run already finished (encoder.pth, metrics.json); nothing to do")
            return 0
    cfg = dataclass_from_args(PretrainConfig, args, base=base)
    PretrainRun(cfg, resume=args.resume, overwrite=args.overwrite).train()
    return 0
