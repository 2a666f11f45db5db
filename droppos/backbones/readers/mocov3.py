"""MoCo v3 ``*.pth.tar``: ``module.base_encoder.*`` and ``module.momentum_encoder.*`` (``head.*`` = projector)."""

from __future__ import annotations

from droppos.errors import UserError

from .common import as_int, refuse_unrepresentable, tensors
from .registry import Raw, register, register_family

register_family("mocov3", {384: 12, 768: 12, 1024: 16, 1280: 16})  # MoCo v3 vits.py: vit_small has 12 heads


def _is_mocov3(obj: dict) -> bool:
    state = obj.get("state_dict")
    return isinstance(state, dict) and any(str(k).startswith(("module.base_encoder.", "base_encoder.")) for k in state)


@register("mocov3", order=40, recognise=_is_mocov3)
def read_mocov3(obj: dict, where: str, part: str | None = None):
    sd = tensors(obj["state_dict"], where, "state_dict")
    if part not in (None, "base", "momentum"):
        raise UserError(f"{where}--part {part}: a MoCo v3 checkpoint holds the 'base' and 'momentum' encoders")
    enc = "momentum_encoder" if part == "momentum" else "base_encoder"
    raw: Raw = {}
    for k, v in sd.items():
        bare = k.removeprefix("module.")
        if bare.startswith(enc + ".") and not bare.startswith(enc + ".head."):
            raw[bare[len(enc) + 1:]] = (v, None)
        else:
            raw[k] = (v, "MoCo v3 " + (bare.split(".")[0] if not bare.startswith(enc) else "projector head") + " (pretext)")
    refuse_unrepresentable([k for k, (_, r) in raw.items() if r is None], where)
    arch = str(obj.get("arch") or "")
    notes = [f"MoCo v3 checkpoint: read the {enc}" + ("" if part else " (default; --part momentum picks the other)")]
    return raw, dict(family="mocov3", epochs=as_int(obj.get("epoch")), notes=notes, model_name=arch)
