"""``droppos convert --backbone SRC --to {timm,detectron2,mmseg} --out DST``: any ViT source to a framework.

Examples::

    droppos convert --backbone runs/pt/encoder.pth --to timm --out vit_timm.pth
    droppos convert --backbone runs/pt/checkpoint.pth --to detectron2 --out vit_d2.pth --img-size 1024
    droppos convert --backbone DropPos_vit_base_200ep.pth --to mmseg --out vit_mmseg.pth --img-size 512
    droppos convert --backbone dino_vitbase16_full_checkpoint.pth --part student --to timm --out s.pth
    droppos convert --backbone vit_small.safetensors --to timm --out t.safetensors --arch num_heads=6
    droppos convert --backbone scratch:tiny_p4_32 --to detectron2 --out scratch_d2.pth

``--backbone`` and its flags are those of every command (:mod:`droppos.backbones.options`); the
source may also be given as the first argument (the old spelling).

Prints the key report (mapped / dropped / filled / resampled / unmapped / missing) and exits 1
if any backbone weight is unmapped or missing, 2 on a bad input. Besides ``DST`` it writes
``DST.json``: the report, the target architecture, the source's metadata and its backbone record
(what ``metrics.json`` of a run from these weights will name). Outputs hold tensors only and load
with ``torch.load(weights_only=True)``. Source formats: see :mod:`droppos.tools.convert.sources`;
target layouts: :mod:`droppos.tools.convert.targets`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from droppos.errors import UserError

from .report import KeyReport
from .sources import Backbone
from .targets import CONVERTERS, TARGETS, target_arch


class ConversionError(UserError):
    """Some backbone weight is unmapped or missing; ``report`` says which."""

    def __init__(self, report: KeyReport):
        super().__init__(f"{report.source} -> {report.target}: {len(report.unmapped)} unmapped and "
                         f"{len(report.missing)} missing backbone weights (see the key report)")
        self.report = report


def convert_backbone(bb: Backbone, to: str, img_size: int | None = None, final_norm: bool = False) -> tuple[dict, KeyReport]:
    """``(state_dict, report)`` of ``bb`` in the key names of ``to``; raises :class:`ConversionError`."""
    if to not in TARGETS:
        raise ValueError(f"unknown target {to!r}; choose one of {', '.join(TARGETS)}")
    kw = {"final_norm": final_norm} if to == "mmseg" else {}
    sd, report = CONVERTERS[to](bb, img_size, **kw)
    if not report.ok:
        raise ConversionError(report)
    return sd, report


def save_converted(sd: dict, to: str, out: str | Path) -> Path:
    """Write ``sd`` in the target's file layout (timm: flat or .safetensors; detectron2: {"model"}; mmseg: {"state_dict"})."""
    from droppos.utils.checkpoint import atomic_save

    out = Path(out)
    if out.suffix == ".safetensors":
        if to != "timm":
            raise ValueError(f"{out}: safetensors output is for --to timm only; {to} reads .pth files")
        from safetensors.torch import save_file

        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        save_file(sd, str(tmp))
        tmp.replace(out)
        return out
    payload = {"timm": sd, "detectron2": {"model": sd}, "mmseg": {"state_dict": sd}}[to]
    return atomic_save(payload, out)


def convert(src: str | Path, to: str, out: str | Path, fmt: str | None = None, img_size: int | None = None,
            trust_pickle: bool = False, arch: str | None = None, final_norm: bool = False,
            options=None) -> KeyReport:
    """Read ``src``, convert to ``to``, write ``out`` and ``out.json``; returns the report.

    ``options`` (a :class:`~droppos.backbones.options.BackboneOptions`) replaces ``fmt``,
    ``trust_pickle`` and ``arch`` when given (the command line's backbone flags). Raises
    :class:`~droppos.errors.UserError` on bad input and :class:`ConversionError` (nothing written)
    when a backbone weight would be lost. ``out`` never replaces the source.
    """
    from droppos.backbones.options import BackboneOptions

    opts = options or BackboneOptions(backbone=str(src), source_format=fmt, trust_pickle=trust_pickle, arch=arch)
    if Path(opts.backbone).exists() and Path(out).resolve() == Path(opts.backbone).resolve():
        raise UserError(f"--out {out} is the source file itself; write the conversion to another file")
    bb = opts.read()
    sd, report = convert_backbone(bb, to, img_size, final_norm)
    out = save_converted(sd, to, out)
    sidecar = {"target": to, "file": out.name, "arch": target_arch(bb, img_size), "source_arch": bb.arch,
               "meta": {k: v for k, v in bb.meta.items() if k != "config"}, "backbone": bb.backbone,
               "report": report.to_dict()}
    if to == "mmseg":
        sidecar["final_norm"] = final_norm
    out.with_name(out.name + ".json").write_text(json.dumps(sidecar, indent=2) + "\n")
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from droppos.backbones.options import add_backbone_arguments

    parser.add_argument("src", nargs="?", default=None, help=argparse.SUPPRESS)  # old spelling of --backbone
    add_backbone_arguments(parser)
    parser.add_argument("--to", required=True, choices=TARGETS, help="target framework")
    parser.add_argument("--out", required=True, type=Path, help="output file (timm may end in .safetensors)")
    parser.add_argument("--img-size", type=int, default=None,
                        help="resample the position embedding to this input size (default: the source's)")
    parser.add_argument("--final-norm", action="store_true",
                        help="mmseg only: keep the final norm as ln1 (for MAE(final_norm=True))")
    parser.add_argument("-v", "--verbose", action="store_true", help="list every mapped key")


def run(args: argparse.Namespace) -> int:
    from droppos.backbones.options import backbone_options

    if args.final_norm and args.to != "mmseg":
        raise UserError("--final-norm applies to --to mmseg only")
    if args.src and args.backbone and args.src != args.backbone:
        raise UserError(f"two sources given ({args.src} and --backbone {args.backbone}); give one")
    args.backbone = args.backbone or args.src
    if not args.backbone:
        raise UserError("no source given: --backbone SRC (a checkpoint or scratch:<size>_p<patch>_<img>)")
    try:
        report = convert(args.backbone, args.to, args.out, img_size=args.img_size, final_norm=args.final_norm,
                         options=backbone_options(args))
    except ConversionError as e:
        print(e.report.summary(args.verbose))
        print(f"droppos convert: error: {e}; nothing written", file=sys.stderr)
        return 1
    print(report.summary(args.verbose))
    print(f"wrote {args.out} (+ {args.out.name}.json)")
    return 0
