"""The probes for generic backbones (``timm:``, plug-ins): a token view of timm ViTs, an image jigsaw.

* :class:`TokenView` gives a timm ``VisionTransformer`` (DINOv2 with or without registers, CLIP,
  DeiT, AugReg ... every ViT whose position is an absolute table added to the patch tokens) the
  entry points :mod:`.tokens` uses (``embed_patches``, ``patch_pos_embed``, ``forward_tokens``), so
  both probes run on it as on this project's ViT. Registers sit after [cls] through the blocks and
  are dropped from the output. Other position schemes (EVA's RoPE, BEiT's relative bias) and
  convolutional models cannot form patch tokens without position: the position probe refuses
  them with one line.
* :func:`jigsaw` is the order probe's shuffle for every model: the image cut into a grid of cells
  and reassembled at random. With cells of a ViT's patch size this is exactly the token shuffle
  ``x_π(i) + p_i`` of :mod:`.tokens` (patch embedding is per patch); for other models the cell is
  the model's coarsest stride.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class TokenView(nn.Module):
    """The :mod:`.tokens` entry points over a timm ``VisionTransformer`` (see the module docstring)."""

    def __init__(self, vit: nn.Module):
        super().__init__()
        self.vit = vit
        self.grid_size = tuple(vit.patch_embed.grid_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.embed_dim = vit.embed_dim

    def embed_patches(self, imgs: torch.Tensor) -> torch.Tensor:
        x = self.vit.patch_embed(imgs)
        return x.flatten(1, 2) if x.ndim == 4 else x  # (N, H, W, D) of models built with dynamic_img_size

    @property
    def patch_pos_embed(self) -> torch.Tensor:
        pos = self.vit.pos_embed[0]
        return pos if self.vit.no_embed_class else pos[self.vit.num_prefix_tokens:]

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(N, L, D) patch tokens with their position (or none) -> (N, 1 + L, D): [cls] + patches, normed."""
        v = self.vit
        cls = v.cls_token.expand(x.shape[0], -1, -1)
        if not v.no_embed_class:
            cls = cls + v.pos_embed[:, :1]
        prefix = [cls] + ([v.reg_token.expand(x.shape[0], -1, -1)] if v.reg_token is not None else [])
        out = v.norm(v.blocks(torch.cat(prefix + [x], dim=1)))
        return torch.cat([out[:, :1], out[:, v.num_prefix_tokens:]], dim=1)

    def forward_features(self, imgs: torch.Tensor) -> torch.Tensor:
        return self.forward_tokens(self.embed_patches(imgs) + self.patch_pos_embed.to(imgs.dtype))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.vit.forward_head(x, pre_logits=pre_logits)


def token_view(model: nn.Module) -> TokenView | None:
    """A :class:`TokenView` of a timm ViT with an absolute position table and a [cls] token, else None."""
    from timm.models.vision_transformer import VisionTransformer

    if isinstance(model, VisionTransformer) and model.pos_embed is not None and model.cls_token is not None:
        return TokenView(model)
    return None


def jigsaw_cell(model: nn.Module) -> int:
    """The jigsaw's cell size in pixels: a ViT's patch size, else the model's coarsest stride."""
    pe = getattr(model, "patch_embed", None)
    size = getattr(pe, "patch_size", None)
    if size:
        return int(size[0] if isinstance(size, (tuple, list)) else size)
    info = getattr(model, "feature_info", None) or [{"reduction": 32}]
    return int(max(int(dict(i)["reduction"]) for i in info))


def jigsaw(imgs: torch.Tensor, perm: torch.Tensor, cell: int) -> torch.Tensor:
    """imgs: (N, C, H, W), perm: (N, L) over the (H // cell) x (W // cell) cells -> the reassembled images."""
    n, c, h, w = imgs.shape
    gh, gw = h // cell, w // cell
    x = imgs[:, :, :gh * cell, :gw * cell].reshape(n, c, gh, cell, gw, cell).permute(0, 2, 4, 1, 3, 5)
    x = x.reshape(n, gh * gw, c, cell, cell)
    x = torch.gather(x, 1, perm[:, :, None, None, None].expand(-1, -1, c, cell, cell))
    x = x.reshape(n, gh, gw, c, cell, cell).permute(0, 3, 1, 4, 2, 5).reshape(n, c, gh * cell, gw * cell)
    out = imgs.clone()
    out[:, :, :gh * cell, :gw * cell] = x
    return out
