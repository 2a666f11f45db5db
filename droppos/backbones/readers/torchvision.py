"""torchvision ``vit_*`` state dicts (``conv_proj``, ``class_token``, ``in_proj`` = qkv)."""

from __future__ import annotations

from .common import block_rules, flat, renamed, stem_rules, tensors
from .registry import register, register_family

register_family("torchvision", {768: 12, 1024: 16, 1280: 16})


def is_torchvision(sd: dict) -> bool:
    return "conv_proj.weight" in sd and "class_token" in sd


_TV_LAYER = r"^encoder\.layers\.encoder_layer_(\d+)\."
_TV_RULES = [
    *stem_rules(r"class_token", r"encoder\.pos_embedding", r"conv_proj\.", r"encoder\.ln\."),
    (r"^heads\.head\.(weight|bias)$", r"head.\1", "classifier head (kept as the backbone's head)"),
    (r"^heads\.", None, "pre-logits layer of the classifier"),
    *block_rules(_TV_LAYER, {r"ln_1\.": "norm1", r"ln_2\.": "norm2", r"self_attention\.in_proj_": "attn.qkv",
                             r"self_attention\.out_proj\.": "attn.proj", r"mlp\.(?:0|linear_1)\.": "mlp.fc1",
                             r"mlp\.(?:3|linear_2)\.": "mlp.fc2"}),
]


@register("torchvision", order=110, recognise=lambda obj: flat(obj) and is_torchvision(obj))
def read_torchvision(obj: dict, where: str, part: str | None = None):
    """torchvision ``vit_*`` state dict."""
    raw = renamed(tensors(obj, where, "state dict"), _TV_RULES)
    return raw, dict(family="torchvision", notes=["torchvision names (in_proj = qkv)"])
