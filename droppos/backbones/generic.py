"""Any architecture as a backbone: ``timm:<model_name>[:<weights>]`` and registered plug-ins.

A generic backbone is a model that keeps timm's contract (``forward_features``,
``forward_head(x, pre_logits=True)``, ``num_features``; ``forward_intermediates`` and
``feature_info`` for dense tasks). Sources::

    timm:vit_small_patch14_reg4_dinov2               # random init (fixed seed), any timm model
    timm:convnext_tiny:/ckpt/convnext_tiny.safetensors
    myplugin:/ckpt/mine.pth                           # a class registered with droppos.backbones.register

Weights are read by the project's safe loader, passed through the model family's own timm
``checkpoint_filter_fn`` (so every layout timm reads is read: DINOv2 hub names, OpenAI CLIP, BEiT,
EVA, ...), and loaded strictly: the file's classifier head is dropped (listed), anything else that
does not fit is one error with the load report. Plug-ins: ``register(name, builder)`` in code, or an
entry point of the group ``droppos.backbones`` in an installed package; ``builder(**kwargs)``
returns the model (it receives ``num_classes``, ``drop_path_rate`` and ``img_size`` when its
signature takes them).
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from droppos.errors import UserError
from droppos.utils.checkpoint import safe_load
from droppos.utils.metrics import backbone_record

from .hub import cached_file, hub_failure
from .naming import GENERIC, TIMM_PREFIXES, parse_source, providers, register  # noqa: F401 (register: public here)
from .report import KeyReport
from .source import default_name, file_hash

class WeightsMismatch(UserError):
    """The weights do not fit the named model (the load report is the message); exit status 1."""

    exit_code = 1


@dataclass(frozen=True)
class GenericArch:
    """What a generic model is: its name, its input size (from its pretrained config or patch embedding),
    its feature width and its parameter count."""

    model: str
    img_size: tuple[int, int]
    num_features: int
    params: int

    def to_dict(self) -> dict:
        return {"model": self.model, "img_size": list(self.img_size), "num_features": self.num_features,
                "params": self.params}


@dataclass
class GenericBackbone:
    """A generic backbone: how to build it, its weights, and its record (as :class:`~.source.ViTBackbone` has)."""

    name: str  # timm model name or plug-in name
    build: Callable[..., torch.nn.Module]
    state_dict: dict[str, torch.Tensor] | None
    arch: GenericArch
    meta: dict
    notes: list[str] = field(default_factory=list)
    dropped: list[tuple[str, str]] = field(default_factory=list)
    head: dict = field(default_factory=dict)
    backbone: dict = field(default_factory=dict)

    def model(self, img_size: int | None = None, num_classes: int = 0, **kwargs) -> torch.nn.Module:
        """The model with these weights (classifier head new when ``num_classes``), strictly loaded."""
        model = _call(self.build, num_classes=num_classes, img_size=img_size, **kwargs)
        if self.state_dict is not None:
            _load(model, dict(self.state_dict), self.meta.get("source", self.name), allow_missing_head=bool(num_classes))
        return model

    def encoder(self, img_size: int | None = None, **kwargs) -> torch.nn.Module:
        """The feature extractor (no classifier head): ``forward_head(.., pre_logits=True)`` is its feature."""
        return self.model(img_size, 0, **kwargs)

    def classifier(self, img_size: int, num_classes: int, global_pool: str = "avg", drop_path: float = 0.0,
                   train_pos_embed: bool = True, head_init: str = "new") -> torch.nn.Module:
        """The model itself with a new ``num_classes`` head (its own pooling: ``global_pool`` and
        ``train_pos_embed`` are this project's ViT's options)."""
        if head_init == "source":
            raise UserError(f"{self.meta.get('source', self.name)}: --head-init source: a generic backbone keeps no "
                            "classifier head")
        return self.model(img_size, num_classes, drop_path_rate=drop_path)

    def input_size(self, requested: int | None = None) -> int:
        """The run's input size: ``requested`` or the model's own (the model checks what it accepts)."""
        if requested is not None and requested < 1:
            raise UserError(f"image size {requested}: expected a positive size")
        return requested or self.arch.img_size[0]


def _call(builder, **kwargs) -> torch.nn.Module:
    """``builder`` with the keyword arguments its signature takes (``img_size`` only when given)."""
    kwargs = {k: v for k, v in kwargs.items() if v is not None or k == "num_classes"}
    try:
        params = inspect.signature(builder).parameters
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            kwargs = {k: v for k, v in kwargs.items() if k in params}
    except (TypeError, ValueError):
        pass
    try:
        return builder(**kwargs)
    except TypeError as e:  # timm entry points take **kwargs, but not every model takes img_size
        if "img_size" in kwargs and "img_size" in str(e):
            kwargs.pop("img_size")
            return builder(**kwargs)
        raise


def _timm_builder(model_name: str) -> Callable[..., torch.nn.Module]:
    import timm

    if not model_name.startswith("hf-hub:") and not timm.is_model(model_name):
        close = difflib.get_close_matches(model_name, timm.list_models(), n=3, cutoff=0.6)
        hint = f"; closest: {', '.join(close)}" if close else "; `python -c 'import timm; print(timm.list_models(\"*vit*\"))'`"
        raise UserError(f"timm:{model_name}: timm has no model of that name{hint}")

    def build(num_classes: int = 0, drop_path_rate: float = 0.0, img_size=None, **kw):
        if img_size is not None:
            kw["img_size"] = img_size
        return timm.create_model(model_name, pretrained=False, num_classes=num_classes,
                                 drop_path_rate=drop_path_rate, **kw)

    return build


def load_generic(src: str, trust_pickle: bool = False, allow_nonfinite: bool = False, name: str | None = None,
                 method: str | None = None, epochs: int | None = None, pretrained: bool = False) -> GenericBackbone:
    """Read ``timm:<model>[.<tag>][:<weights>]``, ``hf-hub:<org>/<repo>`` or ``<plugin>:<weights>`` (see the
    module docstring). A tag, ``hf-hub:`` or ``pretrained`` loads the published weights through timm's own
    machinery (the Hugging Face cache); ``timm:<model>`` alone is a random init, and says so."""
    parsed = parse_source(src)
    if parsed.kind != GENERIC:
        raise UserError(f"{src}: not a generic backbone source: timm:<model>[.<tag>][:<weights>], hf-hub:<org>/<repo> "
                        f"or <plugin>:<weights> (plug-ins: {', '.join(sorted(providers())) or 'none registered'})")
    kind, rest = parsed.prefix, parsed.rest
    if kind in TIMM_PREFIXES:
        model_name, _, weights = (rest.partition(":") if kind == "timm" else (f"hf-hub:{rest}", "", ""))
        build = _timm_builder(model_name)
        hub = not weights and (kind == "hf-hub" or "." in model_name or pretrained)
    else:
        if pretrained:
            raise UserError(f"--pretrained applies to timm:<model> sources; {kind}: reads its weights from the file")
        model_name, weights, hub = kind, rest, False
        build = providers()[kind]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # a random init is the same every time
        model = _timm_pretrained(model_name, src) if hub else _call(build, num_classes=0)
    for attr in ("forward_features", "forward_head"):
        if not callable(getattr(model, attr, None)):
            raise UserError(f"{src}: the model has no {attr}(); a backbone keeps timm's contract "
                            "(forward_features, forward_head(x, pre_logits=True), num_features)")
    notes, sd = [], None
    meta = {"method": method or ("scratch" if not (weights or hub) else "unknown"), "epochs": epochs, "source": src,
            "format": kind, "model_name": model_name}
    if weights:
        path = Path(weights)
        sd = _read_weights(path, trust_pickle)
        if not allow_nonfinite:
            bad = [k for k, v in sd.items() if v.is_floating_point() and not torch.isfinite(v).all()]
            if bad:
                raise UserError(f"{path}: non-finite weights (NaN/Inf) in {', '.join(bad[:3])}; the file is damaged "
                                "(pass --allow-nonfinite to read it anyway)")
        notes += _load(model, dict(sd), str(path), allow_missing_head=False).notes
        meta["sha256"] = file_hash(path)
    else:
        sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if hub:
            meta.update(_hub_identity(model))
            notes.append(f"published weights of {meta['repo'] or model_name} (revision {meta['revision'] or '?'}) "
                         "through timm's pretrained loader")
        else:
            notes.append(f"random init of {model_name} (seed 0): {kind} builds it without weights "
                         "(a tag, timm:<model>.<tag>, or --pretrained loads published ones)")
    size = _input_size(model)
    params = sum(p.numel() for p in model.parameters())
    arch = GenericArch(model_name, (int(size[0]), int(size[1])), int(model.num_features), params)
    record = backbone_record(meta["method"], model_name, epochs if (weights or hub) else 0, src,
                             id=name or _default_id(src, model_name, weights),
                             sha256=meta.get("sha256"))
    record.update({k: meta[k] for k in ("repo", "revision") if meta.get(k)})
    record["params_M"] = round(params / 1e6, 3)
    return GenericBackbone(model_name, build, sd, arch, meta, notes, backbone=record)


def _default_id(src: str, model_name: str, weights: str) -> str:
    """The row name without ``--name``: the model and its weights file's own name (``timm:vit_small_patch16_224:
    /ckpt/dino_s16.pth`` -> ``vit_small_patch16_224-dino_s16``), not the file's whole path; a hub name or a
    random init: the source (``timm_vit_base_patch16_224.mae``)."""
    if weights:
        return f"{model_name}-{default_name(weights)}"
    return default_name(src.replace(":", "_").replace("/", "_"))


def _timm_pretrained(model_name: str, src: str) -> torch.nn.Module:
    """The model with its published weights, by ``timm.create_model(..., pretrained=True)``; one line when the
    name has no weights or they cannot be had (never a random model under a pretrained name)."""
    import timm
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    repo = model_name[len("hf-hub:"):]
    if not model_name.startswith("hf-hub:"):
        try:
            cfg = timm.models.get_pretrained_cfg(model_name)
        except RuntimeError as e:  # "Invalid pretrained tag (...) for ..."
            raise UserError(f"{src}: {e}; the tags with weights: timm.list_pretrained('{model_name.split('.')[0]}.*')")
        if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
            base = model_name.split(".")[0]
            raise UserError(f"{src}: timm has no published weights for {model_name}; choose a tag that has them "
                            f"(timm.list_pretrained('{base}.*')), or drop the tag / --pretrained for a random init")
        repo = cfg.hf_hub_id or cfg.url or cfg.file
    try:
        return timm.create_model(model_name, pretrained=True, num_classes=0)
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as e:
        raise hub_failure(src, repo, e) from None
    except RuntimeError as e:  # timm: "No pretrained weights exist for ..."
        raise UserError(f"{src}: {str(e).splitlines()[0]}") from None


def _hub_identity(model: torch.nn.Module) -> dict:
    """The repo, revision (commit hash) and sha256 of the weights file timm read from the hub cache."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    repo = cfg.get("hf_hub_id") or ""
    path = cached_file(repo) if repo else None
    return {"repo": repo, "revision": path.parent.name if path else "", "sha256": file_hash(path) if path else None}


def _input_size(model) -> tuple[int, int]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    size = cfg.get("input_size")
    if size:
        return int(size[1]), int(size[2])
    pe = getattr(model, "patch_embed", None)
    if pe is not None and getattr(pe, "img_size", None):
        return tuple(int(v) for v in pe.img_size)
    return 224, 224


def _read_weights(path: Path, trust_pickle: bool) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise UserError(f"{path}: no such weights file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            obj = load_file(str(path))
        except Exception as e:  # noqa: BLE001 - any parse failure is a bad file
            raise UserError(f"{path}: not a readable safetensors file ({str(e).splitlines()[0]})") from None
    else:
        obj = safe_load(path, trust_pickle=trust_pickle)
    for key in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{path}: no state dict of tensors in it (top-level keys: {', '.join(map(str, list(obj)[:6]))})")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def _load(model: torch.nn.Module, sd: dict, where: str, allow_missing_head: bool) -> KeyReport:
    """Through the family's timm ``checkpoint_filter_fn``, then strictly; returns the report, raises it in one line."""
    notes = []
    module = importlib.import_module(type(model).__module__)
    filter_fn = getattr(module, "checkpoint_filter_fn", None)
    if filter_fn is not None:
        try:
            sd = filter_fn(sd, model)
            notes.append(f"read through timm's {module.__name__}.checkpoint_filter_fn")
        except Exception as e:  # noqa: BLE001 - a layout the filter does not know: load as is, the report says
            notes.append(f"timm's checkpoint filter did not apply ({type(e).__name__}); loaded as is")
    own = model.state_dict()
    head = [k for k in sd if k not in own and k.split(".")[0] in ("head", "fc", "classifier", "heads")]
    for k in head:
        sd.pop(k)
    if head:
        notes.append(f"dropped the file's classifier head: {', '.join(head[:4])}")
    rep = KeyReport(source=where, target=type(model).__name__, stage="load", notes=notes,
                    dropped=[(k, "the file's classifier head") for k in head])
    rep.wrong_shape = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in sd.items()
                       if k in own and tuple(v.shape) != tuple(own[k].shape)]
    rep.missing = [k for k in own if k not in sd and not (allow_missing_head and k.split(".")[0] in ("head", "fc",
                                                                                                      "classifier"))]
    rep.unmapped = [k for k in sd if k not in own]
    if not rep.ok:
        parts = []
        if rep.missing:
            parts.append(f"{len(rep.missing)} model weights not in the file ({', '.join(rep.missing[:3])})")
        if rep.unmapped:
            parts.append(f"{len(rep.unmapped)} file weights with no place ({', '.join(rep.unmapped[:3])})")
        if rep.wrong_shape:
            wrong = [f"{k} {a} vs model {b}" for k, a, b in rep.wrong_shape[:2]]
            parts.append(f"{len(rep.wrong_shape)} shape mismatches ({', '.join(wrong)})")
        raise WeightsMismatch(f"{where}: the weights do not fit the model: {'; '.join(parts)}; check the model name")
    model.load_state_dict({**own, **sd}, strict=True)
    rep.loaded = list(sd)
    return rep


# ---------------------------------------------------------------------------------------- dense features
@dataclass
class DensePlan:
    """Which feature maps a dense task reads: ``plain`` (one stride: a ViT's patch grid) or a pyramid."""

    plain: bool
    indices: list[int]  # forward_intermediates indices
    channels: list[int]
    strides: list[int]


def dense_plan(model: torch.nn.Module, maps: int = 1, last: bool = False) -> DensePlan:
    """From timm's ``feature_info``: a plain model gives ``maps`` evenly spaced blocks (the last one
    when ``maps`` is 1); a hierarchical one the last stage of each stride 4, 8, 16, 32. ``last`` (the
    dense probe): the last ``maps`` blocks of a plain model, the deepest ``maps`` of those stages."""
    info = getattr(model, "feature_info", None)
    if not info or not callable(getattr(model, "forward_intermediates", None)):
        raise UserError(f"{type(model).__name__}: no feature_info / forward_intermediates, so no feature maps for "
                        "detection or segmentation (timm models have them; a plug-in must provide them)")
    info = [dict(i) for i in info]
    reductions = {int(i["reduction"]) for i in info}
    if len(reductions) == 1:
        n = len(info)
        if last:
            idx = [max(0, n - maps + k) for k in range(maps)]
        else:
            idx = [n - 1] if maps == 1 else [max(0, math.ceil((k + 1) * n / maps) - 1) for k in range(maps)]
        return DensePlan(True, idx, [int(info[i]["num_chs"]) for i in idx], [int(info[i]["reduction"]) for i in idx])
    idx = [max(i for i, f in enumerate(info) if int(f["reduction"]) == r) for r in (4, 8, 16, 32)
           if any(int(f["reduction"]) == r for f in info)]
    if last:
        idx = idx[-maps:]
    elif len(idx) < 3:
        raise UserError(f"{type(model).__name__}: feature maps at strides {sorted(reductions)}: a pyramid needs "
                        "strides 4/8/16/32 (at least three of them)")
    return DensePlan(False, idx, [int(info[i]["num_chs"]) for i in idx], [int(info[i]["reduction"]) for i in idx])


def dense_features(model: torch.nn.Module, x: torch.Tensor, plan: DensePlan) -> list[torch.Tensor]:
    """The planned NCHW maps of ``x`` through timm's ``forward_intermediates`` (a block planned twice, in a
    model shallower than the maps asked for, is given twice)."""
    unique = sorted(set(plan.indices))
    out = model.forward_intermediates(x, indices=unique, intermediates_only=True, output_fmt="NCHW")
    by_index = dict(zip(unique, out))
    return [by_index[i] for i in plan.indices]
