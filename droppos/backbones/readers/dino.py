"""DINO and iBOT: full checkpoints (``teacher`` / ``student``) and ``{"state_dict": ...}`` backbones."""

from __future__ import annotations

from droppos.errors import UserError

from .common import as_int, refuse_unrepresentable, tensors, timm_raw, under_prefix
from .registry import register, register_family

register_family("dino", {384: 6, 768: 12})  # DINO vision_transformer.py
register_family("ibot", {384: 6, 768: 12, 1024: 16})


def _has_networks(obj: dict) -> bool:
    return isinstance(obj.get("teacher"), dict) or isinstance(obj.get("student"), dict)


@register("dino", order=30, recognise=_has_networks)
def read_dino(obj: dict, where: str, part: str | None = None):
    """DINO / iBOT full checkpoint: ``teacher`` (``backbone.*``) and ``student`` (``module.backbone.*``)."""
    have = [p for p in ("teacher", "student") if isinstance(obj.get(p), dict)]
    if part is not None and part not in have:
        raise UserError(f"{where}--part {part}: this checkpoint holds {' and '.join(have)}")
    chosen = part or ("teacher" if "teacher" in have else have[0])
    sd = tensors(obj[chosen], where, chosen)
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    raw = under_prefix(sd, "backbone.", lambda k: f"{k.split('.')[0]} of the {chosen} (projection head: pretext)")
    if not any(r is None for _, r in raw.values()):
        raise UserError(f"{where}{chosen} has no 'backbone.' weights (keys: {', '.join(list(sd)[:6])})")
    ibot = any(k == "masked_embed" for k in raw) or "ibot_loss" in obj
    family = "ibot" if ibot else "dino"
    raw = {k: (v, "masked_embed (iBOT pretext token)" if k == "masked_embed" else r) for k, (v, r) in raw.items()}
    refuse_unrepresentable([k for k, (_, r) in raw.items() if r is None], where)
    default = "" if part else f" (default; --part {'student' if chosen == 'teacher' else 'teacher'} picks the other)"
    notes = [f"{family.upper() if ibot else 'DINO'} full checkpoint: read the {chosen}{default}"]
    if len(have) == 2:
        notes.append(f"dropped the {'student' if chosen == 'teacher' else 'teacher'} network: "
                     f"{len(obj['student' if chosen == 'teacher' else 'teacher'])} tensors")
    args = obj.get("args")
    epochs = as_int(obj.get("epoch"))
    hint = {"patch_size": int(args.patch_size)} if as_int(getattr(args, "patch_size", None)) else {}
    return raw, dict(family=family, epochs=epochs, notes=notes, arch_hint=hint or None,
                     model_name=str(getattr(args, "arch", "") or ""), part=chosen)


@register("ibot", order=60, recognise=lambda obj: isinstance(obj.get("state_dict"), dict))
def read_ibot(obj: dict, where: str, part: str | None = None):
    """``{'state_dict': sd}`` with timm keys (iBOT's teacher checkpoint, extracted backbones)."""
    sd = tensors(obj["state_dict"], where, "state_dict")
    sd = {k.removeprefix("module.").removeprefix("backbone."): v for k, v in sd.items()}
    refuse_unrepresentable(sd, where)
    raw = timm_raw(sd, pretext=("masked_embed",))
    family = "ibot" if "masked_embed" in sd else None
    return raw, dict(family=family, epochs=as_int(obj.get("epoch")), notes=["{'state_dict': ...} wrapper"])
