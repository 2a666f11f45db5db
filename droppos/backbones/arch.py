"""The ViT architecture of a state dict: the expected keys and shapes, and inference from shapes.

A state dict in this project's encoder names (= official MAE/DropPos = timm names)::

    cls_token                 (1, 1, D)
    pos_embed                 (1, 1 + gh*gw, D)
    patch_embed.proj.weight   (D, C, p, p)          .bias (D,)
    blocks.N.norm1.*          (D,)                  blocks.N.norm2.*  (D,)
    blocks.N.attn.qkv.weight  (3D, D)               .bias (3D,)
    blocks.N.attn.proj.weight (D, D)                .bias (D,)
    blocks.N.mlp.fc1.weight   (rD, D)               .bias (rD,)
    blocks.N.mlp.fc2.weight   (D, rD)               .bias (D,)
    norm.weight, norm.bias    (D,)

    reg_token                 (1, R, D)             DINOv2 register tokens (optional)

Everything but the number of heads follows from the shapes. Heads are never guessed; they come, in
this order, from an explicit ``--arch`` override, the file (a model name such as
``vit_base_patch16`` in an official checkpoint, an AugReg array shape, an ``encoder.pth`` meta),
the table of the layout's family (registered by its reader, :mod:`.readers`: MoCo v3's ViT-S has 12 heads where
DeiT's and DINO's have 6), or, for a file of unknown family, a width on which every family agrees;
otherwise inference stops and asks for ``--arch num_heads=H``.

``--arch`` syntax (:func:`parse_arch_override`): comma-separated items, each a size name
(``tiny`` ... ``huge``), a timm-style model name (``vit_base_patch16_224``), or ``key=value``
with key one of ``embed_dim depth num_heads patch_size img_size in_chans mlp_ratio``;
``img_size=HxW`` (e.g. ``img_size=224x320``) names a non-square pretraining size.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from droppos.errors import UserError

ARCH_KEYS = ("img_size", "patch_size", "in_chans", "embed_dim", "depth", "num_heads", "mlp_ratio", "reg_tokens")

_MODEL_NAME = re.compile(r"(?:vit|deit3?)_(tiny|small|base|large|huge)_patch(\d+)(?:_(\d+))?")  # timm ViT / DeiT / DeiT III


@dataclass(frozen=True)
class ViTArch:
    """This project's ViT encoder: ``VisionTransformer(**arch.to_dict())`` (timm's names and layout).

    Every field is checked where it enters (a file, ``--arch``, a config): sizes are positive, the patch
    divides the image size and the heads divide the width, else one line naming the value.
    """

    img_size: tuple[int, int]  # the position embedding's grid times the patch (pretraining size)
    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int
    in_chans: int = 3
    mlp_ratio: float = 4.0
    reg_tokens: int = 0  # DINOv2 register tokens (after [cls], no position)

    def __post_init__(self):
        size = self.img_size
        hw = (size, size) if isinstance(size, int) else tuple(size)
        if len(hw) != 2 or not all(_is_int(v) for v in hw):
            raise UserError(f"img_size={size!r}: expected an integer or HxW")
        object.__setattr__(self, "img_size", (int(hw[0]), int(hw[1])))
        for name in ("patch_size", "embed_dim", "depth", "num_heads", "in_chans"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise UserError(f"{name}={value!r}: expected a positive integer")
        if not _is_int(self.reg_tokens) or self.reg_tokens < 0:
            raise UserError(f"reg_tokens={self.reg_tokens!r}: expected an integer >= 0")
        if isinstance(self.mlp_ratio, bool) or not isinstance(self.mlp_ratio, (int, float)) or not self.mlp_ratio > 0:
            raise UserError(f"mlp_ratio={self.mlp_ratio!r}: expected a positive number")
        object.__setattr__(self, "mlp_ratio", float(self.mlp_ratio))
        if min(self.img_size) < 1:
            raise UserError(f"img_size={self.img_size[0]}x{self.img_size[1]}: expected positive sizes")
        self.grid_at(self.img_size)
        if self.embed_dim % self.num_heads:
            raise UserError(f"embed_dim={self.embed_dim} is not divisible by num_heads={self.num_heads}")

    @classmethod
    def from_dict(cls, fields: dict) -> ViTArch:
        """From ``VisionTransformer`` arguments (a checkpoint's ``meta["arch"]``, ``arch_args()``)."""
        unknown = sorted(set(fields) - set(ARCH_KEYS))
        if unknown:
            raise UserError(f"unknown architecture field(s) {unknown}; valid: {', '.join(ARCH_KEYS)}")
        need = sorted({"img_size", "patch_size", "embed_dim", "depth", "num_heads"} - set(fields))
        if need:
            raise UserError(f"the architecture lacks {need}")
        return cls(**fields)

    def to_dict(self) -> dict:
        """``VisionTransformer`` arguments, as checkpoints and records store them (``reg_tokens`` only when set)."""
        out = {"img_size": list(self.img_size), "patch_size": self.patch_size, "in_chans": self.in_chans,
               "embed_dim": self.embed_dim, "depth": self.depth, "num_heads": self.num_heads,
               "mlp_ratio": self.mlp_ratio}
        if self.reg_tokens:
            out["reg_tokens"] = self.reg_tokens
        return out

    @property
    def grid(self) -> tuple[int, int]:
        """The position embedding's patch grid (gh, gw)."""
        return self.img_size[0] // self.patch_size, self.img_size[1] // self.patch_size

    @property
    def mlp_hidden(self) -> int:
        return int(round(self.embed_dim * self.mlp_ratio))

    def grid_at(self, img_size: int | tuple[int, int] | list) -> tuple[int, int]:
        """The patch grid of an input of ``img_size``; one line when the patch does not divide it."""
        h, w = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        if h < 1 or w < 1:
            raise UserError(f"image size {h}x{w}: expected positive sizes")
        if h % self.patch_size or w % self.patch_size:
            raise UserError(f"image size {h}x{w} is not divisible by the patch size {self.patch_size}; "
                            f"choose a multiple of {self.patch_size}")
        return h // self.patch_size, w // self.patch_size

    def at(self, img_size: int | tuple[int, int] | list | None) -> ViTArch:
        """The same ViT with its position embedding resampled to ``img_size`` (None: unchanged)."""
        if img_size is None:
            return self
        gh, gw = self.grid_at(img_size)
        return replace(self, img_size=(gh * self.patch_size, gw * self.patch_size))


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _sizes() -> dict[str, tuple[int, int, int]]:
    from droppos.models.vit import VIT_SIZES  # imports timm: only when needed

    return VIT_SIZES


def encoder_shapes(arch: ViTArch) -> dict[str, tuple[int, ...]]:
    """Every encoder key of ``arch`` (``VisionTransformer(**arch.to_dict())``) -> its shape."""
    d, p, c, h = arch.embed_dim, arch.patch_size, arch.in_chans, arch.mlp_hidden
    gh, gw = arch.grid
    shapes: dict[str, tuple[int, ...]] = {
        "cls_token": (1, 1, d),
        **({"reg_token": (1, arch.reg_tokens, d)} if arch.reg_tokens else {}),
        "pos_embed": (1, 1 + gh * gw, d),
        "patch_embed.proj.weight": (d, c, p, p),
        "patch_embed.proj.bias": (d,),
    }
    for i in range(arch.depth):
        b = f"blocks.{i}."
        shapes.update({
            b + "norm1.weight": (d,), b + "norm1.bias": (d,),
            b + "attn.qkv.weight": (3 * d, d), b + "attn.qkv.bias": (3 * d,),
            b + "attn.proj.weight": (d, d), b + "attn.proj.bias": (d,),
            b + "norm2.weight": (d,), b + "norm2.bias": (d,),
            b + "mlp.fc1.weight": (h, d), b + "mlp.fc1.bias": (h,),
            b + "mlp.fc2.weight": (d, h), b + "mlp.fc2.bias": (d,),
        })
    shapes.update({"norm.weight": (d,), "norm.bias": (d,)})
    return shapes


def parse_arch_override(text: str | None) -> dict:
    """``'base'``, ``'vit_base_patch16_224'``, ``'num_heads=4,img_size=64'`` -> arch fields."""
    out: dict = {}
    if not text:
        return out
    for item in filter(None, (s.strip() for s in text.split(","))):
        if "=" in item:
            key, value = (s.strip() for s in item.split("=", 1))
            if key not in ARCH_KEYS:
                raise UserError(f"--arch: unknown field {key!r}; valid: {', '.join(ARCH_KEYS)}")
            try:
                if key == "img_size" and "x" in value:
                    out[key] = [int(v) for v in value.split("x", 1)]
                else:
                    out[key] = float(value) if key == "mlp_ratio" else int(value)
            except ValueError:
                raise UserError(f"--arch {key}={value}: expected {'a number' if key == 'mlp_ratio' else 'an integer'}"
                                f"{' or HxW' if key == 'img_size' else ''}") from None
            least = 0 if key == "reg_tokens" else 1
            values = out[key] if isinstance(out[key], list) else [out[key]]
            if not all(v > 0 if key == "mlp_ratio" else v >= least for v in values):
                raise UserError(f"--arch {key}={value}: expected {'a positive number' if key == 'mlp_ratio' else f'an integer >= {least}'}")
        else:
            named = arch_from_name(item)
            if named is None:
                raise UserError(f"--arch: {item!r} is neither a size ({', '.join(_sizes())}), "
                                 "a model name like vit_base_patch16_224, nor key=value")
            out.update(named)
    return out


def arch_from_name(name: str) -> dict | None:
    """Fields named by a size or a model name (``DropPos_mae_vit_base_patch16_dec512d2b``)."""
    sizes = _sizes()
    if name in sizes:
        d, depth, heads = sizes[name]
        return dict(embed_dim=d, depth=depth, num_heads=heads)
    m = _MODEL_NAME.search(name)
    if m is None:
        return None
    d, depth, heads = sizes[m.group(1)]
    out = dict(embed_dim=d, depth=depth, num_heads=heads, patch_size=int(m.group(2)))
    if m.group(3):
        out["img_size"] = int(m.group(3))
    return out


def infer_arch(sd: dict[str, torch.Tensor], hint: dict | None = None, where: str = "",
               heads_for: Callable[[int], tuple[int | None, str]] | None = None) -> tuple[ViTArch, list[str]]:
    """Architecture of an encoder state dict -> (arch, notes saying what was inferred and how).

    ``hint`` holds fields from the file or ``--arch``; shape-derived fields must agree with it
    (except ``img_size``, which only sets the grid when the position embedding does not).
    ``heads_for(width) -> (heads or None, why)``: the head count of the file's family (the readers'
    family tables, :func:`droppos.backbones.readers.heads_for`), used when the hint has none.
    """
    hint = dict(hint or {})
    need = ["cls_token", "pos_embed", "patch_embed.proj.weight"]
    absent = [k for k in need if k not in sd]
    if absent:
        raise UserError(f"{where}no ViT encoder found: missing {absent}")
    d = sd["cls_token"].shape[-1]
    w = sd["patch_embed.proj.weight"]
    if w.ndim != 4 or w.shape[-1] != w.shape[-2]:
        raise UserError(f"{where}patch_embed.proj.weight has shape {tuple(w.shape)}, expected (D, C, p, p)")
    ids = sorted({int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))})
    if not ids or ids != list(range(len(ids))):
        raise UserError(f"{where}transformer blocks are not numbered 0..N-1 (found {ids[:5]}...)")
    fc1 = sd.get("blocks.0.mlp.fc1.weight")
    if fc1 is None:
        raise UserError(f"{where}blocks.0.mlp.fc1.weight missing: not a standard ViT block")
    n_pos = sd["pos_embed"].shape[1] - 1
    shape_arch = dict(patch_size=int(w.shape[-1]), in_chans=int(w.shape[1]), embed_dim=int(d),
                      depth=len(ids), mlp_ratio=fc1.shape[0] / d)
    if set(shape_arch) <= set(hint) and "num_heads" in hint:
        notes = ["architecture as stored in the file, checked against the weights' shapes"]
    else:
        notes = [f"inferred from shapes: width {d}, depth {len(ids)}, patch {w.shape[-1]}, "
                 f"{w.shape[1]} input channels, mlp ratio {shape_arch['mlp_ratio']:g}"]
    for k, v in shape_arch.items():
        if k in hint and hint[k] != v:
            raise UserError(f"{where}the architecture says {k}={hint[k]} but the weights have {k}={v}")
    side = int(round(n_pos ** 0.5))
    if "img_size" in hint and _hw(hint["img_size"]) != (side * shape_arch["patch_size"],) * 2 \
            and _grid_len(hint["img_size"], shape_arch["patch_size"]) == n_pos:
        img_size = list(_hw(hint["img_size"]))
    elif side * side == n_pos:
        img = side * shape_arch["patch_size"]
        if "img_size" in hint and _hw(hint["img_size"]) != (img, img):
            notes.append(f"position embedding is for {img} px, not the {hint['img_size']} px named; using {img}")
        img_size = [img, img]
    else:
        raise UserError(f"{where}position embedding has {n_pos} patch positions (not a square grid); "
                        "give the pretraining image size with --arch img_size=HxW")
    if "num_heads" in hint:
        heads = int(hint["num_heads"])
    else:
        heads, why = heads_for(int(d)) if heads_for is not None else (None, "")
        if heads is None:
            known = f" (known families: {why})" if why else ""
            raise UserError(f"{where}cannot tell the number of attention heads of a width-{d} ViT{known}; "
                            "give it with --arch num_heads=N")
        notes.append(f"num_heads={heads}: {why} (not stored in the file; override with --arch num_heads=N)")
    if d % heads:
        raise UserError(f"{where}width {d} is not divisible by num_heads={heads}")
    arch = dict(img_size=img_size, num_heads=heads, **shape_arch)
    if "reg_token" in sd:
        arch["reg_tokens"] = int(sd["reg_token"].shape[1])
    try:
        return ViTArch(**{k: arch[k] for k in ARCH_KEYS if k in arch}), notes
    except UserError as e:
        raise UserError(f"{where}{e}") from None


def check_shapes(sd: dict[str, torch.Tensor], arch: ViTArch, where: str = "") -> None:
    """Every encoder key present with its shape; raises naming the first few problems."""
    expected = encoder_shapes(arch)
    missing = sorted(set(expected) - set(sd))
    wrong = [f"{k} {tuple(sd[k].shape)} != {v}" for k, v in expected.items() if k in sd and tuple(sd[k].shape) != v]
    if missing or wrong:
        parts = ([f"missing {_short(missing)}"] if missing else []) + ([f"wrong shapes {_short(wrong)}"] if wrong else [])
        raise UserError(f"{where}encoder weights do not match the architecture: " + "; ".join(parts))


def _hw(size) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else tuple(size)


def _grid_len(size, p: int) -> int:
    h, w = _hw(size)
    return (h // p) * (w // p)


def _short(items: list, n: int = 4) -> str:
    return ", ".join(map(str, items[:n])) + (f" (+{len(items) - n} more)" if len(items) > n else "")
