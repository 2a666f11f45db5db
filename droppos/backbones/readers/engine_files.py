"""Files in an engine's own names, as ``droppos convert --to mmseg|detectron2`` writes them (or a run of
that engine saves them), read back into this project's encoder.

mmseg's ``MAE`` backbone holds the whole ViT: the names are mapped back, the layer scale is folded
into the projections (exact; 1 where the converter wrote it), a relative position bias of zeros is
dropped (it adds nothing) and any other is refused (a BEiT-style network). Its final norm is in the
file only with ``final_norm=True`` (``--final-norm``); without it the encoder cannot be rebuilt and
the reader says so in one line. detectron2's ViTDet keeps no [cls] token and no final norm: never
an exact encoder, always one line naming the source the file was converted from.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from droppos.errors import UserError

from .common import block_rules, flat, fold_scale, renamed, stem_rules
from .registry import Raw, register

_MMSEG_ANCHORS = ("patch_embed.projection.weight", "layers.0.ln1.weight")
_ENGINE_PARTS = ("decode_head.", "auxiliary_head.", "neck.", "proposal_generator.", "roi_heads.", "data_preprocessor.")
_LAYER = r"^layers\.(\d+)\."
_MMSEG_RULES = [
    *stem_rules(r"cls_token", r"pos_embed", r"patch_embed\.projection\.", r"ln1\."),
    *block_rules(_LAYER, {r"ln1\.": "norm1", r"ln2\.": "norm2", r"attn\.qkv\.": "attn.qkv", r"attn\.proj\.": "attn.proj",
                          r"ffn\.layers\.0\.0\.": "mlp.fc1", r"ffn\.layers\.1\.": "mlp.fc2"}),
    (_LAYER + r"attn\.relative_position_index$", None, "mmseg's fixed relative position index (a buffer)"),
]


def _source_named_beside(where: str) -> str:
    """`` (converted from SRC)`` when ``FILE.json``, written by ``droppos convert``, names the source."""
    path = Path(where.rstrip().removesuffix(":"))
    try:
        side = json.loads(path.with_name(path.name + ".json").read_text())
        return f" (converted from {side['backbone']['source']})"
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def _backbone_state(obj: dict, anchors: tuple[str, ...], prefix: str) -> dict | None:
    """The tensors of a file in an engine's names (``state_dict`` / ``model`` / flat), ``prefix`` removed."""
    for sd in (obj.get("state_dict"), obj.get("model"), obj):
        if isinstance(sd, dict) and flat(sd):
            sd = {k.removeprefix("module."): v for k, v in sd.items()}
            bare = {k.removeprefix(prefix): v for k, v in sd.items()}
            if all(a in bare for a in anchors):
                return bare
    return None


@register("mmseg", order=35, recognise=lambda obj: _backbone_state(obj, _MMSEG_ANCHORS, "backbone.") is not None)
def read_mmseg(obj: dict, where: str, part: str | None = None):
    """mmseg's ``MAE`` (BEiT-style names), alone or inside a whole segmentor (``backbone.*``)."""
    sd = dict(_backbone_state(obj, _MMSEG_ANCHORS, "backbone."))
    raw: Raw = {k: (v, "segmentation neck / heads (not the encoder)") for k, v in sd.items() if k.startswith(_ENGINE_PARTS)}
    sd = {k: v for k, v in sd.items() if k not in raw}
    if "ln1.weight" not in sd:
        raise UserError(f"{where}mmseg MAE weights without the final norm (final_norm=False, as `droppos convert --to "
                        f"mmseg` writes without --final-norm): the encoder's final LayerNorm is not in the file, so "
                        f"the ViT cannot be rebuilt from it; read its source{_source_named_beside(where)}, or convert "
                        "that again with --final-norm")
    notes = ["mmseg MAE names mapped back to the encoder's"]
    biases = [k for k in sd if k.endswith("attn.relative_position_bias_table")]
    nonzero = [k for k in biases if sd[k].any()]
    if nonzero:
        raise UserError(f"{where}a relative position bias that is not zero ({nonzero[0]}): a BEiT-style network, which "
                        "a plain ViT encoder cannot represent; read it as a generic backbone through timm: "
                        f"--backbone timm:<model_name>:{where.rstrip().removesuffix(':')}")
    for k in biases:
        raw[k] = (sd.pop(k), "relative position bias of zeros (adds nothing)")
    gammas = {k: sd.pop(k) for k in [k for k in sd if re.match(r"layers\.\d+\.gamma_[12]$", k)]}
    for k, g in gammas.items():
        i, which = re.match(r"layers\.(\d+)\.gamma_([12])$", k).groups()
        fold_scale(sd, f"layers.{i}.attn.proj" if which == "1" else f"layers.{i}.ffn.layers.1", g)
    if gammas:
        ones = all(torch.equal(g, torch.ones_like(g)) for g in gammas.values())
        notes.append(f"layer scale {'of ones ' if ones else ''}folded into {len(gammas)} projections (the same network)")
    raw.update(renamed(sd, _MMSEG_RULES))
    return raw, dict(notes=notes)


_D2_PREFIX = "backbone.net."


def _is_detectron2(obj: dict) -> bool:
    model = obj.get("model")
    return isinstance(model, dict) and flat(model) and f"{_D2_PREFIX}patch_embed.proj.weight" in model


@register("detectron2", order=65, recognise=_is_detectron2)
def read_detectron2(obj: dict, where: str, part: str | None = None):
    """detectron2's ViTDet (``{"model": {"backbone.net.*": ...}}``): refused in one line (see the module docstring)."""
    raise UserError(f"{where}detectron2 ViTDet weights (backbone.net.*): ViTDet keeps no [cls] token and no final "
                    "norm, so the ViT encoder cannot be rebuilt from them; read the source they were converted "
                    f"from{_source_named_beside(where)}; `droppos detect --backbone FILE` takes this file as it is")
