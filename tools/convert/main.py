"""``droppos convert --backbone SRC --to {timm,detectron2,mmseg} --out DST``: any ViT source to a framework.

Examples::

    droppos convert --backbone runs/pt/encoder.pth --to timm --out vit_timm.pth
    droppos convert --backbone runs/pt/checkpoint.pth --to detectron2 --out vit_d2.pth --img-size 1024
    droppos convert --backbone DropPos_vit_base_200ep.pth --to mmseg --out vit_mmseg.pth --img-size 512
    droppos convert --backbone dino_vitbase16_full_checkpoint.pth --part student --to timm --out s.pth
    droppos convert --backbone vit_small.safetensors --to timm --out t.safetensors --arch num_heads=6
    droppos convert --backbone scratch:tiny_p4_32 --to detectron2 --out scratch_d2.pth

``--backbone`` and its flags are those of every command (:mod:`droppos.backbones.options`); the
source may also be given as the first argument (the old spelling). Prints the key report
(mapped / dropped / filled / resampled / unmapped / missing) and exits 1 if any backbone weight is
unmapped or missing, 2 on a bad input. The work is :func:`droppos.backbones.convert.convert`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from droppos.backbones.convert import ConversionError, convert
from droppos.backbones.options import add_backbone_arguments, backbone_options
from droppos.backbones.targets import TARGETS
from droppos.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
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
