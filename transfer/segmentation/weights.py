"""Initial weights of the segmentor: resolve ``--init`` to a state dict, load it strictly, report.

``--init`` takes:

* ``scratch``: the recipe's random initialisation (mmseg's ``init_weights``), no file;
* a file already in mmseg names: the backbone alone (``droppos convert --to mmseg`` output, keys
  ``layers.N.*`` / ``patch_embed.projection.*``, with or without a ``backbone.`` prefix), or a
  whole segmentor (keys ``backbone.*``, ``decode_head.*``, ...: e.g. a finished mmseg run);
* anything the converter reads (this project's pretraining checkpoints, official DropPos / MAE
  releases, timm / DeiT weights; ``--from`` forces the format), converted on the fly with
  :func:`droppos.tools.convert.targets.to_mmseg` for the config's image size.

Loading (:func:`load_init`) is strict: every weight of the file must name a parameter of the
model with the same shape, and every backbone parameter must receive a weight, except the two
kinds the MAE segmentation recipe initialises itself when the source has none (listed in the
report): the relative position bias tables (zeros) and the layer-scale vectors ``gamma_1/2``
(``init_values``, 1.0 in our configs, i.e. the identity). A prefix mismatch therefore fails
loudly instead of leaving the backbone random.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

SCRATCH = "scratch"
#: backbone keys the recipe may initialise itself (pattern -> how)
RECIPE_INIT = {
    re.compile(r"^layers\.\d+\.attn\.relative_position_bias_table$"): "zeros (relative position bias, as MAE)",
    re.compile(r"^layers\.\d+\.attn\.relative_position_index$"): "fixed index buffer",
    re.compile(r"^layers\.\d+\.gamma_[12]$"): "init_values (layer scale)",
}
_MMSEG_BACKBONE_KEYS = ("patch_embed.projection.weight", "layers.0.ln1.weight")
_HEAD_PREFIXES = ("decode_head.", "auxiliary_head.", "neck.")


class InitError(ValueError):
    """A one-line problem with ``--init``: names the file and the fix."""


@dataclass
class InitWeights:
    """What ``--init`` resolved to.

    kind: 'scratch' | 'backbone' (state_dict in MAE-backbone names, no prefix) | 'segmentor'
    (state_dict in the segmentor's names). ``meta`` describes the source (method, arch, epochs).
    """

    kind: str
    source: str
    state_dict: dict[str, torch.Tensor] | None = None
    meta: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    backbone: dict = field(default_factory=dict)  # backbone_record of the source, when known
    arch: dict = field(default_factory=dict)  # ViT arguments of the source (embed_dim, depth, ...), when known


@dataclass
class LoadReport:
    kind: str
    source: str
    loaded: list[str] = field(default_factory=list)
    recipe_init: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        if self.kind == SCRATCH:
            return ["init: scratch (random initialisation of the whole model, mmseg's init_weights)"]
        out = [f"init: {self.kind} weights from {self.source}: {len(self.loaded)} tensors loaded"]
        out += [f"  {n}" for n in self.notes]
        if self.recipe_init:
            kinds: dict[str, int] = {}
            for how in self.recipe_init.values():
                kinds[how] = kinds.get(how, 0) + 1
            out += [f"  not in the file, set by the recipe: {n} x {how}" for how, n in kinds.items()]
        return out


# --------------------------------------------------------------------------- resolve
def _tensor_dict(obj) -> dict[str, torch.Tensor] | None:
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    return None


def _unwrap(obj) -> tuple[dict[str, torch.Tensor] | None, dict]:
    """(state dict, meta) of a loaded file, or (None, {}) when there is no tensor dict."""
    if not isinstance(obj, dict):
        return None, {}
    meta = obj.get("meta") if isinstance(obj.get("meta"), dict) else {}
    for key in ("state_dict", "model"):
        sd = _tensor_dict(obj.get(key))
        if sd is not None:
            return sd, meta
    return _tensor_dict(obj), meta


def _strip(sd: dict, prefix: str) -> dict:
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in sd.items()}


def classify_mmseg(sd: dict[str, torch.Tensor]) -> tuple[str | None, dict[str, torch.Tensor]]:
    """('segmentor' | 'backbone' | None, state dict normalised for that kind).

    DDP's ``module.`` prefix is removed; a backbone with a ``backbone.`` prefix is stripped.
    """
    if all(k.startswith("module.") for k in sd):
        sd = _strip(sd, "module.")
    if any(k.startswith(_HEAD_PREFIXES) for k in sd):
        return "segmentor", sd
    bare = _strip(sd, "backbone.") if all(k.startswith("backbone.") for k in sd) else sd
    if any(k in bare for k in _MMSEG_BACKBONE_KEYS):
        return "backbone", bare
    return None, sd


def _sidecar(path: Path) -> dict:
    """``DST.json`` that ``droppos convert`` writes beside its output (meta + backbone record)."""
    import json

    side = path.with_name(path.name + ".json")
    try:
        data = json.loads(side.read_text()) if side.is_file() else {}
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def resolve_init(src: str, fmt: str | None = None, trust_pickle: bool = False,
                 img_size: int | tuple[int, int] = 512, final_norm: bool = False,
                 arch: str | None = None) -> InitWeights:
    """Turn ``--init SRC [--from FMT]`` into weights in mmseg names (see the module docstring).

    ``img_size`` and ``final_norm`` are the config backbone's; ``arch`` is the converter's
    architecture override (``droppos convert --arch`` syntax) for sources it cannot infer.
    """
    if src == SCRATCH:
        return InitWeights(kind=SCRATCH, source=SCRATCH, meta={"method": SCRATCH})
    path = Path(src)
    if fmt in (None, "mmseg") and path.is_file():
        from droppos.utils.checkpoint import safe_load

        try:
            sd, meta = _unwrap(safe_load(path, trust_pickle=trust_pickle))
        except (ValueError, FileNotFoundError) as e:
            if fmt == "mmseg":
                raise InitError(str(e)) from None
            sd, meta = None, {}  # maybe a format only the converter reads (it will say why not)
        kind, sd = classify_mmseg(sd) if sd is not None else (None, None)
        if kind is not None:
            side = _sidecar(path)
            meta = {**(side.get("meta") or {}), **meta}
            return InitWeights(kind=kind, source=str(path), state_dict=sd, meta=meta,
                               notes=["file already in mmseg names: loaded as is"], backbone=side.get("backbone") or {},
                               arch=side.get("arch") or {})
        if fmt == "mmseg":
            example = next(iter(sd), "no tensors") if sd else "no tensor dict"
            raise InitError(f"{path}: not an mmseg backbone or segmentor state dict (first key: {example}); "
                            "drop --from mmseg to convert it, or convert it with `droppos convert --to mmseg`")
    return _convert(src, fmt, trust_pickle, img_size, final_norm, arch)


def _convert(src: str, fmt: str | None, trust_pickle: bool, img_size, final_norm: bool, arch: str | None) -> InitWeights:
    try:
        from droppos.tools.convert.sources import load_backbone
        from droppos.tools.convert.targets import to_mmseg
    except ImportError as e:
        raise InitError(f"{src}: converting on the fly needs droppos.tools.convert ({e}); "
                        "give a file in mmseg names (`droppos convert --to mmseg`) or --init scratch") from None
    try:
        backbone = load_backbone(src, fmt=fmt, trust_pickle=trust_pickle, arch=arch)
        sd, report = to_mmseg(backbone, img_size, final_norm=final_norm)
    except (ValueError, FileNotFoundError, KeyError) as e:
        raise InitError(str(e).splitlines()[0] if str(e) else f"{src}: {type(e).__name__}") from None
    if not report.ok:
        raise InitError(f"{src}: conversion to mmseg loses backbone weights: "
                        + "; ".join(line.strip() for line in report.lines() if "ERROR" in line))
    kind, sd = classify_mmseg(dict(sd))
    if kind != "backbone":
        raise InitError(f"{src}: the converter's mmseg output has no MAE-backbone keys (first: {next(iter(sd), None)})")
    notes = [f"converted on the fly ({backbone.meta.get('format', fmt)} format) for {img_size} px"] + report.lines()
    return InitWeights(kind="backbone", source=str(src), state_dict=sd, meta=dict(backbone.meta), notes=notes,
                       backbone=dict(backbone.backbone), arch=dict(backbone.arch))


# --------------------------------------------------------------------------- architecture
_ARCH_FIELDS = (("embed_dim", "embed_dims"), ("depth", "num_layers"), ("num_heads", "num_heads"),
                ("patch_size", "patch_size"), ("mlp_ratio", "mlp_ratio"))


def arch_overrides(arch: dict, cfg) -> list[str]:
    """``--cfg-options`` items that make ``cfg``'s UperNet fit a ViT of ``arch`` (empty if it fits)."""
    bb = cfg.model.backbone
    if all(arch.get(a) is None or float(arch[a]) == float(bb.get(b, 4 if b == "mlp_ratio" else -1))
           for a, b in _ARCH_FIELDS):
        return []
    d, depth = int(arch["embed_dim"]), int(arch["depth"])
    out = []
    for a, b in _ARCH_FIELDS:
        if arch.get(a) is not None:
            out.append(f"model.backbone.{b}={float(arch[a]):g}" if a == "mlp_ratio" else f"model.backbone.{b}={int(arch[a])}")
    if depth != int(bb.num_layers):
        quarter = [max(0, depth * k // 4 - 1) for k in (1, 2, 3, 4)]
        out += [f"model.backbone.out_indices=[{','.join(map(str, quarter))}]",
                f"optim_wrapper.paramwise_cfg.num_layers={depth}"]
    patch, old_patch = int(arch.get("patch_size") or bb.patch_size), int(bb.patch_size)
    if patch != old_patch and cfg.model.get("neck", {}).get("rescales") is not None:
        # keep the pyramid's strides (e.g. 4..32): rescale by the change of patch size
        scaled = [r * patch / old_patch for r in cfg.model.neck.rescales]
        out.append(f"model.neck.rescales=[{','.join(f'{r:g}' for r in scaled)}]")
    n_out = len(cfg.model.decode_head.in_channels)
    out += [f"model.neck.embed_dim={d}", f"model.decode_head.in_channels=[{','.join([str(d)] * n_out)}]",
            f"model.auxiliary_head.in_channels={d}"]
    return out


def check_arch(init: InitWeights, cfg) -> None:
    """Raise :class:`InitError` with the exact ``--cfg-options`` when the source's ViT differs from the config's."""
    if not init.arch:
        return
    fix = arch_overrides(init.arch, cfg)
    if fix:
        have = ", ".join(f"{a}={init.arch.get(a)}" for a, _ in _ARCH_FIELDS)
        want = ", ".join(f"{b}={cfg.model.backbone.get(b)}" for _, b in _ARCH_FIELDS)
        raise InitError(f"{init.source}: wrong architecture for this config: the weights are a ViT with {have}, the "
                        f"config's backbone has {want}; pick the matching config or add --cfg-options {' '.join(fix)}")


# --------------------------------------------------------------------------- load
def _recipe_init(key: str) -> str | None:
    return next((how for pat, how in RECIPE_INIT.items() if pat.match(key)), None)


def _arch_hint(cfg_backbone: dict | None) -> str:
    if not cfg_backbone:
        return ""
    keys = ("embed_dims", "num_layers", "num_heads", "patch_size", "img_size")
    return " (config backbone: " + ", ".join(f"{k}={cfg_backbone.get(k)}" for k in keys if k in cfg_backbone) + ")"


def check_against(model_sd: dict[str, torch.Tensor], file_sd: dict[str, torch.Tensor], where: str,
                  allow_missing=lambda k: None, cfg_backbone: dict | None = None) -> dict[str, str]:
    """Raise :class:`InitError` unless ``file_sd`` fits ``model_sd``; returns the allowed-missing keys.

    Errors: keys of the file the model lacks, shapes that differ (the wrong architecture), model
    keys the file lacks (unless ``allow_missing(key)`` says how the recipe sets them).
    """
    unexpected = sorted(set(file_sd) - set(model_sd))
    wrong = [f"{k} {tuple(file_sd[k].shape)} vs model {tuple(model_sd[k].shape)}"
             for k in file_sd if k in model_sd and tuple(file_sd[k].shape) != tuple(model_sd[k].shape)]
    missing = sorted(set(model_sd) - set(file_sd))
    allowed = {k: how for k in missing if (how := allow_missing(k))}
    missing = [k for k in missing if k not in allowed]
    hint = _arch_hint(cfg_backbone)

    def short(items):
        return ", ".join(items[:3]) + (f" (+{len(items) - 3} more)" if len(items) > 3 else "")

    if wrong:
        raise InitError(f"{where}: wrong architecture for this config: {len(wrong)} shape mismatches, e.g. "
                        f"{short(wrong)}{hint}; pick the matching config or override it with --cfg-options "
                        "model.backbone.embed_dims=... (or convert for this image size)")
    if unexpected:
        raise InitError(f"{where}: {len(unexpected)} weights have no place in the model, e.g. {short(unexpected)}"
                        f"{hint}; is this a checkpoint of another architecture or with another key prefix?")
    if missing:
        raise InitError(f"{where}: {len(missing)} model weights are not in the file, e.g. {short(missing)}; "
                        "refusing to leave them randomly initialised")
    return allowed


def load_init(model: torch.nn.Module, init: InitWeights, cfg_backbone: dict | None = None) -> LoadReport:
    """Copy ``init`` into ``model`` (an mmseg ``EncoderDecoder``) after checking it fits exactly.

    Call after ``model.init_weights()`` so that keys the recipe initialises keep their values.
    """
    report = LoadReport(kind=init.kind, source=init.source, notes=list(init.notes))
    if init.kind == SCRATCH:
        return report
    if init.kind == "backbone":
        target, allow = model.backbone, _recipe_init
    elif init.kind == "segmentor":
        target, allow = model, (lambda k: None)
    else:
        raise ValueError(f"unknown init kind {init.kind!r}")
    own = target.state_dict()
    report.recipe_init = check_against(own, init.state_dict, init.source, allow, cfg_backbone)
    merged = dict(own)
    merged.update({k: v.to(own[k].dtype) for k, v in init.state_dict.items()})
    target.load_state_dict(merged, strict=True)
    report.loaded = sorted(init.state_dict)
    return report


def backbone_info(init: InitWeights, cfg_backbone: dict) -> dict:
    """metrics.json ``backbone`` record: the converter's record of the source when there is one
    (so runs of one backbone group together across tasks), else method/epochs from the file's
    meta and the architecture of the config."""
    from droppos.utils.metrics import arch_label, backbone_record

    if init.backbone:
        return dict(init.backbone)
    arch = dict(embed_dim=cfg_backbone.get("embed_dims"), depth=cfg_backbone.get("num_layers"),
                num_heads=cfg_backbone.get("num_heads"), patch_size=cfg_backbone.get("patch_size"))
    meta = init.meta or {}
    method = str(meta.get("method") or ("mmseg" if init.kind == "segmentor" else "unknown"))
    epochs = 0 if init.kind == SCRATCH else meta.get("epochs")  # 0 = the converter's scratch record
    epochs = int(epochs) if isinstance(epochs, (int, float)) else None
    return backbone_record(method, arch_label(arch), epochs=epochs, source=init.source)
