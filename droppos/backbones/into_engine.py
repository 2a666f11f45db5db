"""A backbone into an engine's model: a backbone source -> weights in the engine's names -> a strict load -> a report.

Detection and segmentation start their models here (classification and probes build theirs from the
backbone itself: :class:`droppos.backbones.protocol.Backbone`); the
engine adapters (``transfer/detection/adapter.py``, ``transfer/segmentation/adapter.py``) only say
what differs per engine, as an :class:`EngineTarget`: the converter target, where the backbone
sits in the whole model, the config's ViT, the override advice, which target-only weights the
recipe initialises itself, and how to recognise a file already in the engine's names.

:func:`resolve` turns ``--backbone`` into the :class:`StartWeights` a run starts from:

* ``scratch``: nothing is loaded, the engine's own random initialisation;
* a file in the engine's own names (``{"model": {"backbone.net.*": ...}}`` of detectron2, an mmseg
  segmentor or ``MAE``-backbone state dict): used as is (whole model or backbone only);
* anything the readers read (:mod:`droppos.backbones.readers`), or ``scratch:<spec>``: checked
  against the config's architecture (a mismatch is one line with the overrides that fit), then
  converted (position embedding resampled to the config's size).

:func:`load` checks the weights against the model and loads them strictly. Target-only weights
have one policy each: mmseg's layer scale and relative position bias are written by the converter
(so a converted file loads anywhere), detectron2's relative position tables are left to the
recipe's zero init (the engine adapter's ``recipe_init`` lists them). Everything else that does not
land stops the run: a backbone weight the file lacks, a file weight the model lacks, a shape
mismatch. Weights outside the backbone that the file lacks (pyramid, heads) start from the recipe's
init, listed, unless ``require_full`` (evaluation). The report goes into ``init.json``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from droppos.errors import UserError
from droppos.runs import InitRecord
from droppos.utils.checkpoint import atomic_save, safe_load
from droppos.utils.metrics import backbone_record

from .convert import ConversionError, convert_backbone
from .arch import ViTArch
from .naming import ENGINE_SCRATCH, FILE
from .options import BackboneOptions
from .report import KeyReport, short
from .source import file_hash

INIT_JSON = "init.json"
ARCH_FIELDS = ("embed_dim", "depth", "num_heads", "patch_size", "mlp_ratio")


class InitError(UserError):
    """The initial weights do not fit the model; the message says why and how to fix it."""


@dataclass
class EngineTarget:
    """What an engine adapter tells the init path (see the module docstring)."""

    name: str  # converter target: "detectron2" | "mmseg"
    prefix: str  # where the backbone's keys sit in the whole model: "backbone.net." | "backbone."
    arch: ViTArch | None  # the config's ViT (None: a config of a generic backbone)
    overrides: Callable[[ViTArch], list[str]]  # config overrides that make the config fit a source architecture
    native: Callable[[object], dict | None]  # a loaded file in the engine's names -> whole-model state dict
    recipe_init: dict[str, str] = field(default_factory=dict)  # regex over model keys -> how the recipe sets it
    convert_kwargs: dict = field(default_factory=dict)
    override_flag: str = ""  # how the user passes overrides ("KEY=VALUE" or "--cfg-options KEY=VALUE")


@dataclass
class StartWeights:
    """What ``--backbone`` resolved to. ``state_dict`` is in whole-model names (None for scratch)."""

    source: str
    kind: str  # "scratch" | "native" | "converted" | "generic" (built and loaded by the engine from the source)
    record: dict
    state_dict: dict[str, torch.Tensor] | None = None
    conversion: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------- resolve
def resolve(opts: BackboneOptions, target: EngineTarget) -> StartWeights:
    """``--backbone`` (and its flags) as the :class:`StartWeights` of ``target`` (see the module docstring)."""
    src, name = opts.backbone, opts.source
    if not src:
        raise InitError("no --backbone given: a checkpoint in any layout the readers know, 'scratch' (the engine's "
                        "random init) or scratch:<size>_p<patch>_<img>")
    if name.kind == ENGINE_SCRATCH:
        record = backbone_record("scratch", _arch_name(target), 0, f"scratch ({target.name} init)",
                                 id=opts.name or "scratch")
        return StartWeights(src, "scratch", record)
    if name.generic:
        raise InitError(f"{src}: a generic backbone goes with the engine's generic configs (detect: mask_rcnn_timm_*, "
                        "segment: upernet_timm_*), which build it from this source; this config builds a ViT")
    native = _native(src, opts, target)
    if native is not None:
        return native
    bb = opts.read()
    check_arch(bb.arch, target, src)
    try:
        sd, report = convert_backbone(bb, target.name, img_size=target.arch.img_size, **target.convert_kwargs)
    except ConversionError as e:
        raise InitError(f"{src}: {e}") from None
    sd = {k if k.startswith(target.prefix) else target.prefix + k: v for k, v in sd.items()}
    return StartWeights(src, "converted", dict(bb.backbone), sd, report.to_dict(), report.lines())


def _native(src: str, opts: BackboneOptions, target: EngineTarget) -> StartWeights | None:
    """A file already in the engine's names, or None (``--from`` other than the engine's: never native)."""
    path = Path(src)
    forced = opts.source_format == target.name
    if (opts.source_format is not None and not forced) or opts.source.kind != FILE \
            or path.suffix in (".safetensors", ".npz"):
        return None
    if not path.is_file():
        raise InitError(f"{path}: no such checkpoint file")
    try:
        obj = safe_load(path, trust_pickle=opts.trust_pickle)
    except UserError:
        if forced:
            raise
        return None  # pickled objects: the readers say what to do
    sd = target.native(obj)
    if sd is None:
        if forced:
            first = next(iter(obj), "nothing") if isinstance(obj, dict) else type(obj).__name__
            raise InitError(f"{path}: not a {target.name} state dict (first key: {first}); drop --from {target.name} "
                            "to read it with the readers")
        return None
    side = _sidecar(path)  # a converted file's or a run's record: the backbone it came from
    record = dict(side.get("backbone") or backbone_record(opts.method or "unknown", _arch_name(target), opts.pretrain_epochs,
                                                          src, sha256=file_hash(path)))
    if opts.name:
        record["id"] = opts.name
    return StartWeights(src, "native", record, sd, notes=[f"file already in {target.name} names: loaded as is"])


def _sidecar(path: Path) -> dict:
    """``OUT.json`` that ``droppos convert`` writes beside its output, or a run's ``init.json``."""
    for side in (path.with_name(path.name + ".json"), path.parent / INIT_JSON):
        try:
            data = json.loads(side.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and isinstance(data.get("backbone"), dict):
            return data
    return {}


def _arch_name(target: EngineTarget) -> dict | str:
    return target.arch.to_dict() if target.arch is not None else "unknown"


def check_arch(src_arch: ViTArch, target: EngineTarget, src: str) -> None:
    """One line with the overrides that fit when the source's ViT is not the config's."""
    if target.arch is None:
        raise InitError(f"{src}: the config builds a generic backbone; a ViT checkpoint goes with a ViT config")
    diff = [k for k in ARCH_FIELDS if float(getattr(src_arch, k)) != float(getattr(target.arch, k))]
    if diff:
        have = ", ".join(f"{k}={getattr(src_arch, k)}" for k in diff)
        want = ", ".join(f"{k}={getattr(target.arch, k)}" for k in diff)
        raise InitError(f"{src}: the weights are a ViT with {have} but the config builds {want}; use a matching "
                        f"config or pass {target.override_flag}{' '.join(target.overrides(src_arch))}")


# ---------------------------------------------------------------------------------------- load
def check(model_sd: dict[str, torch.Tensor], init: StartWeights, target: EngineTarget) -> KeyReport:
    """The :class:`KeyReport` of loading ``init`` into a model with state dict ``model_sd`` (nothing loaded)."""
    sd = init.state_dict or {}
    rep = KeyReport(source=init.source, target=target.name, stage="load", notes=list(init.notes))
    rep.unmapped = sorted(set(sd) - set(model_sd))
    rep.wrong_shape = [(k, tuple(v.shape), tuple(model_sd[k].shape)) for k, v in sd.items()
                       if k in model_sd and tuple(v.shape) != tuple(model_sd[k].shape)]
    bad = {k for k, _, _ in rep.wrong_shape}
    rep.loaded = [k for k in model_sd if k in sd and k not in bad]
    rules = [(re.compile(p), how) for p, how in target.recipe_init.items()]
    for k in model_sd:
        if k in sd:
            continue
        how = next((h for p, h in rules if p.match(k)), None)
        if how is not None:
            rep.recipe_init[k] = how
        elif k.startswith(target.prefix):
            rep.missing.append(k)
        else:
            rep.random_init.append(k)
    return rep


def explain(rep: KeyReport, target: EngineTarget) -> str:
    """One line for a failed load: a width/depth/patch mismatch named as such, with the overrides."""
    p = target.prefix
    shapes = {k: a for k, a, _ in rep.wrong_shape}
    hints = []
    w = next((a for k, a in shapes.items() if k.endswith("patch_embed.proj.weight") or k.endswith(
        "patch_embed.projection.weight")), None)
    if w is not None and target.arch is not None:
        hints.append(f"the file's patch embedding is {tuple(w)} (width {w[0]}, patch {w[-1]}), the config's ViT has "
                     f"embed_dim={target.arch.embed_dim}, patch_size={target.arch.patch_size}")
    elif rep.wrong_shape:
        k, a, b = rep.wrong_shape[0]
        hints.append(f"{len(rep.wrong_shape)} shape mismatches, e.g. {k} file {tuple(a)} vs model {tuple(b)}")
    if rep.unmapped:
        hints.append(f"{len(rep.unmapped)} file weights have no place in the model: {short(rep.unmapped, 3)}")
    if rep.missing:
        hints.append(f"{len(rep.missing)} backbone weights are not in the file: {short(rep.missing, 3)}")
    where = f" (the backbone's keys start with {p!r})" if rep.unmapped and not rep.loaded else ""
    return (f"{rep.source}: does not fit the model: {'; '.join(hints)}{where}; use a matching config "
            f"(overrides: {target.override_flag}model...) or convert the source for it")


def load(model: torch.nn.Module, init: StartWeights, target: EngineTarget, require_full: bool = False) -> KeyReport:
    """Check ``init`` against ``model`` and load it strictly; raises :class:`InitError` with one line."""
    if init.kind == "scratch":
        return KeyReport(source=init.source, target=target.name, stage="load",
                         notes=[f"scratch: the whole model keeps {target.name}'s random init"])
    if init.kind == "generic":  # the backbone read and strictly loaded its weights when it was built
        return KeyReport(source=init.source, target=target.name, stage="load",
                         notes=["generic backbone: weights loaded when it was built", *init.notes,
                                                     "random init: neck and heads"])
    own = model.state_dict()
    rep = check(own, init, target)
    if not rep.ok:
        print("\n".join(rep.lines()))
        raise InitError(explain(rep, target))
    if not rep.loaded:
        raise InitError(f"{init.source}: no weight of the file is in the model")
    if require_full and rep.random_init:
        raise InitError(f"{init.source}: holds no weights for {len(rep.random_init)} tensors of the model "
                        f"({short(rep.random_init, 2)}); evaluation needs a trained model, e.g. a run's final checkpoint")
    merged = dict(own)
    merged.update({k: v.to(own[k].dtype) for k, v in init.state_dict.items()})
    model.load_state_dict(merged, strict=True)
    return rep


def load_file(model: torch.nn.Module, path: str | Path, target: EngineTarget, require_full: bool = False,
              trust_pickle: bool = False) -> KeyReport:
    """:func:`load` of a file in the engine's names (e.g. the converted ``OUTPUT/init/backbone.pth``)."""
    init = _native(str(path), BackboneOptions(backbone=str(path), source_format=target.name,
                                              trust_pickle=trust_pickle), target)
    return load(model, init, target, require_full)


# ---------------------------------------------------------------------------------------- run folder
def save(run_dir: str | Path, init: StartWeights, report: KeyReport | None = None, world_size: int | None = None) -> Path | None:
    """Write the converted weights (``init/backbone.pth``) and ``init.json`` into ``run_dir``.

    ``init.json`` is a :class:`droppos.runs.InitRecord`: source, kind, the backbone record, the weights file
    the engine loads ("" for scratch), the converter's key report, the load report and the number of
    processes the run starts with. Returns the weights file (None unless converted).
    """
    run_dir = Path(run_dir)
    path = None
    if init.state_dict is not None and init.kind == "converted":
        path = atomic_save({"model": init.state_dict}, run_dir / "init" / "backbone.pth")
    InitRecord(source=init.source, kind=init.kind, backbone=init.record,
               checkpoint=str(path) if path else (init.source if init.kind == "native" else ""),
               conversion=init.conversion, load_report=report.to_dict() if report else None, notes=list(init.notes),
               world_size=world_size).write(run_dir)
    return path


def record_load(run_dir: str | Path, report: KeyReport) -> None:
    """Add the load report to ``run_dir/init.json`` (written by :func:`save`)."""
    record = InitRecord.read(run_dir)
    if record is not None:
        record.load_report = report.to_dict()
        record.write(run_dir)


def read(run_dir: str | Path) -> dict:
    """A run folder's ``init.json`` as a dict ({} when absent or unreadable)."""
    record = InitRecord.read(run_dir)
    return record.to_dict() if record is not None else {}
