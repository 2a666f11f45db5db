"""Checkpoint files in the layouts that public ViT releases use, built from random timm models.

Each ``write_<layout>(path, ...)`` saves a file laid out as the release's own save code lays it
out (``../shared/CHECKPOINT_LAYOUTS.md``) and returns the *reference*: the original model built by
timm (or torchvision / transformers) from the same weights, whose features the reader's encoder
must reproduce. Weights are random and every norm is perturbed, so a swapped key shows.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from timm.models.vision_transformer import VisionTransformer as TimmViT

IMG, PATCH = 32, 8


def randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            base = 1.0 if (name.endswith("weight") and p.ndim == 1) else 0.0
            p.copy_(base + 0.2 * torch.randn(p.shape, generator=g))
    return model.eval()


def timm_vit(width: int = 384, depth: int = 2, heads: int = 6, seed: int = 0, **kw) -> TimmViT:
    kw.setdefault("img_size", IMG)
    kw.setdefault("patch_size", PATCH)
    return randomise(TimmViT(embed_dim=width, depth=depth, num_heads=heads, num_classes=kw.pop("num_classes", 0), **kw),
                     seed)


def _prefixed(sd: dict, prefix: str) -> dict:
    return {prefix + k: v for k, v in sd.items()}


def _dino_head(prefix: str, width: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {f"{prefix}mlp.0.weight": torch.randn(64, width, generator=g), f"{prefix}mlp.0.bias": torch.zeros(64),
            f"{prefix}last_layer.weight_g": torch.ones(256, 1), f"{prefix}last_layer.weight_v": torch.randn(256, 64)}


def write_dino_full(path, ibot: bool = False, depth: int = 2) -> dict[str, TimmViT]:
    """DINO / iBOT ``checkpoint.pth``: student (``module.backbone.*``) and teacher (``backbone.*``)."""
    student, teacher = timm_vit(depth=depth, seed=1), timm_vit(depth=depth, seed=2)
    s_sd = _prefixed(student.state_dict(), "module.backbone.")
    if ibot:
        s_sd["module.backbone.masked_embed"] = torch.randn(1, 384)
    obj = {"student": {**s_sd, **_dino_head("module.head.", 384, 3)},
           "teacher": {**_prefixed(teacher.state_dict(), "backbone."), **_dino_head("head.", 384, 4)},
           "optimizer": {"state": {}, "param_groups": []}, "epoch": 100,
           "args": argparse.Namespace(arch="vit_small", patch_size=PATCH, out_dim=256),
           ("ibot_loss" if ibot else "dino_loss"): {"center": torch.zeros(1, 256)}}
    torch.save(obj, path)
    return {"teacher": teacher, "student": student}


def write_ibot_teacher(path) -> TimmViT:
    """iBOT ``checkpoint_teacher.pth``: ``{'state_dict': timm keys}``."""
    model = timm_vit(seed=5)
    torch.save({"state_dict": model.state_dict()}, path)
    return model


def write_mocov3(path, converted: bool = False, depth: int = 2) -> TimmViT:
    """MoCo v3 ``vit-s-300ep.pth.tar`` (ViT-S with 12 heads) or its ``convert_to_deit.py`` output."""
    base, momentum = timm_vit(heads=12, depth=depth, seed=6), timm_vit(heads=12, depth=depth, seed=7)
    g = torch.Generator().manual_seed(8)
    proj = {"head.0.weight": torch.randn(64, 384, generator=g), "head.1.weight": torch.ones(64)}
    if converted:
        torch.save({"model": base.state_dict()}, path)
        return base
    sd = {**_prefixed({**base.state_dict(), **proj}, "module.base_encoder."),
          **_prefixed({**momentum.state_dict(), **proj}, "module.momentum_encoder."),
          "module.predictor.0.weight": torch.randn(64, 64, generator=g)}
    torch.save({"epoch": 300, "arch": "vit_small", "state_dict": sd, "optimizer": {"state": {}, "param_groups": []},
                "scaler": {"scale": 65536.0}}, path)
    return base


def write_deit(path) -> TimmViT:
    """Official DeiT file: ``{'model': timm keys + head.*}`` (ViT-Ti: width 192, 3 heads)."""
    model = timm_vit(width=192, heads=3, num_classes=10, seed=9)
    torch.save({"model": model.state_dict()}, path)
    return model


def dinov2_timm(reg: int = 0, seed: int = 10, depth: int = 2) -> TimmViT:
    """A DINOv2 as timm builds it: layer scale; with registers, no [cls] row in pos_embed."""
    kw = dict(init_values=1e-5, patch_size=PATCH, depth=depth)
    if reg:
        kw.update(reg_tokens=reg, no_embed_class=True)
    return timm_vit(seed=seed, **kw)


def write_dinov2_timm(path, reg: int = 0, depth: int = 2) -> TimmViT:
    from safetensors.torch import save_file

    model = dinov2_timm(reg, depth=depth)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return model


def write_dinov2_hub(path, reg: int = 4) -> TimmViT:
    """torch.hub DINOv2 names (``register_tokens``, pos_embed with the [cls] row, ``mask_token``);
    the reference is timm's own conversion of the same dict (``checkpoint_filter_fn``)."""
    from timm.models.vision_transformer import checkpoint_filter_fn

    ref = dinov2_timm(reg, seed=11)
    g = torch.Generator().manual_seed(12)
    sd = {k: v for k, v in ref.state_dict().items() if k not in ("reg_token", "pos_embed")}
    sd["pos_embed"] = torch.randn(1, 1 + ref.patch_embed.num_patches, 384, generator=g)
    sd["register_tokens"] = torch.randn(1, reg, 384, generator=g)
    sd["mask_token"] = torch.zeros(1, 384)
    torch.save(sd, path)
    ref.load_state_dict(checkpoint_filter_fn(dict(sd), ref))
    return ref


def write_hf(path, mae: bool = False, depth: int = 2):
    """Hugging Face ``ViTModel`` / ``ViTMAEModel`` state dict (safetensors); the reference is the
    transformers model itself (``last_hidden_state``)."""
    import transformers
    from safetensors.torch import save_file

    common = dict(hidden_size=192, num_hidden_layers=depth, num_attention_heads=3, intermediate_size=768, image_size=IMG,
                  patch_size=PATCH, layer_norm_eps=1e-6, hidden_act="gelu")
    if mae:
        model = transformers.ViTMAEModel(transformers.ViTMAEConfig(mask_ratio=0.0, **common))
    else:
        model = transformers.ViTModel(transformers.ViTConfig(**common), add_pooling_layer=True)
    randomise(model, seed=13)
    sd = {("vit." if mae else "") + _hub_name(k): v.contiguous() for k, v in model.state_dict().items()}
    save_file(sd, str(path))
    return model


_HUB_NAMES = (("layers.", "encoder.layer."), ("attention.q_proj", "attention.attention.query"),
              ("attention.k_proj", "attention.attention.key"), ("attention.v_proj", "attention.attention.value"),
              ("attention.o_proj", "attention.output.dense"), ("mlp.fc1", "intermediate.dense"),
              ("mlp.fc2", "output.dense"))


def _hub_name(key: str) -> str:
    """transformers 5's in-memory name -> the name in the hub's files (what transformers renames on load)."""
    for new, old in _HUB_NAMES:
        key = key.replace(new, old, 1) if (new != "layers." or key.startswith(new)) else key
    return key


def write_torchvision(path):
    """torchvision ``VisionTransformer`` state dict (ViT-B width, 2 layers)."""
    from torchvision.models.vision_transformer import VisionTransformer as TV

    model = randomise(TV(image_size=IMG, patch_size=PATCH, num_layers=2, num_heads=12, hidden_dim=768,
                         mlp_dim=3072, num_classes=10), seed=14)
    torch.save(model.state_dict(), path)
    return model


def write_augreg(path, big_vision: bool = False, stacked: bool = False, prefix: str = "", width: int = 192,
                 heads: int = 3, depth: int = 2, mlp_ratio: float = 4.0, cls: bool = True, head: bool = True,
                 img_size: int = IMG, seed: int = 15) -> TimmViT:
    """An AugReg ``.npz`` in the JAX names timm's ``_load_weights`` reads, written by inverting it: the classic
    AugReg names (``Transformer/posembed_input``, ``MultiHeadDotProductAttention_1``, ``LayerNorm_2``,
    ``MlpBlock_3``), or with ``big_vision`` its names (``pos_embedding`` at the top, ``..._0``, ``LayerNorm_1``,
    ``MlpBlock_0``), its blocks ``stacked`` on axis 0 as one ``encoderblock`` if asked, all under ``prefix``."""
    model = timm_vit(width=width, depth=depth, heads=heads, mlp_ratio=mlp_ratio, num_classes=10 if head else 0,
                     img_size=img_size, seed=seed)
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    d, h = width, heads
    w = {"embedding/kernel": sd["patch_embed.proj.weight"].transpose(2, 3, 1, 0), "embedding/bias": sd["patch_embed.proj.bias"],
         "pos_embedding" if big_vision else "Transformer/posembed_input/pos_embedding": sd["pos_embed"],
         "Transformer/encoder_norm/scale": sd["norm.weight"], "Transformer/encoder_norm/bias": sd["norm.bias"]}
    if cls:
        w["cls"] = sd["cls_token"]
    if head:
        w["head/kernel"], w["head/bias"] = sd["head.weight"].T, sd["head.bias"]
    mha, ln2, mlp = ("MultiHeadDotProductAttention_0", "LayerNorm_1", "MlpBlock_0") if big_vision else \
        ("MultiHeadDotProductAttention_1", "LayerNorm_2", "MlpBlock_3")
    blocks = []
    for i in range(depth):
        b, m, blk = f"blocks.{i}.", f"{mha}/", {}
        qkv_w, qkv_b = sd[b + "attn.qkv.weight"].reshape(3, d, d), sd[b + "attn.qkv.bias"].reshape(3, h, d // h)
        for j, n in enumerate(("query", "key", "value")):
            blk[f"{m}{n}/kernel"] = qkv_w[j].T.reshape(d, h, d // h)
            blk[f"{m}{n}/bias"] = qkv_b[j]
        blk[m + "out/kernel"] = sd[b + "attn.proj.weight"].T.reshape(h, d // h, d)
        blk[m + "out/bias"] = sd[b + "attn.proj.bias"]
        for src, dst in (("norm1", "LayerNorm_0"), ("norm2", ln2)):
            blk[f"{dst}/scale"], blk[f"{dst}/bias"] = sd[b + src + ".weight"], sd[b + src + ".bias"]
        for r, fc in enumerate(("fc1", "fc2")):
            blk[f"{mlp}/Dense_{r}/kernel"] = sd[f"{b}mlp.{fc}.weight"].T
            blk[f"{mlp}/Dense_{r}/bias"] = sd[f"{b}mlp.{fc}.bias"]
        blocks.append(blk)
    if stacked:
        w.update({f"Transformer/encoderblock/{k}": np.stack([blk[k] for blk in blocks]) for k in blocks[0]})
    else:
        w.update({f"Transformer/encoderblock_{i}/{k}": v for i, blk in enumerate(blocks) for k, v in blk.items()})
    np.savez(path, **{prefix + k: v for k, v in w.items()})
    return model


def original_patch_tokens(model, x: torch.Tensor, with_cls: bool) -> torch.Tensor:
    """The original network's own modules on ``x``: patches + their positions, through its blocks, no final norm
    (what ViTDet computes without [cls], mmseg's ``MAE`` with [cls] in the sequence) -> (N, D, gh, gw) patch
    tokens. Written per family from the original's modules (timm, Hugging Face, torchvision), not the reader's."""
    from torchvision.models.vision_transformer import VisionTransformer as TV

    if isinstance(model, TimmViT):
        patches, pos, cls, blocks = model.patch_embed(x), model.pos_embed, model.cls_token, model.blocks
    elif isinstance(model, TV):
        patches = model.conv_proj(x).flatten(2).transpose(1, 2)
        pos, cls, blocks = model.encoder.pos_embedding, model.class_token, model.encoder.layers
    else:  # transformers ViTModel / ViTMAEModel: its layers one after the other
        emb = model.embeddings
        patches, pos, cls = emb.patch_embeddings(x), emb.position_embeddings, emb.cls_token
        layers = model.layers if hasattr(model, "layers") else model.encoder.layer

        def blocks(t):
            for layer in layers:
                out = layer(t)
                t = out[0] if isinstance(out, tuple) else out
            return t
    t = patches + pos[:, 1:]
    if with_cls:
        t = blocks(torch.cat([(cls + pos[:, :1]).expand(x.shape[0], -1, -1), t], dim=1))[:, 1:]
    else:
        t = blocks(t)
    side = int(round(t.shape[1] ** 0.5))
    return t.transpose(1, 2).reshape(x.shape[0], -1, side, side)
