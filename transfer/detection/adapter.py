"""detectron2's side of the one init path (:mod:`droppos.backbones.into_engine`): key names, native files,
and the config <-> architecture mapping of ViTDet's ``model.backbone.net``.

``--backbone`` takes ``scratch`` (detectron2's random init), a detectron2 file
(``{"model": {"backbone.net.*": ...}}``: ``droppos convert --to detectron2`` output or a run's
``model_final.pth``), or anything the readers read, converted for the config's
``model.backbone.net.pretrain_img_size``. Expected missing: the relative position tables
``rel_pos_h/w`` (ViTDet zero-initialises them); weights outside ``backbone.net`` start from the
recipe's init unless the file has them.
"""

from __future__ import annotations

from droppos.backbones.arch import ViTArch
from droppos.backbones.into_engine import EngineTarget, InitError  # noqa: F401 - InitError re-exported for callers

NET = "backbone.net."
_TOP = ("backbone.", "proposal_generator.", "roi_heads.", "pixel_")


def arch_of_config(net) -> ViTArch:
    """The ViT of the config's ``model.backbone.net`` (a ViT LazyCall node or module)."""
    return ViTArch(embed_dim=int(net.embed_dim), depth=int(net.depth), num_heads=int(net.num_heads),
                   patch_size=int(net.patch_size), img_size=int(net.pretrain_img_size),
                   mlp_ratio=float(net.get("mlp_ratio", 4.0) if hasattr(net, "get") else getattr(net, "mlp_ratio", 4.0)))


def native_state(obj) -> dict | None:
    """The state dict of a loaded detectron2 file (``{"model": {"backbone....": tensor}}``), else None."""
    model = obj.get("model") if isinstance(obj, dict) else None
    if isinstance(model, dict) and model and all(str(k).startswith(_TOP) for k in model):
        return model
    return None


def overrides(cfg):
    """``KEY=VALUE`` overrides that make the config's ViT (and its pyramid) fit a source architecture."""
    net = cfg.model.backbone.net

    def fit(src: ViTArch) -> list[str]:
        values = {k: getattr(src, k) for k in ("embed_dim", "depth", "num_heads", "patch_size", "mlp_ratio")}
        out = [f"model.backbone.net.{k}={v:g}" if k == "mlp_ratio" else f"model.backbone.net.{k}={int(v)}"
               for k, v in values.items() if float(v) != float(net.get(k, 4.0 if k == "mlp_ratio" else -1))]
        new, old = src.patch_size, int(net.patch_size)
        if new != old:  # keep the pyramid's strides: each scale factor changes with the patch size
            scales = [float(s) * new / old for s in cfg.model.backbone.scale_factors]
            out.append(f"model.backbone.scale_factors=[{','.join(f'{s:g}' for s in scales)}]")
        return out

    return fit


def target(cfg) -> EngineTarget:
    """The :class:`EngineTarget` of a ViTDet config (of a generic config: for its own checkpoints only)."""
    if generic_net(cfg) is not None:
        return EngineTarget(name="detectron2", prefix="backbone.", arch=None, overrides=lambda src: [],
                            native=native_state, override_flag="")
    return EngineTarget(name="detectron2", prefix=NET, arch=arch_of_config(cfg.model.backbone.net),
                        overrides=overrides(cfg), native=native_state, override_flag="",
                        recipe_init={r"^backbone\.net\.blocks\.\d+\.attn\.rel_pos_[hw]$":
                                     "zeros (ViTDet relative position tables)"})


def generic_net(cfg) -> str | None:
    """The config key of its generic backbone node (``TimmBackbone``, see :mod:`.generic`):
    ``model.backbone.net`` or ``model.backbone.bottom_up``; None for a ViTDet ViT."""
    bb = cfg.model.backbone
    for key in ("net", "bottom_up"):
        node = bb.get(key) if hasattr(bb, "get") else None
        target = node.get("_target_") if node is not None and hasattr(node, "get") else None
        if target is not None and getattr(target, "__name__", str(target)).endswith("TimmBackbone"):
            return f"model.backbone.{key}"
    return None
