"""big_vision / AugReg ``.npz`` files: the architecture from the array shapes, the weights through timm's
own ``_load_weights``."""

from __future__ import annotations

from droppos.errors import UserError

from .common import generic_path, timm_raw
from .registry import register


@register("augreg", order=140, suffix=".npz")
def read_augreg(path, where: str, part: str | None = None):
    """A big_vision / AugReg ``.npz``: the architecture from the array shapes, the weights through
    timm's own ``_load_weights`` into a timm ``VisionTransformer``; returns ``(raw, info)``."""
    import numpy as np
    from timm.models.vision_transformer import VisionTransformer as TimmViT
    from timm.models.vision_transformer import _load_weights

    try:
        w = np.load(path)
        files = set(w.files)
    except Exception as e:  # noqa: BLE001 - any parse failure is a bad file
        raise UserError(f"{where}not a readable .npz file ({type(e).__name__}: {e})") from None
    prefix = next((p for p in ("", "opt/target/", "params/", "params/img/") if f"{p}embedding/kernel" in files), None)
    if prefix is None:
        raise UserError(f"{where}not an AugReg/big_vision ViT .npz (no embedding/kernel)")
    stacked = f"{prefix}Transformer/encoderblock/LayerNorm_0/scale" in files  # big_vision: blocks stacked on axis 0
    big_vision = prefix.startswith("params/") or f"{prefix}pos_embedding" in files or stacked
    pos_key = f"{prefix}pos_embedding" if big_vision else f"{prefix}Transformer/posembed_input/pos_embedding"
    block = f"{prefix}Transformer/encoderblock/" if stacked else f"{prefix}Transformer/encoderblock_0/"
    mha, mlp_sub = ("MultiHeadDotProductAttention_0", "MlpBlock_0") if big_vision else \
        ("MultiHeadDotProductAttention_1", "MlpBlock_3")
    query, fc1 = f"{block}{mha}/query/kernel", f"{block}{mlp_sub}/Dense_0/kernel"
    missing = [k for k in (pos_key, query, fc1) if k not in files]
    if missing:
        raise UserError(f"{where}not an AugReg/big_vision ViT .npz (missing {missing[0]})")
    if f"{prefix}cls" not in files:
        raise UserError(f"{where}a ViT without a [cls] token (global average pooling / MAP head); " + generic_path(where))
    p, _, c, d = w[f"{prefix}embedding/kernel"].shape
    if stacked:
        depth = w[f"{prefix}Transformer/encoderblock/LayerNorm_0/scale"].shape[0]
        heads, mlp = w[query].shape[-2], w[fc1].shape[-1]
    else:
        depth = len({f.split("/")[len(prefix.split("/"))] for f in files if f.startswith(f"{prefix}Transformer/encoderblock_")})
        heads, mlp = w[query].shape[1], w[fc1].shape[1]
    n = w[pos_key].reshape(-1, d).shape[0] - 1
    side = int(round(n ** 0.5))
    if side * side != n:
        raise UserError(f"{where}position grid of {n} cells is not square")
    head_key = f"{prefix}head/kernel"
    classes = w[head_key].shape[-1] if head_key in files and w[head_key].ndim == 2 else 0
    notes = [f"AugReg .npz read by timm's _load_weights ({depth} blocks, {heads} heads from the array shapes)"]
    if head_key in files and not classes:
        notes.append(f"{head_key} of shape {tuple(w[head_key].shape)} is no linear classifier: not read")
    model = TimmViT(img_size=side * p, patch_size=p, in_chans=c, embed_dim=d, depth=depth, num_heads=heads,
                    mlp_ratio=mlp / d, qkv_bias=True, num_classes=classes)
    _load_weights(model, str(path))
    sd = model.state_dict()
    return timm_raw(sd), dict(notes=notes, arch_hint={"num_heads": int(heads)})
