"""The ViT encoder every method and transfer adapter uses.

It is timm's ``VisionTransformer`` (so the timm contract holds: ``forward_features``,
``forward_intermediates(indices, norm, output_fmt)``, ``no_weight_decay``) with the MAE/DropPos
conventions: a [cls] token, a fixed 2D sin-cos position embedding of shape (1, 1 + L, D), LayerNorm
eps 1e-6, qkv bias, xavier-uniform init, and attention through PyTorch's
``scaled_dot_product_attention`` (timm's fused attention). Its state-dict keys are the official
MAE/DropPos encoder keys (``patch_embed.proj.*``, ``cls_token``, ``pos_embed``, ``blocks.N.*``,
``norm.*``), so converting to timm is the identity.

Pretraining methods use three extra entry points: ``embed_patches`` (patch tokens without
position), ``patch_pos_embed`` and ``forward_tokens`` (prepend [cls], run blocks and norm).
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn
from timm.models.vision_transformer import VisionTransformer as _TimmViT

from .init import xavier_init_
from .pos_embed import sincos_2d

# name -> (embed_dim, depth, num_heads); patch size and image size are free.
VIT_SIZES: dict[str, tuple[int, int, int]] = {
    "tiny": (192, 12, 3),
    "small": (384, 12, 6),
    "base": (768, 12, 12),
    "large": (1024, 24, 16),
    "huge": (1280, 32, 16),
}


class VisionTransformer(_TimmViT):
    """ViT with a fixed sin-cos position embedding.

    Args:
        img_size: input size (int or (H, W)); must be divisible by ``patch_size``.
        patch_size, in_chans, embed_dim, depth, num_heads, mlp_ratio: the architecture.
        train_pos_embed: make the (sin-cos initialised) position embedding trainable, as MAE's
            fine-tuning does. Pretraining keeps it fixed.
        reg_tokens: register tokens (DINOv2 with registers): prefix tokens after [cls] without a
            position; the position table keeps its (1, 1 + L, D) shape ([cls] row + patches).
        num_classes, global_pool ('token' | 'avg'), drop_path_rate: classification options; with
            ``global_pool='avg'`` the final norm becomes ``fc_norm`` after pooling (MAE fine-tuning).
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        num_classes: int = 0,
        global_pool: str = "token",
        drop_path_rate: float = 0.0,
        train_pos_embed: bool = False,
        reg_tokens: int = 0,
        **kwargs,
    ):
        size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        if size[0] % patch_size or size[1] % patch_size:
            raise ValueError(
                f"image size {size} is not divisible by patch size {patch_size}; "
                f"choose an image size that is a multiple of {patch_size}"
            )
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        super().__init__(
            img_size=size,
            patch_size=patch_size,
            in_chans=in_chans,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            qkv_bias=True,
            num_classes=num_classes,
            global_pool=global_pool,
            drop_path_rate=drop_path_rate,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            weight_init="skip",
            reg_tokens=reg_tokens,
            **kwargs,
        )
        self._arch = dict(
            img_size=list(size), patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim,
            depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio,
        )
        if reg_tokens:
            self._arch["reg_tokens"] = reg_tokens
            self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.patch_embed.num_patches, embed_dim))
        self.pos_embed.requires_grad_(train_pos_embed)
        self.init_mae_weights()

    # ------------------------------------------------------------------ init
    @torch.no_grad()
    def init_mae_weights(self) -> None:
        """MAE/DropPos init: sin-cos table, xavier-uniform linears and patch projection."""
        self.pos_embed.copy_(sincos_2d(self.embed_dim, self.patch_embed.grid_size)[None])
        w = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patch_embed.proj.bias)
        nn.init.normal_(self.cls_token, std=0.02)
        xavier_init_(self)

    def _pos_embed(self, x: torch.Tensor) -> torch.Tensor:
        """Registers (if any) sit after [cls] without a position (DINOv2); otherwise timm's own."""
        if self.reg_token is None:
            return super()._pos_embed(x)
        x = x + self.pos_embed[:, 1:]
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        return self.pos_drop(torch.cat([cls, self.reg_token.expand(x.shape[0], -1, -1), x], dim=1))

    # ------------------------------------------------------------------ description
    def arch_args(self) -> dict:
        """The arguments that rebuild this encoder's architecture (stored in checkpoints)."""
        return dict(self._arch)

    @property
    def grid_size(self) -> tuple[int, int]:
        return tuple(self.patch_embed.grid_size)

    @property
    def num_patches(self) -> int:
        return self.patch_embed.num_patches

    @property
    def patch_size(self) -> int:
        return self._arch["patch_size"]

    # ------------------------------------------------------------------ pretext entry points
    def embed_patches(self, imgs: torch.Tensor) -> torch.Tensor:
        """imgs: (N, C, H, W) -> patch tokens (N, L, D), no position embedding."""
        return self.patch_embed(imgs)

    @property
    def patch_pos_embed(self) -> torch.Tensor:
        """(L, D) position embedding of the patch tokens (row-major grid order)."""
        return self.pos_embed[0, 1:]

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, n, D) patch tokens with their position already added -> (N, 1 + n, D) normed.

        Prepends [cls] + its position embedding and runs the blocks and the final norm.
        """
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        x = self.blocks(x)
        return self.norm(x)


def vit_arch_args(size: str, patch_size: int = 16, img_size: int | tuple[int, int] = 224, **kw) -> dict:
    """Architecture arguments of a named size ('tiny' ... 'huge')."""
    if size not in VIT_SIZES:
        raise ValueError(f"unknown ViT size {size!r}; choose one of {sorted(VIT_SIZES)}")
    d, depth, heads = VIT_SIZES[size]
    return dict(img_size=img_size, patch_size=patch_size, embed_dim=d, depth=depth, num_heads=heads, **kw)


def build_vit(size: str | None = None, **kwargs) -> VisionTransformer:
    """``build_vit('base', patch_size=16, img_size=224)`` or ``build_vit(embed_dim=..., depth=...)``."""
    if size is not None:
        args = vit_arch_args(size, **{k: kwargs.pop(k) for k in ("patch_size", "img_size") if k in kwargs})
        args.update(kwargs)
        kwargs = args
    return VisionTransformer(**kwargs)
