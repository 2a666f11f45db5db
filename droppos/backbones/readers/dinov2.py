"""DINOv2 (timm or torch.hub names): layer scale folded into the projections, register tokens kept."""

from __future__ import annotations

import re

from droppos.errors import UserError

from .common import flat, fold_scale, generic_path, refuse_unrepresentable, tensors, timm_raw
from .registry import Raw, register, register_family

register_family("dinov2", {384: 6, 768: 12, 1024: 16, 1536: 24})

_LAYER_SCALE = re.compile(r"\.ls[12]\.gamma$")


def is_dinov2(sd: dict) -> bool:
    """Layer scale ``ls1.gamma``, register tokens, or a 2-D mask token beside timm blocks."""
    return any(_LAYER_SCALE.search(k) for k in sd) or "register_tokens" in sd or (
        "mask_token" in sd and "blocks.0.attn.qkv.weight" in sd and sd["mask_token"].ndim == 2)


@register("dinov2", order=120, recognise=lambda obj: flat(obj) and is_dinov2(obj))
def read_dinov2(obj: dict, where: str, part: str | None = None):
    sd = dict(tensors(obj, where, "state dict"))
    if any(".mlp.w12." in k for k in sd):
        raise UserError(f"{where}a DINOv2 with SwiGLU MLP (mlp.w12, ViT-g) cannot be represented exactly as a plain "
                        "ViT encoder; " + generic_path(where, "vit_giant_patch14_dinov2"))
    refuse_unrepresentable([k for k in sd if not _LAYER_SCALE.search(k)], where)
    notes = []
    raw: Raw = {}
    if "mask_token" in sd:
        raw["mask_token"] = (sd.pop("mask_token"), "DINOv2 mask token (iBOT pretext)")
    if "register_tokens" in sd:  # torch.hub names: registers after [cls], no position; [cls] keeps its row
        sd["reg_token"] = sd.pop("register_tokens")
    gammas = {k: sd.pop(k) for k in [k for k in sd if _LAYER_SCALE.search(k)]}
    for k, g in gammas.items():
        i, which = re.match(r"blocks\.(\d+)\.ls([12])\.gamma$", k).groups()
        fold_scale(sd, f"blocks.{i}.attn.proj" if which == "1" else f"blocks.{i}.mlp.fc2", g)
    if gammas:
        notes.append(f"layer scale folded into {len(gammas)} projections (attn.proj, mlp.fc2): "
                     "W' = gamma * W, b' = gamma * b (the same network)")
    if "reg_token" in sd:
        notes.append(f"{sd['reg_token'].shape[1]} register tokens kept as prefix tokens after [cls] (no position)")
    raw.update(timm_raw(sd))
    return raw, dict(family="dinov2", notes=notes)
