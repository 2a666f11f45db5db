"""mmsegmentation's side of the one init path (:mod:`droppos.backbones.into_engine`): key names, native
files, and the config <-> architecture mapping of the UperNet configs' ``MAE`` backbone.

``--backbone`` takes ``scratch`` (the recipe's random initialisation, mmseg's ``init_weights``), a
file in mmseg names (a whole segmentor: ``backbone.*``, ``decode_head.*``, ...; or an ``MAE``
backbone state dict, with or without ``backbone.``; ``{"state_dict": ...}`` or ``{"model": ...}``),
or anything the readers read, converted for the config's image size. The converter writes the
weights mmseg's ``MAE`` has and a plain ViT lacks (layer scale = 1, relative position bias = 0), so
the only model keys a file may lack are the fixed ``relative_position_index`` buffers.
"""

from __future__ import annotations

import torch

from droppos.backbones.arch import ViTArch
from droppos.backbones.into_engine import EngineTarget, InitError  # noqa: F401 - InitError re-exported for callers

PREFIX = "backbone."
_MMSEG_BACKBONE_KEYS = ("patch_embed.projection.weight", "layers.0.ln1.weight")
_HEAD_PREFIXES = ("decode_head.", "auxiliary_head.", "neck.")


def _tensor_dict(obj) -> dict[str, torch.Tensor] | None:
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    return None


def native_state(obj) -> dict | None:
    """Whole-segmentor state dict of a loaded file in mmseg names, else None."""
    sd = None
    if isinstance(obj, dict):
        sd = next((d for d in (_tensor_dict(obj.get(k)) for k in ("state_dict", "model")) if d is not None), None)
        sd = sd if sd is not None else _tensor_dict(obj)
    if sd is None:
        return None
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    if any(k.startswith(_HEAD_PREFIXES) for k in sd):
        return sd
    bare = {k[len(PREFIX):]: v for k, v in sd.items()} if all(k.startswith(PREFIX) for k in sd) else sd
    if any(k in bare for k in _MMSEG_BACKBONE_KEYS):
        return {PREFIX + k: v for k, v in bare.items()}
    return None


def arch_of_config(bb) -> ViTArch:
    """The ViT of the config's ``model.backbone`` (mmseg ``MAE``)."""
    size = bb.get("img_size", 224)
    return ViTArch(embed_dim=int(bb.embed_dims), depth=int(bb.num_layers), num_heads=int(bb.num_heads),
                   patch_size=int(bb.patch_size), mlp_ratio=float(bb.get("mlp_ratio", 4)),
                   img_size=size if isinstance(size, int) else tuple(size))


_ARCH_FIELDS = (("embed_dim", "embed_dims"), ("depth", "num_layers"), ("num_heads", "num_heads"),
                ("patch_size", "patch_size"), ("mlp_ratio", "mlp_ratio"))


def arch_overrides(arch: ViTArch, cfg) -> list[str]:
    """``--cfg-options`` items that make ``cfg``'s UperNet fit a ViT of ``arch`` (empty if it fits)."""
    bb = cfg.model.backbone
    if all(float(getattr(arch, a)) == float(bb.get(b, 4 if b == "mlp_ratio" else -1)) for a, b in _ARCH_FIELDS):
        return []
    d, depth = arch.embed_dim, arch.depth
    out = []
    for a, b in _ARCH_FIELDS:
        v = getattr(arch, a)
        out.append(f"model.backbone.{b}={float(v):g}" if a == "mlp_ratio" else f"model.backbone.{b}={int(v)}")
    linear = not cfg.model.get("neck")  # the dense probe: the last block(s), straight into the head
    if depth != int(bb.num_layers):
        if linear:  # the same blocks counted from the end
            last = [depth - int(bb.num_layers) + i for i in bb.out_indices]
            out.append(f"model.backbone.out_indices=[{','.join(map(str, last))}]")
        else:
            quarter = [max(0, depth * k // 4 - 1) for k in (1, 2, 3, 4)]
            out += [f"model.backbone.out_indices=[{','.join(map(str, quarter))}]",
                    f"optim_wrapper.paramwise_cfg.num_layers={depth}"]
    patch, old_patch = arch.patch_size, int(bb.patch_size)
    if linear:
        n_out = len(cfg.model.decode_head.in_channels)
        return out + [f"model.decode_head.in_channels=[{','.join([str(d)] * n_out)}]",
                      f"model.decode_head.channels={d * n_out}"]
    if patch != old_patch and cfg.model.get("neck", {}).get("rescales") is not None:
        # keep the pyramid's strides (e.g. 4..32): rescale by the change of patch size
        scaled = [r * patch / old_patch for r in cfg.model.neck.rescales]
        out.append(f"model.neck.rescales=[{','.join(f'{r:g}' for r in scaled)}]")
    n_out = len(cfg.model.decode_head.in_channels)
    out += [f"model.neck.embed_dim={d}", f"model.decode_head.in_channels=[{','.join([str(d)] * n_out)}]",
            f"model.auxiliary_head.in_channels={d}"]
    return out


def target(cfg) -> EngineTarget:
    """The :class:`EngineTarget` of a UperNet config with mmseg's ``MAE`` backbone (of a generic config:
    for its own checkpoints only)."""
    if generic_config(cfg):
        return EngineTarget(name="mmseg", prefix=PREFIX, arch=None, overrides=lambda src: [], native=native_state,
                            override_flag="--cfg-options ")
    return EngineTarget(name="mmseg", prefix=PREFIX, arch=arch_of_config(cfg.model.backbone),
                        overrides=lambda src: arch_overrides(src, cfg), native=native_state,
                        convert_kwargs={"final_norm": bool(cfg.model.backbone.get("final_norm", False))},
                        override_flag="--cfg-options ",
                        recipe_init={r"^backbone\.layers\.\d+\.attn\.relative_position_index$": "fixed index buffer"})


def generic_config(cfg) -> bool:
    """Whether the config's backbone is a generic one (``TimmGenericBackbone``, see :mod:`.generic`)."""
    return cfg.model.backbone.get("type") == "TimmGenericBackbone"


def fit_heads(cfg, generic=None) -> list[str]:
    """Set the neck's and heads' input channels from the generic backbone's feature maps (logged);
    ``generic``: the backbone already read (else it is read from the config's ``source``)."""
    from droppos.backbones.generic import dense_plan, load_generic

    bb = cfg.model.backbone
    size = bb.get("img_size", 224)
    generic = generic or load_generic(str(bb.source), trust_pickle=bool(bb.get("trust_pickle", False)))
    model = generic.encoder(img_size=size[0] if isinstance(size, (list, tuple)) else size)
    plan = dense_plan(model, maps=int(bb.get("maps", 4)), last=bool(bb.get("last", False)))
    changes = []
    head = cfg.model.decode_head
    if head.get("type") == "BNHead":  # the dense probe: the planned maps, concatenated
        chans = list(plan.channels)
        if list(head.in_channels) != chans or head.channels != sum(chans):
            changes.append(f"adapted to the backbone: decode_head.in_channels {list(head.in_channels)} -> {chans}")
            head.in_channels, head.in_index, head.channels = chans, list(range(len(chans))), sum(chans)
        return changes
    if cfg.model.get("neck"):
        if not plan.plain:
            raise InitError(f"{bb.source}: a hierarchical backbone (strides {plan.strides}) feeds UPerHead directly; "
                            "use upernet_timm_fpn_fmnist (no neck)")
        cfg.model.neck.embed_dim = plan.channels[0]
        chans = [plan.channels[0]] * len(plan.channels)
    elif plan.plain:
        raise InitError(f"{bb.source}: a plain backbone (one stride, {plan.strides[0]}) needs Feature2Pyramid; use "
                        "upernet_timm_plain_fmnist")
    else:
        chans = list(plan.channels)
    head = cfg.model.decode_head
    if list(head.in_channels) != chans:
        changes.append(f"adapted to the backbone: decode_head.in_channels {list(head.in_channels)} -> {chans}")
        head.in_channels = chans
    aux = cfg.model.get("auxiliary_head")
    if aux:
        want = chans[int(aux.get("in_index", 2))]
        if aux.in_channels != want:
            changes.append(f"adapted to the backbone: auxiliary_head.in_channels {aux.in_channels} -> {want}")
            aux.in_channels = want
    return changes
