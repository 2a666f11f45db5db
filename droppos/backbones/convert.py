"""Convert a backbone into a framework's key names, and write it (the library behind ``droppos convert``).

    from droppos.backbones.source import load_backbone
    from droppos.backbones.convert import convert_backbone
    bb = load_backbone("runs/pt/encoder.pth")             # ViTBackbone: state_dict, arch, meta, ...
    sd, report = convert_backbone(bb, "detectron2", img_size=1024)

:func:`convert` writes ``DST`` and ``DST.json``: the report, the target architecture, the source's
metadata and its backbone record (what ``metrics.json`` of a run from these weights will name).
Outputs hold tensors only and load with ``torch.load(weights_only=True)``. Target layouts:
:mod:`.targets`.
"""

from __future__ import annotations

import json
from pathlib import Path

from droppos.errors import UserError
from droppos.utils.checkpoint import atomic_save

from .options import BackboneOptions
from .report import KeyReport
from .source import ViTBackbone
from .targets import CONVERTERS, TARGETS, target_arch


class ConversionError(UserError):
    """Some backbone weight is unmapped or missing; ``report`` says which."""

    def __init__(self, report: KeyReport):
        super().__init__(f"{report.source} -> {report.target}: {len(report.unmapped)} unmapped and "
                         f"{len(report.missing)} missing backbone weights (see the key report)")
        self.report = report


def convert_backbone(bb: ViTBackbone, to: str, img_size: int | None = None, final_norm: bool = False) -> tuple[dict, KeyReport]:
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
    opts = options or BackboneOptions(backbone=str(src), source_format=fmt, trust_pickle=trust_pickle, arch=arch)
    if Path(opts.backbone).exists() and Path(out).resolve() == Path(opts.backbone).resolve():
        raise UserError(f"--out {out} is the source file itself; write the conversion to another file")
    bb = opts.read()
    sd, report = convert_backbone(bb, to, img_size, final_norm)
    out = save_converted(sd, to, out)
    sidecar = {"target": to, "file": out.name, "arch": target_arch(bb, img_size).to_dict(), "source_arch": bb.arch.to_dict(),
               "meta": {k: v for k, v in bb.meta.items() if k != "config"}, "backbone": bb.backbone,
               "report": report.to_dict()}
    if to == "mmseg":
        sidecar["final_norm"] = final_norm
    out.with_name(out.name + ".json").write_text(json.dumps(sidecar, indent=2) + "\n")
    return report
