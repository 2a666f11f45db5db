"""Hugging Face ``transformers`` ViT / ViTMAE state dicts (optionally under ``vit.``): separate q, k, v joined."""

from __future__ import annotations

import re

import torch

from droppos.errors import UserError

from .common import block_rules, flat, fold_scale, renamed, stem_rules, tensors
from .registry import register


def is_hf(sd: dict) -> bool:
    return any(k.endswith("embeddings.patch_embeddings.projection.weight") for k in sd)


_BLOCK = r"^(?:encoder\.layer|layers)\.(\d+)\."  # HF hub names / transformers 5 in-memory names
_HF_RULES = [
    *stem_rules(r"embeddings\.cls_token", r"embeddings\.position_embeddings",
                r"embeddings\.patch_embeddings\.projection\.", r"layernorm\."),
    (r"^pooler\.", None, "HF pooler (dense + tanh on [cls]; not part of the ViT encoder)"),
    (r"^embeddings\.mask_token$", None, "DINOv2 mask token (iBOT pretext)"),
    (r"^embeddings\.register_tokens$", "reg_token", ""),
    (_BLOCK + r"layer_scale([12])\.lambda1$", r"blocks.\1.ls\2.gamma", ""),
    *block_rules(_BLOCK, {r"(?:layernorm_before|norm1)\.": "norm1", r"(?:layernorm_after|norm2)\.": "norm2",
                          r"attention\.(?:attention\.query|q_proj)\.": "attn.q",
                          r"attention\.(?:attention\.key|k_proj)\.": "attn.k",
                          r"attention\.(?:attention\.value|v_proj)\.": "attn.v",
                          r"attention\.(?:output\.dense|o_proj)\.": "attn.proj",
                          r"(?:intermediate\.dense|mlp\.fc1)\.": "mlp.fc1", r"(?:output\.dense|mlp\.fc2)\.": "mlp.fc2"}),
]


@register("hf", order=100, recognise=lambda obj: flat(obj) and is_hf(obj))
def read_hf(obj: dict, where: str, part: str | None = None):
    """Hugging Face ``ViTModel`` / ``ViTMAEModel`` / ``Dinov2Model`` state dict (optionally under ``vit.``); DINOv2's
    layer scale is folded into the projections, its register tokens kept after [cls]."""
    sd = tensors(obj, where, "state dict")
    anchor = next(k for k in sd if k.endswith("embeddings.patch_embeddings.projection.weight"))
    prefix = anchor[: -len("embeddings.patch_embeddings.projection.weight")]
    raw = renamed({k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}, _HF_RULES)
    raw.update({k: (v, "not the encoder (decoder / classifier of the HF model)") for k, v in sd.items()
                if not k.startswith(prefix)})
    for key in [k for k in raw if re.match(r"blocks\.\d+\.attn\.q\.", k)]:  # separate q, k, v -> qkv
        parts = [raw.pop(key.replace(".attn.q.", f".attn.{x}."), (None, None))[0] for x in "qkv"]
        if any(t is None for t in parts):
            raise UserError(f"{where}{key.split('.attn')[0]} lacks some of query/key/value")
        raw[key.replace(".attn.q.", ".attn.qkv.")] = (torch.cat(parts), None)
    notes = ["Hugging Face names: separate query/key/value concatenated into qkv",
             "HF ViT configs default to LayerNorm eps 1e-12; this encoder uses 1e-6 (features differ by < 1e-5 "
             "unless a token's variance is tiny)"]
    scales = [k for k in raw if re.match(r"blocks\.\d+\.ls[12]\.gamma$", k)]
    if scales:
        weights = {k: v for k, (v, why) in raw.items() if why is None}
        for key in scales:
            i, which = re.match(r"blocks\.(\d+)\.ls([12])\.gamma$", key).groups()
            fold_scale(weights, f"blocks.{i}.attn.proj" if which == "1" else f"blocks.{i}.mlp.fc2", weights.pop(key))
            del raw[key]
        raw.update({k: (v, None) for k, v in weights.items()})
        notes.append(f"layer scale folded into {len(scales)} projections (the same network)")
    return raw, dict(notes=notes, family="dinov2" if scales or "reg_token" in raw else None)
