"""``droppos classify {finetune,linear,knn}``: classification transfer of any backbone.

Examples::

    droppos classify finetune --backbone runs/pt/encoder.pth --output runs/ft --epochs 100
    droppos classify linear --backbone DropPos_vit_base_200ep.pth --arch base --data /imagenet --output runs/lin
    droppos classify knn --backbone scratch:tiny_p4_32 --output runs/knn_scratch
    torchrun --nproc-per-node 8 -m droppos.cli classify finetune --backbone encoder.pth --data /imagenet --output runs/ft
    droppos classify finetune --output runs/ft --resume          # continue where it stopped

``--backbone`` and its flags are the same as in every command (:mod:`droppos.backbones.options`). ``--data`` is an ImageFolder root with
``train/`` and ``val/`` (default: the embedded Fashion-MNIST, built on first use). Each option of
the protocol's config (:mod:`.config`) is a flag; ``--config FILE.yaml`` sets many at once; with
``--resume`` the run folder's saved config is the base and flags given now override it. Every run
writes ``metrics.json`` (top-1, top-5) into ``--output``.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from droppos.errors import UserError
from droppos.utils.config import add_dataclass_arguments, dataclass_from_args, load_mapping

from .config import CONFIGS, PROTOCOLS

HELP = {"finetune": "end-to-end fine-tuning (MAE/DropPos recipe)",
        "linear": "linear probe on frozen [cls] features (MAE protocol)",
        "knn": "weighted k-NN on frozen features (k=20, T=0.07)"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="protocol", metavar="PROTOCOL", required=True)
    for name in PROTOCOLS:
        p = sub.add_parser(name, help=HELP[name], description=HELP[name])
        p.add_argument("--config", help="YAML/JSON file of options (flags override it)")
        group = p.add_mutually_exclusive_group()
        group.add_argument("--resume", action="store_true", help="continue the run in --output (start it if empty)")
        group.add_argument("--overwrite", action="store_true", help="discard the run in --output and start over")
        add_dataclass_arguments(p, CONFIGS[name])


def run(args: argparse.Namespace) -> int:
    cls = CONFIGS[args.protocol]
    base = None
    if args.resume:
        out = Path(args.output or cls().output)
        if (out / "config.json").is_file():
            base = load_mapping(out / "config.json")
            check_run_kind(out, base, args.protocol)
    cfg = dataclass_from_args(cls, args, base=base)
    run_protocol(cfg, args.protocol, resume=args.resume, overwrite=args.overwrite)
    return 0


def check_run_kind(out: Path, saved: dict, protocol: str) -> None:
    """A folder of another kind of run is named as such before its options are read as this protocol's."""
    def fits(name: str) -> bool:
        return set(saved) <= {f.name for f in dataclasses.fields(CONFIGS[name])}

    if fits(protocol):
        return
    other = next((name for name in CONFIGS if fits(name)), None)
    if other is not None:
        raise UserError(f"{out}: holds a classify {other} run, not {protocol}; resume it with `droppos classify {other} "
                        f"--output {out} --resume`, or give {protocol} another --output")
    foreign = sorted(set(saved) - set().union(*({f.name for f in dataclasses.fields(c)} for c in CONFIGS.values())))
    raise UserError(f"{out}: its config.json is not a classify run's (options no protocol has: {', '.join(foreign[:5])}); "
                    "give another --output")


def run_protocol(cfg, protocol: str, resume: bool = False, overwrite: bool = False) -> dict[str, float]:
    """Run one protocol from its config (the Python entry point the benchmark uses); returns its metrics.

    With ``resume``, a run folder that already holds ``metrics.json`` is finished: its metrics are
    returned and nothing runs.
    """
    from .common import prepare

    done = Path(cfg.output) / "metrics.json"
    if resume and done.is_file():
        from droppos.runs.records import read_metrics

        print(f"{cfg.output}: run already finished (metrics.json); nothing to do")
        return read_metrics(done)["metrics"]

    setup = prepare(cfg, protocol, resume=resume, overwrite=overwrite)
    if protocol == "finetune":
        from .finetune import run_finetune as fn
    elif protocol == "linear":
        from .linear import run_linear as fn
    else:
        from .knn import run_knn as fn
    return fn(setup)
