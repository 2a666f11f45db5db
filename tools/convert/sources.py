"""Read a ViT backbone from any supported source into this project's encoder key names.

``load_backbone(src)`` recognises the source by its content (``fmt`` / ``--from`` forces one):

``encoder``     this project's self-describing ``encoder.pth``::

                    droppos convert runs/pt/encoder.pth --to timm --out vit.pth

``checkpoint``  this project's resume file ``checkpoint.pth`` (``model`` keys ``encoder.*`` plus
                pretext keys such as ``pos_decoder.*``, ``mask_pos_token``, ``decoder.*``)::

                    droppos convert runs/pt/checkpoint.pth --to detectron2 --out d2.pth

``droppos``     the official DropPos release: ``{"epoch", "optimizer", "model": "<model name>",
                "state_dict": {"module.<key>": tensor}}`` (``model`` is a *string*; the weights
                are under ``state_dict`` with DDP's ``module.`` prefix; pretext keys
                ``mask_pos_token``, ``decoder_*``, ``aux_decoder_*``, ``mask_token``)::

                    droppos convert DropPos_pretrain_vit_base_patch16_200ep.pth --to mmseg --out m.pth

``mae``         the official MAE release: ``{"model": state_dict, "args": argparse.Namespace}``
                (pretext keys ``mask_token``, ``decoder_*``). The ``Namespace`` is a pickled
                Python object, so reading it needs ``--trust-pickle`` (only for files you
                trust: unpickling can run code). The encoder-only release files
                (``mae_pretrain_vit_base.pth``, ``{"model": ...}``) load without it::

                    droppos convert mae_visualize_vit_base.pth --trust-pickle --to timm --out t.pth

``timm``        a supervised timm / DeiT / AugReg ViT: a plain state dict (``.pth``/``.bin``) or a
                ``.safetensors`` file. ``head.*`` is kept aside as the classifier head; layer scale,
                distillation or register tokens are not this encoder and are refused.
                ``--arch vit_base_patch16_224`` names the timm model when heads cannot be inferred::

                    droppos convert model.safetensors --to timm --out t.pth --arch vit_small_patch16_224

``scratch``     random initialisation (this project's MAE init, fixed seed) from the architecture:
                ``scratch:<size>_p<patch>_<img>[_s<seed>]``, e.g. ``scratch:tiny_p4_32``::

                    droppos convert scratch:base_p16_224 --to detectron2 --out scratch_d2.pth

The result, a :class:`Backbone`, holds the encoder state dict (``VisionTransformer(**arch)``
loads it strictly), its architecture, what was dropped and why, and a ``backbone_record`` for
``metrics.json``. Errors are one-line ``ValueError``/``FileNotFoundError`` naming the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from droppos.utils.checkpoint import ENCODER_FORMAT, safe_load
from droppos.utils.metrics import backbone_record

from .arch import arch_from_name, check_shapes, infer_arch, parse_arch_override

FORMATS = ("encoder", "checkpoint", "droppos", "mae", "timm", "scratch")

_ENCODER_KEY = re.compile(
    r"^(cls_token|pos_embed|patch_embed\.proj\.(weight|bias)|norm\.(weight|bias)|"
    r"blocks\.\d+\.(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias))$"
)
# official releases: keys that belong to the pretext task, not the encoder
_OFFICIAL_PRETEXT = re.compile(r"^(mask_token|mask_pos_token|decoder_|aux_decoder_|decoder\.|pos_decoder\.)")
# keys of timm models that are not this encoder, with the reason shown to the user
_REFUSED = (
    (re.compile(r"^(dist_token|head_dist\.)"), "a distilled DeiT (dist_token); use the non-distilled weights"),
    (re.compile(r"^reg_token"), "a ViT with register tokens, which this encoder does not have"),
    (re.compile(r"\.ls[12]\.|\.gamma_?[12]"), "a ViT with layer scale, which this encoder does not have"),
    (re.compile(r"^fc_norm\."), "a classifier fine-tuned with average pooling (fc_norm): not a pretrained encoder"),
    (re.compile(r"^norm_pre\."), "a ViT with a pre-norm (CLIP style), which this encoder does not have"),
    (re.compile(r"\.q_norm\.|\.k_norm\."), "a ViT with qk-norm, which this encoder does not have"),
)


@dataclass
class Backbone:
    """A ViT encoder read from some source.

    Attributes:
        state_dict: encoder weights in this project's (= timm / official MAE) key names.
        arch: ``VisionTransformer(**arch)`` arguments (img_size = the position embedding's grid).
        meta: ``{"method", "epochs", "source", "format", ...}``.
        dropped: (original key, reason) of every weight left out (pretext heads, classifier head).
        head: the classifier head of a supervised source (``{"weight": (K, D), "bias": (K,)}``), else {}.
        notes: what was inferred rather than read (shown in the key report).
        backbone: ``backbone_record(...)`` for ``metrics.json``.
    """

    state_dict: dict[str, torch.Tensor]
    arch: dict
    meta: dict
    dropped: list[tuple[str, str]] = field(default_factory=list)
    head: dict[str, torch.Tensor] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    backbone: dict = field(default_factory=dict)

    def encoder(self, img_size: int | None = None, **kwargs):
        """A ``VisionTransformer`` with these weights (strict load; position embedding resampled to ``img_size``)."""
        from droppos.models.pos_embed import resample_pos_embed
        from droppos.models.vit import VisionTransformer

        from .arch import grid_of

        arch = dict(self.arch)
        sd = dict(self.state_dict)
        if img_size is not None:
            new = grid_of(arch, img_size)
            sd["pos_embed"] = resample_pos_embed(sd["pos_embed"], new, 1, grid_of(arch))
            arch["img_size"] = [new[0] * arch["patch_size"], new[1] * arch["patch_size"]]
        model = VisionTransformer(**arch, **kwargs)
        model.load_state_dict(sd, strict=True)
        return model


def load_backbone(src: str | Path, fmt: str | None = None, trust_pickle: bool = False, arch: str | dict | None = None) -> Backbone:
    """Read ``src`` (a file path or ``scratch:<spec>``) as a :class:`Backbone`.

    Args:
        src: checkpoint file (.pth/.pt/.bin/.safetensors) or ``scratch:<size>_p<patch>_<img>[_s<seed>]``.
        fmt: force a source format (one of ``FORMATS``); None detects it.
        trust_pickle: allow unpickling non-tensor objects (official MAE ``args``). Unsafe for untrusted files.
        arch: architecture override, ``--arch`` syntax (see :mod:`.arch`) or a dict of fields.
    """
    if fmt is not None and fmt not in FORMATS:
        raise ValueError(f"unknown source format {fmt!r}; choose one of {', '.join(FORMATS)}")
    hint = parse_arch_override(arch) if isinstance(arch, (str, type(None))) else dict(arch)
    src = str(src)
    if src.startswith("scratch:") or fmt == "scratch":
        return _scratch(src, hint)
    path = Path(src)
    where = f"{path}: "
    obj = _read(path, trust_pickle)
    if not isinstance(obj, dict):
        raise ValueError(f"{where}holds a {type(obj).__name__}, not a checkpoint dict")
    forced = fmt is not None
    fmt = fmt or detect_format(obj, where)
    try:
        raw, info = _EXTRACT[fmt](obj, where)
    except (KeyError, TypeError, AttributeError) as e:
        if not forced:
            raise
        raise ValueError(f"{where}is not in the {fmt} format ({type(e).__name__}: {e}); "
                         "drop --from to detect the format") from None
    return _finish(raw, hint, fmt, str(path), info, where)


def detect_format(obj: dict, where: str = "") -> str:
    """The source format of a loaded checkpoint dict (see the module doc)."""
    if obj.get("format") == ENCODER_FORMAT:
        return "encoder"
    model = obj.get("model")
    if isinstance(model, dict) and "meta" in obj and any(str(k).startswith("encoder.") for k in model):
        return "checkpoint"
    if isinstance(obj.get("state_dict"), dict):
        return "droppos"
    if isinstance(model, dict):
        return "mae"
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return "timm"
    keys = ", ".join(map(str, list(obj)[:6]))
    raise ValueError(f"{where}not a ViT checkpoint this converter knows (top-level keys: {keys}); "
                     f"force a format with --from {{{','.join(FORMATS)}}}")


# ---------------------------------------------------------------------------------------- reading
def _read(path: Path, trust_pickle: bool):
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:  # noqa: BLE001 - any parse failure is a bad file
            raise ValueError(f"{path}: not a readable safetensors file ({str(e).splitlines()[0]})") from None
    return safe_load(path, trust_pickle=trust_pickle)


def _strip(sd: dict, prefix: str) -> dict:
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in sd.items()}


def _tensors(sd: dict, where: str, what: str) -> dict[str, torch.Tensor]:
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{where}{what} holds non-tensor entries ({', '.join(map(str, bad[:4]))})")
    return sd


# ---------------------------------------------------------------------------------------- formats
def _from_encoder(obj: dict, where: str):
    meta = obj.get("meta") or {}
    sd = _tensors(obj.get("state_dict") or {}, where, "state_dict")
    return ({k: (v, None) for k, v in sd.items()},
            dict(method=meta.get("method", "unknown"), epochs=_epochs(meta), arch_exact=meta.get("arch"),
                 config=meta.get("config")))


def _from_checkpoint(obj: dict, where: str):
    meta = obj.get("meta") or {}
    model = _tensors(obj["model"], where, "model")
    raw = {}
    for k, v in model.items():
        if k.startswith("encoder."):
            raw[k[len("encoder."):]] = (v, None)
        else:
            raw[k] = (v, f"pretext ({meta.get('method', 'pretraining')} head)")
    return raw, dict(method=meta.get("method", "unknown"), epochs=_epochs(meta), arch_exact=meta.get("arch"),
                     config=meta.get("config"))


def _from_droppos(obj: dict, where: str):
    sd = _tensors(obj["state_dict"], where, "state_dict")
    notes = []
    if any(k.startswith("module.") for k in sd):
        sd = _strip(sd, "module.")
        notes.append("removed DDP's 'module.' prefix from the state_dict keys")
    if "ema_state_dict" in obj:
        notes.append("file also holds an EMA teacher (ema_state_dict); the student state_dict was used")
    name = obj.get("model") if isinstance(obj.get("model"), str) else ""
    epoch = obj.get("epoch")
    return (_official(sd),
            dict(method="droppos", epochs=int(epoch) if isinstance(epoch, int) else None,
                 arch_hint=arch_from_name(name) if name else None, model_name=name, notes=notes))


def _from_mae(obj: dict, where: str):
    model = obj.get("model")
    if isinstance(model, str):
        raise ValueError(f"{where}'model' holds a string ({model!r}), not weights: this is the DropPos "
                         "release format (weights under 'state_dict'); use --from droppos")
    sd = _tensors(model, where, "model")
    notes = []
    if any(k.startswith("module.") for k in sd):
        sd = _strip(sd, "module.")
        notes.append("removed DDP's 'module.' prefix from the model keys")
    args = obj.get("args")
    name = str(getattr(args, "model", "") or "")
    hint = arch_from_name(name) if name else None
    if hint is not None and getattr(args, "input_size", None):
        hint["img_size"] = int(args.input_size)
    epochs = getattr(args, "epochs", None)
    if "epoch" in obj and isinstance(obj["epoch"], int):
        epochs = obj["epoch"] + 1  # MAE's misc.save_model stores the 0-based epoch index
    return _official(sd), dict(method="mae", epochs=epochs, arch_hint=hint, model_name=name, notes=notes)


def _from_timm(obj: dict, where: str):
    sd = _tensors(obj, where, "state dict")
    for prefix in ("module.", "model."):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = _strip(sd, prefix)
    raw = {}
    for k, v in sd.items():
        if k.startswith("head."):
            raw[k] = (v, "classifier head (kept as Backbone.head)")
        elif k.startswith("pre_logits."):
            raw[k] = (v, "pre-logits layer of the classifier")
        else:
            raw[k] = (v, None)
    return raw, dict(method="supervised", epochs=None)


def _official(sd: dict) -> dict:
    return {k: (v, "pretext (official release)" if _OFFICIAL_PRETEXT.match(k) else None) for k, v in sd.items()}


_EXTRACT = {"encoder": _from_encoder, "checkpoint": _from_checkpoint, "droppos": _from_droppos,
            "mae": _from_mae, "timm": _from_timm}


def _epochs(meta: dict) -> int | None:
    done = meta.get("epochs_done")
    return int(done) if done is not None else meta.get("epochs")


# ---------------------------------------------------------------------------------------- common
def _finish(raw: dict, hint: dict, fmt: str, source: str, info: dict, where: str) -> Backbone:
    """Split keys (encoder / dropped / refused), infer and check the architecture."""
    sd, dropped, head, unknown = {}, [], {}, []
    for k, (v, reason) in raw.items():
        if reason is not None:
            dropped.append((k, reason))
            if k in ("head.weight", "head.bias"):
                head[k.split(".")[1]] = v
        elif _ENCODER_KEY.match(k):
            sd[k] = v
        else:
            unknown.append(k)
    if not any(k in sd for k in ("cls_token", "pos_embed", "patch_embed.proj.weight")):
        first = ", ".join(list(raw)[:4])
        raise ValueError(f"{where}not a ViT: no cls_token / pos_embed / patch_embed found (first keys: {first})")
    for pattern, why in _REFUSED:
        hits = [k for k in unknown if pattern.search(k)]
        if hits:
            raise ValueError(f"{where}{why} (keys {', '.join(hits[:3])})")
    if unknown:
        raise ValueError(f"{where}{len(unknown)} weights are neither encoder nor known pretext keys: "
                         f"{', '.join(unknown[:5])}; this is not a standard ViT encoder")
    notes = list(info.get("notes", []))
    hint = {**(info.get("arch_exact") or {}), **hint}
    hint = _soft_hint(info.get("arch_hint"), info.get("model_name"), sd, hint, notes)
    pos = sd.get("pos_embed")
    if pos is not None and pos.ndim == 3:
        n = pos.shape[1]
        if int(round(n ** 0.5)) ** 2 == n and n > 1:  # timm no_embed_class: no [cls] row
            sd["pos_embed"] = torch.cat([pos.new_zeros(1, 1, pos.shape[2]), pos], dim=1)
            notes.append("pos_embed had no [cls] row (timm no_embed_class); added a zero row (the same network)")
    cast = [k for k, v in sd.items() if v.is_floating_point() and v.dtype != torch.float32]
    if cast:
        notes.append(f"cast {len(cast)} tensors from {sd[cast[0]].dtype} to float32")
    sd = {k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()}
    arch, arch_notes = infer_arch(sd, hint, where)
    check_shapes(sd, arch, where)
    meta = {"method": info.get("method", "unknown"), "epochs": info.get("epochs"), "source": source, "format": fmt}
    for k in ("model_name", "config"):
        if info.get(k):
            meta[k] = info[k]
    return Backbone(state_dict=sd, arch=arch, meta=meta, dropped=dropped, head=head, notes=notes + arch_notes,
                    backbone=backbone_record(meta["method"], arch, meta["epochs"], source))


def _soft_hint(named: dict | None, name: str | None, sd: dict, hint: dict, notes: list[str]) -> dict:
    """Fields from a model name stored in the file, used only where they agree with the weights."""
    if not named:
        return hint
    width = sd["cls_token"].shape[-1] if "cls_token" in sd else None
    if named.get("embed_dim") != width:
        notes.append(f"model name {name!r} does not match the weights (width {width}); name ignored")
        return hint
    return {**{k: v for k, v in named.items() if k in ("num_heads", "img_size")}, **hint}


_SCRATCH = re.compile(r"^(tiny|small|base|large|huge)(?:_p(\d+))?(?:_(\d+))?(?:_s(\d+))?$")


def _scratch(src: str, hint: dict) -> Backbone:
    """Random init of ``scratch:<size>_p<patch>_<img>[_s<seed>]`` (or ``--arch`` fields)."""
    from droppos.models.vit import vit_arch_args
    from droppos.models.vit import VisionTransformer

    spec = src.split(":", 1)[1] if ":" in src else ""
    arch, seed = {}, 0
    if spec:
        m = _SCRATCH.match(spec)
        if m is None:
            raise ValueError(f"{src}: expected scratch:<size>_p<patch>_<img>[_s<seed>], e.g. scratch:tiny_p4_32")
        size, p, img, s = m.groups()
        arch = vit_arch_args(size, patch_size=int(p or 16), img_size=int(img or 224))
        seed = int(s or 0)
    arch.update(hint)
    need = {"embed_dim", "depth", "num_heads", "patch_size", "img_size"} - set(arch)
    if need:
        raise ValueError(f"{src}: the scratch architecture lacks {sorted(need)}; use scratch:<size>_p<patch>_<img>")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = VisionTransformer(**arch)
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    arch = model.arch_args()
    meta = {"method": "scratch", "epochs": 0, "source": src, "format": "scratch", "seed": seed}
    return Backbone(state_dict=sd, arch=arch, meta=meta, notes=[f"random MAE-style init, seed {seed}"],
                    backbone=backbone_record("scratch", arch, 0, src))
