"""Write a :class:`~.source.ViTBackbone` in the key names of each downstream framework.

Each ``to_<target>(bb, img_size=None)`` returns ``(state_dict, KeyReport)``. The position
embedding is bicubically resampled to ``img_size // patch_size`` (default: the source's grid);
the [cls] row is kept as is. Every source weight is either mapped or dropped with a reason, and
every target key is checked against the list the target architecture needs (``unmapped`` /
``missing`` in the report, both errors).

timm (``VisionTransformer(..., qkv_bias=True, norm_layer=LayerNorm(eps=1e-6), num_classes=0)``):
    the same names (this project's encoder *is* timm's). File: a flat state dict.

detectron2 ``ViT`` (ViTDet backbone, as ``backbone.net.*`` of the detector):
    ``patch_embed.proj``, ``pos_embed`` (with the [cls] row: ``pretrain_use_cls_token=True``;
    detectron2 resamples it to the input inside the model, from ``pretrain_img_size``),
    ``blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``. ViTDet has no [cls] token and
    no final norm, so ``cls_token`` and ``norm.*`` are dropped (listed). Relative-position tables
    (``use_rel_pos=True``) are new in ViTDet and stay at their zero init. File: ``{"model": sd}``
    (what ``DetectionCheckpointer`` loads without matching heuristics). Build the ViT with
    ``pretrain_img_size`` = the converted size.

mmsegmentation ``MAE`` backbone (BEiT-style names):
    ``patch_embed.projection``, ``cls_token``, ``pos_embed``, ``layers.N.ln1``,
    ``layers.N.attn.qkv`` (full q/k/v bias, as mmseg's ``MAE`` uses ``bias=True``),
    ``layers.N.attn.proj``, ``layers.N.ln2``, ``layers.N.ffn.layers.0.0`` (fc1),
    ``layers.N.ffn.layers.1`` (fc2). The source has no layer scale and no relative position
    bias, so ``layers.N.gamma_{1,2}`` are written as ones and
    ``layers.N.attn.relative_position_bias_table`` as zeros: the loaded backbone is then the
    source network whatever ``init_values`` the config uses. The final ``norm`` maps to ``ln1``
    with ``final_norm=True``; mmseg's MAE configs use ``final_norm=False`` (dropped, listed).
    Use ``norm_cfg=dict(type='LN', eps=1e-6)`` as the packaged ``upernet_mae.py`` does.
    File: ``{"state_dict": sd}`` for ``backbone.init_cfg=dict(type='Pretrained', checkpoint=...)``.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch

from droppos.errors import UserError

from .arch import ViTArch, encoder_shapes
from .report import KeyReport
from .readers.common import generic_path
from .source import ViTBackbone

TARGETS = ("timm", "detectron2", "mmseg")
D2_PREFIX = "backbone.net."

# one rename rule: (source regex, target template or None = dropped, reason when dropped)
Rule = tuple[str, str | None, str]

_TIMM_RULES: list[Rule] = [(r"^(.*)$", r"\1", "")]
_D2_RULES: list[Rule] = [
    (r"^cls_token$", None, "detectron2 ViT has no [cls] token (its position row stays in pos_embed)"),
    (r"^norm\.(weight|bias)$", None, "ViTDet has no final norm"),
    (r"^(.*)$", D2_PREFIX + r"\1", ""),
]
_MMSEG_BLOCK = {"norm1": "ln1", "norm2": "ln2", "attn.qkv": "attn.qkv", "attn.proj": "attn.proj",
                "mlp.fc1": "ffn.layers.0.0", "mlp.fc2": "ffn.layers.1"}


def _mmseg_rules(final_norm: bool) -> list[Rule]:
    rules: list[Rule] = [
        (r"^cls_token$", "cls_token", ""),
        (r"^pos_embed$", "pos_embed", ""),
        (r"^patch_embed\.proj\.(weight|bias)$", r"patch_embed.projection.\1", ""),
        (r"^norm\.(weight|bias)$", r"ln1.\1" if final_norm else None, "mmseg MAE with final_norm=False has no final norm"),
    ]
    rules += [(rf"^blocks\.(\d+)\.{re.escape(src)}\.(weight|bias)$", rf"layers.\1.{dst}.\2", "")
              for src, dst in _MMSEG_BLOCK.items()]
    return rules


# ---------------------------------------------------------------------------------------- expected keys
def timm_keys(arch: ViTArch) -> set[str]:
    return set(encoder_shapes(arch))


def detectron2_keys(arch: ViTArch) -> set[str]:
    return {D2_PREFIX + k for k in encoder_shapes(arch) if k != "cls_token" and not k.startswith("norm.")}


def mmseg_keys(arch: ViTArch, final_norm: bool = False) -> set[str]:
    keys = {"cls_token", "pos_embed", "patch_embed.projection.weight", "patch_embed.projection.bias"}
    for i in range(arch.depth):
        for dst in _MMSEG_BLOCK.values():
            keys |= {f"layers.{i}.{dst}.weight", f"layers.{i}.{dst}.bias"}
        keys |= {f"layers.{i}.gamma_1", f"layers.{i}.gamma_2", f"layers.{i}.attn.relative_position_bias_table"}
    if final_norm:
        keys |= {"ln1.weight", "ln1.bias"}
    return keys


# ---------------------------------------------------------------------------------------- conversion
def _convert(bb: ViTBackbone, target: str, rules: list[Rule], expected: set[str], img_size,
             fill: Callable[[dict, ViTArch], list[tuple[str, str]]] | None = None) -> tuple[dict, KeyReport]:
    from droppos.models.pos_embed import resample_pos_embed  # droppos.models imports timm

    if bb.arch.reg_tokens and target != "timm":
        raise UserError(f"{bb.meta.get('source', '?')}: a ViT with {bb.arch.reg_tokens} register tokens (DINOv2 style): "
                        f"{target}'s plain ViT has none; " + generic_path(bb.meta.get('source', '?') + ": "))
    report = KeyReport(source=bb.meta.get("source", "?"), target=target, dropped=list(bb.dropped), notes=list(bb.notes))
    new = bb.arch.at(img_size)
    old_grid, new_grid = bb.arch.grid, new.grid
    compiled = [(re.compile(p), t, why) for p, t, why in rules]
    out: dict[str, torch.Tensor] = {}
    for key, value in bb.state_dict.items():
        rule = next(((pat, t, why) for pat, t, why in compiled if pat.match(key)), None)
        if rule is None:
            report.unmapped.append(key)
            continue
        pat, template, why = rule
        if template is None:
            report.dropped.append((key, why))
            continue
        new_key = pat.sub(template, key)
        if key == "pos_embed" and tuple(new_grid) != tuple(old_grid):
            value = resample_pos_embed(value, new_grid, 1, old_grid)
            report.resampled.append(f"{key}: grid {old_grid[0]}x{old_grid[1]} -> {new_grid[0]}x{new_grid[1]} (bicubic)")
        out[new_key] = value.detach().clone().contiguous()
        report.mapped.append((key, new_key))
    if fill is not None:
        report.filled += fill(out, new)
    report.unmapped += sorted(set(out) - expected)  # a rule produced a name the target does not have
    report.missing = sorted(expected - set(out))
    for k in report.unmapped:
        out.pop(k, None)
    return out, report


def to_timm(bb: ViTBackbone, img_size: int | None = None) -> tuple[dict, KeyReport]:
    """State dict for timm's ``VisionTransformer`` (see :func:`timm_kwargs`). With register tokens
    it is timm's DINOv2-with-registers form (``no_embed_class``: the [cls] position row is added
    to ``cls_token``, the table keeps the patch rows): the same network."""
    sd, report = _convert(bb, "timm", _TIMM_RULES, timm_keys(bb.arch.at(img_size)), img_size)
    if bb.arch.reg_tokens and "pos_embed" in sd:
        sd["cls_token"] = sd["cls_token"] + sd["pos_embed"][:, :1]
        sd["pos_embed"] = sd["pos_embed"][:, 1:].contiguous()
        report.notes.append("register tokens: written in timm's no_embed_class form ([cls] position folded into cls_token)")
    return sd, report


def to_detectron2(bb: ViTBackbone, img_size: int | None = None) -> tuple[dict, KeyReport]:
    """``backbone.net.*`` keys of detectron2's ViTDet ``ViT`` (see :func:`detectron2_kwargs`)."""
    return _convert(bb, "detectron2", _D2_RULES, detectron2_keys(bb.arch.at(img_size)), img_size)


def to_mmseg(bb: ViTBackbone, img_size: int | None = None, final_norm: bool = False) -> tuple[dict, KeyReport]:
    """Keys of mmseg's ``MAE`` backbone (see :func:`mmseg_kwargs`)."""
    def fill(out: dict, a: ViTArch) -> list[tuple[str, str]]:
        d, heads, (gh, gw) = a.embed_dim, a.num_heads, a.grid
        filled = []
        for i in range(a.depth):
            for g in ("gamma_1", "gamma_2"):
                out[f"layers.{i}.{g}"] = torch.ones(d)
                filled.append((f"layers.{i}.{g}", "layer scale = 1 (the source has none)"))
            k = f"layers.{i}.attn.relative_position_bias_table"
            out[k] = torch.zeros((2 * gh - 1) * (2 * gw - 1) + 3, heads)
            filled.append((k, "relative position bias = 0 (the source has none)"))
        return filled

    return _convert(bb, "mmseg", _mmseg_rules(final_norm), mmseg_keys(bb.arch.at(img_size), final_norm), img_size,
                    fill)


CONVERTERS = {"timm": to_timm, "detectron2": to_detectron2, "mmseg": to_mmseg}


# ---------------------------------------------------------------------------------------- model arguments
def timm_kwargs(arch: ViTArch) -> dict:
    """Arguments of ``timm.models.vision_transformer.VisionTransformer`` for this architecture."""
    from functools import partial

    import torch.nn as nn

    return dict(img_size=arch.img_size, patch_size=arch.patch_size, in_chans=arch.in_chans,
                embed_dim=arch.embed_dim, depth=arch.depth, num_heads=arch.num_heads,
                mlp_ratio=arch.mlp_ratio, qkv_bias=True, num_classes=0,
                norm_layer=partial(nn.LayerNorm, eps=1e-6),
                **({"reg_tokens": arch.reg_tokens, "no_embed_class": True} if arch.reg_tokens else {}))


def detectron2_kwargs(arch: ViTArch) -> dict:
    """Arguments of detectron2's ``ViT`` matching the converted weights (global attention, no rel-pos,
    LayerNorm eps 1e-6 as in detectron2's ``common/models/mask_rcnn_vitdet.py``)."""
    from functools import partial

    import torch.nn as nn

    side = arch.img_size[0]
    return dict(img_size=side, patch_size=arch.patch_size, in_chans=arch.in_chans,
                embed_dim=arch.embed_dim, depth=arch.depth, num_heads=arch.num_heads,
                mlp_ratio=arch.mlp_ratio, qkv_bias=True, pretrain_img_size=side,
                pretrain_use_cls_token=True, window_size=0, use_rel_pos=False,
                norm_layer=partial(nn.LayerNorm, eps=1e-6))


def mmseg_kwargs(arch: ViTArch) -> dict:
    """Arguments of mmseg's ``MAE`` backbone matching the converted weights."""
    return dict(img_size=arch.img_size, patch_size=arch.patch_size, in_channels=arch.in_chans,
                embed_dims=arch.embed_dim, num_layers=arch.depth, num_heads=arch.num_heads,
                mlp_ratio=int(arch.mlp_ratio), norm_cfg=dict(type="LN", eps=1e-6), init_values=1.0,
                out_indices=[arch.depth - 1])


def target_arch(bb: ViTBackbone, img_size: int | None) -> ViTArch:
    """The architecture the converted weights describe (img_size = the resampled grid)."""
    return bb.arch.at(img_size)
