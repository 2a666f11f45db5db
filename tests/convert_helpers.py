"""Test inputs for the converter tests: a tiny random ViT and files in each source format.

The official formats are written by hand from their published layout (key names and shapes of
``models_DropPos_mae.py`` / MAE's ``models_mae.py``), independent of the converter's code.
"""

from __future__ import annotations

import argparse

import torch

from droppos.models.vit import VisionTransformer

WIDTH, DEPTH, HEADS, PATCH, IMG = 64, 2, 2, 4, 32
DEC = 32  # decoder width of the pretext heads


def tiny_encoder(seed: int = 0, width: int = WIDTH, depth: int = DEPTH, heads: int = HEADS,
                 patch: int = PATCH, img: int = IMG) -> VisionTransformer:
    """A ViT whose every weight (LayerNorms, biases, pos_embed included) is random, so a swapped
    or missing key changes its output."""
    g = torch.Generator().manual_seed(seed)
    enc = VisionTransformer(img_size=img, patch_size=patch, embed_dim=width, depth=depth, num_heads=heads)
    with torch.no_grad():
        for name, p in enc.named_parameters():
            base = 1.0 if name.endswith("weight") and p.ndim == 1 else 0.0
            p.copy_(base + 0.2 * torch.randn(p.shape, generator=g))
    return enc.eval()


def _block(prefix: str, d: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    """Keys and shapes of one timm ``Block(d, ...)`` (qkv bias, mlp ratio 4)."""
    shapes = {"norm1.weight": (d,), "norm1.bias": (d,), "attn.qkv.weight": (3 * d, d), "attn.qkv.bias": (3 * d,),
              "attn.proj.weight": (d, d), "attn.proj.bias": (d,), "norm2.weight": (d,), "norm2.bias": (d,),
              "mlp.fc1.weight": (4 * d, d), "mlp.fc1.bias": (4 * d,), "mlp.fc2.weight": (d, 4 * d), "mlp.fc2.bias": (d,)}
    return {prefix + k: torch.randn(s, generator=g) for k, s in shapes.items()}


def droppos_official_state(enc: VisionTransformer, multi_task: bool = True) -> dict[str, torch.Tensor]:
    """``DropPositionMaskedAutoEncoderViT.state_dict()`` for ``enc`` (decoder width DEC, 1 block)."""
    g = torch.Generator().manual_seed(1)
    d, n = enc.embed_dim, enc.num_patches
    sd = dict(enc.state_dict())
    sd["mask_pos_token"] = torch.randn(1, 1, d, generator=g)
    sd["decoder_embed.weight"], sd["decoder_embed.bias"] = torch.randn(DEC, d, generator=g), torch.randn(DEC, generator=g)
    sd.update(_block("decoder_blocks.0.", DEC, g))
    sd["decoder_norm.weight"], sd["decoder_norm.bias"] = torch.ones(DEC), torch.zeros(DEC)
    sd["decoder_pred.weight"], sd["decoder_pred.bias"] = torch.randn(n, DEC, generator=g), torch.randn(n, generator=g)
    if multi_task:
        p2c = enc.patch_size ** 2 * 3
        sd["aux_decoder_embed.weight"], sd["aux_decoder_embed.bias"] = torch.randn(DEC, d, generator=g), torch.zeros(DEC)
        sd["aux_decoder_pos_embed"] = torch.randn(1, n + 1, DEC, generator=g)
        sd["mask_token"] = torch.randn(1, 1, DEC, generator=g)
        sd.update(_block("aux_decoder_blocks.0.", DEC, g))
        sd["aux_decoder_norm.weight"], sd["aux_decoder_norm.bias"] = torch.ones(DEC), torch.zeros(DEC)
        sd["aux_decoder_pred.weight"], sd["aux_decoder_pred.bias"] = torch.randn(p2c, DEC, generator=g), torch.zeros(p2c)
    return sd


def write_droppos_official(path, enc: VisionTransformer, multi_task: bool = True, epoch: int = 200) -> dict:
    """The DropPos release layout: ``model`` is a string, weights under ``state_dict`` with ``module.``."""
    sd = {"module." + k: v for k, v in droppos_official_state(enc, multi_task).items()}
    obj = {"epoch": epoch, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]},
           "model": "DropPos_mae_vit_base_patch16_dec512d2b", "state_dict": sd}
    torch.save(obj, path)
    return obj


def mae_official_state(enc: VisionTransformer) -> dict[str, torch.Tensor]:
    """``MaskedAutoencoderViT.state_dict()`` for ``enc`` (decoder width DEC, 1 block)."""
    g = torch.Generator().manual_seed(2)
    d, n, p2c = enc.embed_dim, enc.num_patches, enc.patch_size ** 2 * 3
    sd = dict(enc.state_dict())
    sd["mask_token"] = torch.randn(1, 1, DEC, generator=g)
    sd["decoder_pos_embed"] = torch.randn(1, n + 1, DEC, generator=g)
    sd["decoder_embed.weight"], sd["decoder_embed.bias"] = torch.randn(DEC, d, generator=g), torch.zeros(DEC)
    sd.update(_block("decoder_blocks.0.", DEC, g))
    sd["decoder_norm.weight"], sd["decoder_norm.bias"] = torch.ones(DEC), torch.zeros(DEC)
    sd["decoder_pred.weight"], sd["decoder_pred.bias"] = torch.randn(p2c, DEC, generator=g), torch.zeros(p2c)
    return sd


def write_mae_official(path, enc: VisionTransformer, with_args: bool = True) -> dict:
    """MAE's ``misc.save_model`` layout: ``{"model", "optimizer", "epoch", "scaler", "args": Namespace}``."""
    obj = {"model": mae_official_state(enc)}
    if with_args:
        obj.update(optimizer={"state": {}, "param_groups": []}, epoch=799, scaler={"scale": 65536.0},
                   args=argparse.Namespace(model="mae_vit_base_patch16", input_size=IMG, epochs=800, mask_ratio=0.75))
    torch.save(obj, path)
    return obj


def vitdet_reference(enc: VisionTransformer, x: torch.Tensor) -> torch.Tensor:
    """What ViTDet computes with ``enc``'s weights: patches + position (no [cls], no final norm) -> (N, D, gh, gw)."""
    tokens = enc.blocks(enc.patch_embed(x) + enc.pos_embed[:, 1:])
    gh, gw = enc.grid_size
    return tokens.transpose(1, 2).reshape(x.shape[0], -1, gh, gw)


def mmseg_reference(enc: VisionTransformer, x: torch.Tensor, final_norm: bool) -> torch.Tensor:
    """mmseg ``MAE`` last-layer output with ``enc``'s weights: [cls] kept in the sequence -> (N, D, gh, gw)."""
    tokens = enc.forward_features(x) if final_norm else _blocks_with_cls(enc, x)
    gh, gw = enc.grid_size
    return tokens[:, 1:].transpose(1, 2).reshape(x.shape[0], -1, gh, gw)


def _blocks_with_cls(enc: VisionTransformer, x: torch.Tensor) -> torch.Tensor:
    t = enc.patch_embed(x) + enc.pos_embed[:, 1:]
    cls = (enc.cls_token + enc.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
    return enc.blocks(torch.cat([cls, t], dim=1))
