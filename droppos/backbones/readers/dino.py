"""DINO and iBOT: full checkpoints (``teacher`` / ``student``), one network saved alone (``backbone.*`` +
``head.*``, the student with DDP's ``module.``), and ``{"state_dict": ...}`` backbones."""

from __future__ import annotations

from droppos.errors import UserError

from .common import as_int, flat, refuse_unrepresentable, tensors, timm_raw, under_prefix
from .registry import register, register_family

register_family("dino", {384: 6, 768: 12})  # DINO vision_transformer.py
register_family("ibot", {384: 6, 768: 12, 1024: 16})


def _has_networks(obj: dict) -> bool:
    return isinstance(obj.get("teacher"), dict) or isinstance(obj.get("student"), dict)


def _network(sd: dict, name: str, where: str, ibot: bool = False):
    """One DINO / iBOT network (``backbone.*`` + its projection head; DDP's ``module.`` removed) -> (raw, family)."""
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    raw = under_prefix(sd, "backbone.", lambda k: f"{k.split('.')[0]} of the {name} (projection head: pretext)")
    if not any(r is None for _, r in raw.values()):
        raise UserError(f"{where}{name} has no 'backbone.' weights (keys: {', '.join(list(sd)[:6])})")
    ibot = ibot or any(k == "masked_embed" for k in raw) or any(".last_layer2." in k for k in sd)
    raw = {k: (v, "masked_embed (iBOT pretext token)" if k == "masked_embed" else r) for k, (v, r) in raw.items()}
    refuse_unrepresentable([k for k, (_, r) in raw.items() if r is None], where)
    return raw, "ibot" if ibot else "dino"


@register("dino", order=30, recognise=_has_networks)
def read_dino(obj: dict, where: str, part: str | None = None):
    """DINO / iBOT full checkpoint: ``teacher`` (``backbone.*``) and ``student`` (``module.backbone.*``)."""
    have = [p for p in ("teacher", "student") if isinstance(obj.get(p), dict)]
    if part is not None and part not in have:
        raise UserError(f"{where}--part {part}: this checkpoint holds {' and '.join(have)}")
    chosen = part or have[0]  # the teacher when the file holds it
    other = "student" if chosen == "teacher" else "teacher"
    raw, family = _network(tensors(obj[chosen], where, chosen), chosen, where, ibot="ibot_loss" in obj)
    default = "" if part else f" (default; --part {other} picks the other)"
    notes = [f"{family.upper()} full checkpoint: read the {chosen}{default}"]
    if other in have:
        notes.append(f"dropped the {other} network: {len(obj[other])} tensors")
    args = obj.get("args")
    epochs = as_int(obj.get("epoch"))
    hint = {"patch_size": int(args.patch_size)} if as_int(getattr(args, "patch_size", None)) else {}
    return raw, dict(family=family, epochs=epochs, notes=notes, arch_hint=hint or None,
                     model_name=str(getattr(args, "arch", "") or ""), part=chosen)


def _network_alone(obj: dict) -> bool:
    return flat(obj) and any(str(k).removeprefix("module.").startswith("backbone.patch_embed.") for k in obj)


@register("dino_net", order=105, recognise=_network_alone)
def read_dino_net(obj: dict, where: str, part: str | None = None):
    """One DINO / iBOT network saved alone (``teacher.state_dict()``: ``backbone.*`` + ``head.*``; the student
    with ``module.``, and in iBOT its ``masked_embed``)."""
    student = all(str(k).startswith("module.") for k in obj)
    name = "student" if student else "network"
    raw, family = _network(tensors(obj, where, "state dict"), name, where)
    notes = [f"{family.upper()} {name} saved alone: its backbone read, its "
             "projection head dropped"]
    return raw, dict(family=family, notes=notes)


@register("ibot", order=60, recognise=lambda obj: isinstance(obj.get("state_dict"), dict))
def read_ibot(obj: dict, where: str, part: str | None = None):
    """``{'state_dict': sd}`` with timm keys (iBOT's teacher checkpoint, extracted backbones)."""
    sd = tensors(obj["state_dict"], where, "state_dict")
    sd = {k.removeprefix("module.").removeprefix("backbone."): v for k, v in sd.items()}
    refuse_unrepresentable(sd, where)
    raw = timm_raw(sd, pretext=("masked_embed",))
    family = "ibot" if "masked_embed" in sd else None
    return raw, dict(family=family, epochs=as_int(obj.get("epoch")), notes=["{'state_dict': ...} wrapper"])
