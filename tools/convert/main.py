"""``droppos convert SRC --to {timm,detectron2,mmseg} --out DST``: any ViT source to a framework.

Examples::

    droppos convert runs/pt/encoder.pth --to timm --out vit_timm.pth
    droppos convert runs/pt/checkpoint.pth --to detectron2 --out vit_d2.pth --img-size 1024
    droppos convert DropPos_vit_base_200ep.pth --to mmseg --out vit_mmseg.pth --img-size 512
    droppos convert mae_visualize_vit_base.pth --trust-pickle --to timm --out mae_timm.pth
    droppos convert vit_small.safetensors --to timm --out t.safetensors --arch vit_small_patch16_224
    droppos convert scratch:tiny_p4_32 --to detectron2 --out scratch_d2.pth

Prints the key report (mapped / dropped / filled / resampled / unmapped / missing) and exits 1
if any backbone weight is unmapped or missing, 2 on a bad input. Besides ``DST`` it writes
``DST.json``: the report, the target architecture, the source's metadata and its backbone record
(what ``metrics.json`` of a run from these weights will name). Outputs hold tensors only and load
with ``torch.load(weights_only=True)``. Source formats: see :mod:`droppos.tools.convert.sources`;
target layouts: :mod:`droppos.tools.convert.targets`.
"""

from __future__ import annotations

from droppos.errors import UserError

import argparse
import json
import sys
from pathlib import Path

from .report import KeyReport
from .sources import FORMATS, Backbone, load_backbone
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
            trust_pickle: bool = False, arch: str | None = None, final_norm: bool = False) -> KeyReport:
    """Read ``src``, convert to ``to``, write ``out`` and ``out.json``; returns the report.

    Raises ``ValueError``/``FileNotFoundError`` on bad input and :class:`ConversionError` (nothing
    written) when a backbone weight would be lost.
    """
    bb = load_backbone(src, fmt=fmt, trust_pickle=trust_pickle, arch=arch)
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
    parser.add_argument("src", help="checkpoint file (.pth/.pt/.bin/.safetensors) or scratch:<size>_p<patch>_<img>[_s<seed>]")
    parser.add_argument("--to", required=True, choices=TARGETS, help="target framework")
    parser.add_argument("--out", required=True, type=Path, help="output file (timm may end in .safetensors)")
    parser.add_argument("--from", dest="fmt", choices=FORMATS, default=None,
                        help="force the source format instead of detecting it")
    parser.add_argument("--img-size", type=int, default=None,
                        help="resample the position embedding to this input size (default: the source's)")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="allow pickled Python objects (official MAE 'args'); unpickling can run code, "
                             "use only for files you trust")
    parser.add_argument("--arch", default=None,
                        help="architecture override: a size (base), a model name (vit_base_patch16_224) "
                             "or key=value items (num_heads=6,img_size=224)")
    parser.add_argument("--final-norm", action="store_true",
                        help="mmseg only: keep the final norm as ln1 (for MAE(final_norm=True))")
    parser.add_argument("-v", "--verbose", action="store_true", help="list every mapped key")


def run(args: argparse.Namespace) -> int:
    if args.final_norm and args.to != "mmseg":
        print("droppos convert: error: --final-norm applies to --to mmseg only", file=sys.stderr)
        return 2
    try:
        report = convert(args.src, args.to, args.out, fmt=args.fmt, img_size=args.img_size,
                         trust_pickle=args.trust_pickle, arch=args.arch, final_norm=args.final_norm)
    except ConversionError as e:
        print(e.report.summary(args.verbose))
        print(f"droppos convert: error: {e}; nothing written", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError) as e:
        print(f"droppos convert: error: {e}", file=sys.stderr)
        return 2
    print(report.summary(args.verbose))
    print(f"wrote {args.out} (+ {args.out.name}.json)")
    return 0
