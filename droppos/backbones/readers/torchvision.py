"""torchvision ``vit_*`` state dicts (``conv_proj``, ``class_token``, ``in_proj`` = qkv)."""

from __future__ import annotations

from .common import flat, renamed, tensors
from .registry import register, register_family

register_family("torchvision", {768: 12, 1024: 16, 1280: 16})


def is_torchvision(sd: dict) -> bool:
    return "conv_proj.weight" in sd and "class_token" in sd


_TV_LAYER = r"^encoder\.layers\.encoder_layer_(\d+)\."
_TV_RULES = [
    (r"^class_token$", "cls_token", ""),
    (r"^encoder\.pos_embedding$", "pos_embed", ""),
    (r"^conv_proj\.(weight|bias)$", r"patch_embed.proj.\1", ""),
    (r"^encoder\.ln\.(weight|bias)$", r"norm.\1", ""),
    (r"^heads\.head\.(weight|bias)$", r"head.\1", "classifier head (kept as the backbone's head)"),
    (r"^heads\.", None, "pre-logits layer of the classifier"),
    (_TV_LAYER + r"ln_1\.(weight|bias)$", r"blocks.\1.norm1.\2", ""),
    (_TV_LAYER + r"ln_2\.(weight|bias)$", r"blocks.\1.norm2.\2", ""),
    (_TV_LAYER + r"self_attention\.in_proj_(weight|bias)$", r"blocks.\1.attn.qkv.\2", ""),
    (_TV_LAYER + r"self_attention\.out_proj\.(weight|bias)$", r"blocks.\1.attn.proj.\2", ""),
    (_TV_LAYER + r"mlp\.(?:0|linear_1)\.(weight|bias)$", r"blocks.\1.mlp.fc1.\2", ""),
    (_TV_LAYER + r"mlp\.(?:3|linear_2)\.(weight|bias)$", r"blocks.\1.mlp.fc2.\2", ""),
]


@register("torchvision", order=110, recognise=lambda obj: flat(obj) and is_torchvision(obj))
def read_torchvision(obj: dict, where: str, part: str | None = None):
    """torchvision ``vit_*`` state dict."""
    raw = renamed(tensors(obj, where, "state dict"), _TV_RULES)
    return raw, dict(family="torchvision", notes=["torchvision names (in_proj = qkv)"])
