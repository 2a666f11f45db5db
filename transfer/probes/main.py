"""``droppos probe {position,order}``: location-awareness probes of a frozen backbone.

Examples::

    droppos probe position --backbone runs/pt/encoder.pth --data /tmp/fm32 --output runs/probe_pos
    droppos probe order --backbone scratch:tiny_p4_32 --data /tmp/fm32 --output runs/probe_order
    droppos probe order --backbone runs/pt/encoder.pth --classifier runs/ft --output runs/probe_order_ft
    droppos probe position --backbone mae_pretrain_vit_base.pth --from mae --data /imagenet --output runs/pp

``position`` trains a linear classifier on each token's frozen feature to predict its grid cell,
with and without position embeddings (:mod:`.position`); ``order`` measures how much the frozen
feature and a classifier's accuracy change when the image's patches are shuffled (:mod:`.order`).
``--backbone`` and its flags are the same as in every command (:mod:`droppos.backbones.options`); ``--data`` is an ImageFolder root with
``train/`` and ``val/`` (default: the embedded Fashion-MNIST, built on first use). Each run writes
``metrics.json`` (``task: probe``) and its resolved config into ``--output``.
"""

from __future__ import annotations

import argparse

from droppos.utils.config import add_dataclass_arguments, dataclass_from_args

from .config import CONFIGS, PROTOCOLS

HELP = {"position": "linear probe of each token's grid position, without and with position embeddings",
        "order": "change of the frozen feature and of a classifier's accuracy when the patches are shuffled"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="protocol", metavar="PROTOCOL", required=True)
    for name in PROTOCOLS:
        p = sub.add_parser(name, help=HELP[name], description=HELP[name])
        p.add_argument("--config", help="YAML/JSON file of options (flags override it)")
        p.add_argument("--overwrite", action="store_true", help="replace the finished probe in --output")
        add_dataclass_arguments(p, CONFIGS[name])


def run(args: argparse.Namespace) -> int:
    cfg = dataclass_from_args(CONFIGS[args.protocol], args)
    run_probe(cfg, args.protocol, overwrite=args.overwrite)
    return 0


def run_probe(cfg, protocol: str, overwrite: bool = False) -> dict[str, float]:
    """Run one probe from its config (the Python entry point the benchmark uses); returns its metrics."""
    from .common import setup_probe

    s = setup_probe(cfg, protocol, overwrite=overwrite)
    if protocol == "position":
        from .position import run_position as fn
    else:
        from .order import run_order as fn
    return fn(s)
