"""timm-named ViTs: a flat state dict, or DeiT's ``{"model": ...}`` wrapper (also MAE's encoder-only
release and MoCo v3's ``convert_to_deit`` output)."""

from __future__ import annotations

from .common import flat, refuse_unrepresentable, strip, tensors, timm_raw
from .dinov2 import is_dinov2, read_dinov2
from .registry import register, register_family

register_family("deit", {192: 3, 384: 6, 768: 12})  # DeiT, timm vit_{tiny,small,base}
register_family("timm", {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16})


@register("deit", order=80, recognise=lambda obj: isinstance(obj.get("model"), dict))
def read_deit(obj: dict, where: str, part: str | None = None):
    sd = tensors(obj["model"], where, "model")
    notes = ["{'model': state dict} wrapper (official DeiT, MAE encoder-only release, MoCo v3 convert_to_deit)"]
    if any(k.startswith("module.") for k in sd):
        sd = {k.removeprefix("module."): v for k, v in sd.items()}
    refuse_unrepresentable(sd, where)
    if is_dinov2(sd):
        return read_dinov2(sd, where)
    return timm_raw(sd), dict(notes=notes, family="deit" if "head.weight" in sd else None)


@register("timm", order=130, recognise=flat)
def read_timm(obj: dict, where: str, part: str | None = None):
    """A flat timm ViT state dict (also DINO's backbone-only files); ``module.`` / ``model.`` prefixes removed."""
    sd = tensors(obj, where, "state dict")
    for prefix in ("module.", "model."):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = strip(sd, prefix)
    refuse_unrepresentable(sd, where)
    return timm_raw(sd), {}
