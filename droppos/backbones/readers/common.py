"""What several readers share: checks on the loaded object, timm-named state dicts, and the refusal
of architectures that a plain ViT cannot represent (each named, with the generic source to use)."""

from __future__ import annotations

import re
from collections.abc import Callable

import torch

from droppos.errors import UserError

from .registry import Raw

#: what to use for a network that is not a plain ViT (``where`` is "FILE: ")
GENERIC_PATH = "read it as a generic backbone through timm: --backbone timm:<model_name>:{file}"

_NON_VIT = (  # (pattern over keys, the family, a timm model of that family) of networks that are not ViTs
    (re.compile(r"(^|\.)layers\.\d+\.blocks\.\d+\.attn\.relative_position_bias_table$"), "a Swin Transformer",
     "swin_base_patch4_window7_224"),
    (re.compile(r"(^|\.)stages\.\d+\.(blocks\.)?\d+\.(conv_dw|dwconv)\.weight$"), "a ConvNeXt", "convnext_base"),
    (re.compile(r"(^|\.)layer[1-4]\.\d+\.conv[1-3]\.weight$"), "a ResNet", "resnet50"),
)
_FEATURES = (  # (pattern over keys, what it is) of ViT variants this ViT cannot represent exactly
    (re.compile(r"(^|\.)visual\.|(^|\.)ln_pre\.|^norm_pre\."), "a CLIP-style pre-norm (ln_pre / norm_pre)"),
    (re.compile(r"relative_position_bias_table|rel_pos_bias|\.gamma_[12]$"),
     "BEiT/data2vec relative position bias and layer scale (gamma_1/2)"),
    (re.compile(r"(^|\.)rope\.|\.mlp\.fc1_g\.|\.mlp\.w12\.|\.attn\.q_bias$"), "EVA-style RoPE / SwiGLU / split q,v bias"),
    (re.compile(r"(^|\.)attn_pool\."), "a SigLIP attention-pooling head (no [cls] token)"),
    (re.compile(r"\.(q_norm|k_norm)\."), "qk-norm"),
)


def generic_path(where: str, model: str = "<model_name>") -> str:
    """The generic source for the file named by ``where`` ("FILE: ")."""
    return GENERIC_PATH.replace("<model_name>", model).format(file=where.rstrip().removesuffix(":") or "FILE")


def refuse_unrepresentable(keys, where: str) -> None:
    """One line naming the network (Swin, ConvNeXt, ResNet) or the ViT feature when ``keys`` are not a plain ViT."""
    keys = list(keys)
    for pattern, family, model in _NON_VIT:
        hit = next((k for k in keys if pattern.search(k)), None)
        if hit is not None:
            raise UserError(f"{where}{family} (key {hit}), not a ViT; {generic_path(where, model)} "
                            "(the timm model whose architecture the file holds)")
    for pattern, what in _FEATURES:
        hit = next((k for k in keys if pattern.search(k)), None)
        if hit is not None:
            raise UserError(f"{where}{what} (key {hit}) cannot be represented exactly as a plain ViT encoder; "
                            + generic_path(where))


def strip(sd: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def tensors(sd, where: str, what: str) -> dict[str, torch.Tensor]:
    """``sd`` checked to be a dict of tensors (one line naming ``what`` otherwise)."""
    if not isinstance(sd, dict):
        raise UserError(f"{where}{what} is a {type(sd).__name__}, not a state dict")
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise UserError(f"{where}{what} holds non-tensor entries ({', '.join(map(str, bad[:4]))})")
    return sd


def timm_raw(sd: dict, pretext=(), head_reason="classifier head (kept as the backbone's head)") -> Raw:
    """A timm-named state dict: ``head.*`` kept aside, ``pretext`` key prefixes dropped."""
    raw: Raw = {}
    for k, v in sd.items():
        if k.startswith("head."):
            raw[k] = (v, head_reason)
        elif k.startswith("pre_logits."):
            raw[k] = (v, "pre-logits layer of the classifier")
        elif any(k.startswith(p) for p in pretext):
            raw[k] = (v, "pretext (pretraining only)")
        else:
            raw[k] = (v, None)
    return raw


def as_int(v) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def flat(obj: dict) -> bool:
    """A plain state dict: tensors only."""
    return bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def under_prefix(sd: dict, prefix: str, why_else: Callable[[str], str]) -> Raw:
    """The weights under ``prefix`` (prefix removed) kept; every other key dropped with ``why_else(key)``."""
    return {(k[len(prefix):] if k.startswith(prefix) else k): (v, None if k.startswith(prefix) else why_else(k))
            for k, v in sd.items()}


def stem_rules(cls: str, pos: str, patch: str, norm: str) -> list[tuple[str, str | None, str]]:
    """Rename rules of the weights outside the blocks, each given as a regex of its source name: the [cls]
    token, the position table, the patch projection and the final norm (the last two up to ``weight|bias``)."""
    return [(rf"^{cls}$", "cls_token", ""), (rf"^{pos}$", "pos_embed", ""),
            (rf"^{patch}(weight|bias)$", r"patch_embed.proj.\1", ""), (rf"^{norm}(weight|bias)$", r"norm.\1", "")]


def block_rules(block: str, names: dict[str, str]) -> list[tuple[str, str | None, str]]:
    """Rename rules of every block's weights: ``block`` (a regex whose group 1 is the block index) followed by
    each source name (a regex up to ``weight`` / ``bias``) -> ``blocks.N.<our name>.weight|bias``."""
    return [(block + src + r"(weight|bias)$", rf"blocks.\1.{dst}.\2", "") for src, dst in names.items()]


def fold_scale(sd: dict, linear: str, gamma: torch.Tensor) -> None:
    """``gamma * (W x + b)`` as one linear layer: W' = gamma W, b' = gamma b (the same network, exactly)."""
    sd[linear + ".weight"] = sd[linear + ".weight"] * gamma[:, None]
    sd[linear + ".bias"] = sd[linear + ".bias"] * gamma


def renamed(sd: dict, rules: list[tuple[str, str | None, str]]) -> Raw:
    """Rename by the first matching ``(regex, template, reason)``; a None template drops the key with
    the reason; a key no rule matches is kept as is (the common checks report it)."""
    compiled = [(re.compile(p), t, why) for p, t, why in rules]
    raw: Raw = {}
    for k, v in sd.items():
        rule = next(((pat, t, why) for pat, t, why in compiled if pat.match(k)), None)
        if rule is None:
            raw[k] = (v, None)
        elif rule[1] is None:
            raw[k] = (v, rule[2])
        else:
            raw[rule[0].sub(rule[1], k)] = (v, rule[2] or None)
    return raw
