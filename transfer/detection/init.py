"""The detector's initial weights: convert any backbone source, load it, and prove what landed.

``--init`` takes:

- ``scratch``: nothing is loaded; detectron2's own random init of every weight;
- a detectron2 file: a dict ``{"model": {"backbone.net.*": tensor, ...}}`` as written by
  ``droppos convert --to detectron2`` (backbone only) or by a detectron2 run
  (``model_final.pth``, the whole detector); used as is;
- anything ``droppos convert`` reads (this project's ``encoder.pth``/``checkpoint.pth``, the
  official DropPos and MAE releases, timm weights, ``scratch:<size>_p<patch>_<img>``): converted
  on the fly to ``OUTPUT/init/backbone_detectron2.pth`` with the position embedding resampled to
  the config's ``model.backbone.net.pretrain_img_size``.

Loading goes through detectron2's ``DetectionCheckpointer``; :class:`LoadReport` is built from
the incompatible keys it returns. Expected: the relative-position tables ``rel_pos_h/w`` (new in
ViTDet, zero-initialised) and, for a backbone-only file, every weight outside ``backbone.net``
(pyramid and heads, randomly initialised). Anything else (a backbone weight not loaded, a
checkpoint weight with no place in the model, a shape mismatch) is an error: a wrong width or
depth is reported as such, with the config override that fixes it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

NET = "backbone.net."
REL_POS = re.compile(r"^backbone\.net\.blocks\.\d+\.attn\.rel_pos_[hw]$")
_BLOCK = re.compile(r"^backbone\.net\.blocks\.(\d+)\.")


class InitError(ValueError):
    """The initial weights do not fit the detector; the message says why and how to fix it."""


@dataclass
class InitSource:
    """What ``--init`` resolved to.

    Attributes:
        path: detectron2 checkpoint to load ("" for ``scratch``).
        kind: "scratch" | "detectron2" | "converted".
        backbone: ``backbone_record`` for metrics.json.
        conversion: the converter's key report (converted sources only).
        source: what ``--init`` said.
    """

    path: str
    kind: str
    backbone: dict
    conversion: dict = field(default_factory=dict)
    source: str = ""


def arch_of_config(net) -> dict:
    """Architecture fields of the config's ``model.backbone.net`` (a ViT LazyCall node)."""
    return {"embed_dim": int(net.embed_dim), "depth": int(net.depth), "num_heads": int(net.num_heads),
            "patch_size": int(net.patch_size), "img_size": int(net.pretrain_img_size)}


def is_detectron2_file(obj) -> bool:
    """A loaded dict in detectron2's layout: ``{"model": {"backbone....": tensor}}``."""
    model = obj.get("model") if isinstance(obj, dict) else None
    return isinstance(model, dict) and bool(model) and all(str(k).startswith(("backbone.", "proposal_generator.",
                                                                                "roi_heads.", "pixel_")) for k in model)


def prepare_init(src: str, net, out_dir: str | Path, fmt: str | None = None, trust_pickle: bool = False) -> InitSource:
    """Resolve ``--init SRC`` to a detectron2 checkpoint for a backbone config ``net``.

    Converted weights are written to ``out_dir/init/backbone_detectron2.pth`` (+ ``.json`` key
    report). Raises :class:`InitError` (conversion loses a weight) or ``ValueError`` /
    ``FileNotFoundError`` (unreadable source, one line naming the file).
    """
    from droppos.utils.metrics import backbone_record

    arch = arch_of_config(net)
    if src == "scratch":
        return InitSource("", "scratch", backbone_record("scratch", arch, 0, "scratch (detectron2 init)"), source=src)
    if fmt == "detectron2" or (not src.startswith("scratch:") and fmt is None and _looks_detectron2(src)):
        return InitSource(str(src), "detectron2", _sidecar_backbone(src) or backbone_record("unknown", arch, None, src),
                          source=str(src))

    from droppos.tools.convert.main import ConversionError, convert_backbone, save_converted
    from droppos.tools.convert.sources import load_backbone

    bb = load_backbone(src, fmt=fmt, trust_pickle=trust_pickle)
    _check_arch(bb.arch, arch, src)
    try:
        sd, report = convert_backbone(bb, "detectron2", img_size=arch["img_size"])
    except ConversionError as e:
        raise InitError(f"{src}: {e}\n{e.report.summary()}") from None
    out = Path(out_dir) / "init" / "backbone_detectron2.pth"
    save_converted(sd, "detectron2", out)
    record = dict(bb.backbone)
    out.with_name(out.name + ".json").write_text(json.dumps(
        {"source": str(src), "backbone": record, "source_arch": bb.arch, "report": report.to_dict()}, indent=2) + "\n")
    print(report.summary())
    return InitSource(str(out), "converted", record, report.to_dict(), source=str(src))


def _looks_detectron2(src: str) -> bool:
    from droppos.utils.checkpoint import safe_load

    path = Path(src)
    if not path.is_file() or path.suffix == ".safetensors":
        return False
    try:
        return is_detectron2_file(safe_load(path))
    except ValueError:
        return False  # pickled objects: let the converter explain (it knows --trust-pickle)


def _sidecar_backbone(src: str) -> dict | None:
    """The backbone record ``droppos convert`` writes next to its output (``OUT.json``)."""
    side = Path(str(src) + ".json")
    if side.is_file():
        try:
            return json.loads(side.read_text()).get("backbone") or None
        except (OSError, json.JSONDecodeError):
            return None
    return None


def _check_arch(src_arch: dict, cfg_arch: dict, src: str) -> None:
    """Width, depth, heads and patch size of the source must be the config's."""
    fields = [("embed_dim", "embed_dim"), ("depth", "depth"), ("num_heads", "num_heads"), ("patch_size", "patch_size")]
    diff = [(k, src_arch.get(k), cfg_arch[c]) for k, c in fields if src_arch.get(k) != cfg_arch[c]]
    if diff:
        have = ", ".join(f"{k} {s}" for k, s, _ in diff)
        want = ", ".join(f"{k} {c}" for k, _, c in diff)
        fix = " ".join(f"model.backbone.net.{k}={s}" for k, s, _ in diff)
        raise InitError(f"{src}: the checkpoint is a ViT with {have} but the config builds {want}; "
                        f"use a matching config or override: {fix}")


# ---------------------------------------------------------------------------------------- loading
@dataclass
class LoadReport:
    """Which weights of a detectron2 checkpoint landed in the model.

    Attributes:
        checkpoint: the file.
        loaded: model keys that received a weight.
        expected_missing: ``rel_pos_h/w`` tables not in the checkpoint (zero init, as in ViTDet).
        random_init: model keys outside ``backbone.net`` not in the checkpoint (pyramid, heads).
        missing: ``backbone.net`` keys not loaded (error).
        unexpected: checkpoint keys with no model key (error).
        wrong_shape: (key, checkpoint shape, model shape) (error; the weight was not loaded).
    """

    checkpoint: str
    loaded: list[str] = field(default_factory=list)
    expected_missing: list[str] = field(default_factory=list)
    random_init: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    wrong_shape: list[tuple[str, tuple, tuple]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.wrong_shape)

    @property
    def backbone_loaded(self) -> list[str]:
        return [k for k in self.loaded if k.startswith(NET)]

    def to_dict(self) -> dict:
        return {"checkpoint": self.checkpoint, "ok": self.ok, "loaded": self.loaded,
                "expected_missing": self.expected_missing, "random_init": self.random_init, "missing": self.missing,
                "unexpected": self.unexpected, "wrong_shape": [[k, list(a), list(b)] for k, a, b in self.wrong_shape]}

    def summary(self) -> str:
        bb = self.backbone_loaded
        blocks = sorted({int(m.group(1)) for k in bb if (m := _BLOCK.match(k))})
        lines = [f"{self.checkpoint}: {len(self.loaded)} weights loaded ({len(bb)} in backbone.net: "
                 f"{_blocks_text(blocks)}{', ' + ', '.join(_short(k) for k in bb if not _BLOCK.match(k)) if bb else ''})"]
        if self.expected_missing:
            lines.append(f"  expected missing (ViTDet relative position, zero init): {len(self.expected_missing)} "
                         f"tensors, {_keys(self.expected_missing)}")
        if self.random_init:
            tops = sorted({k.split(".")[0] + ("." + k.split(".")[1] if k.startswith("backbone.") else "")
                           for k in self.random_init})
            lines.append(f"  random init (not in the checkpoint): {len(self.random_init)} tensors of {', '.join(tops)}")
        if self.missing:
            lines.append(f"  ERROR backbone weights not loaded: {_keys(self.missing)}")
        if self.unexpected:
            lines.append(f"  ERROR checkpoint weights with no place in the model: {_keys(self.unexpected)}")
        for k, a, b in self.wrong_shape[:6]:
            lines.append(f"  ERROR shape mismatch {k}: checkpoint {tuple(a)}, model {tuple(b)}")
        if len(self.wrong_shape) > 6:
            lines.append(f"  ERROR ... and {len(self.wrong_shape) - 6} more shape mismatches")
        return "\n".join(lines)


def _short(key: str) -> str:
    return key[len(NET):] if key.startswith(NET) else key


def _blocks_text(blocks: list[int]) -> str:
    if not blocks:
        return "no blocks"
    if blocks == list(range(blocks[0], blocks[-1] + 1)):
        return f"blocks {blocks[0]}-{blocks[-1]}"
    return "blocks " + ",".join(map(str, blocks))


def _keys(keys: list[str], n: int = 4) -> str:
    return ", ".join(keys[:n]) + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


def build_report(path: str, model_keys: list[str], ckpt_keys: list[str], incompatible) -> LoadReport:
    """A :class:`LoadReport` from fvcore's ``_IncompatibleKeys`` of one load."""
    wrong = [(k, tuple(a), tuple(b)) for k, a, b in incompatible.incorrect_shapes]
    bad = {k for k, _, _ in wrong} | set(incompatible.unexpected_keys)
    ckpt = set(ckpt_keys)
    rep = LoadReport(checkpoint=path, wrong_shape=wrong, unexpected=sorted(incompatible.unexpected_keys))
    rep.loaded = [k for k in model_keys if k in ckpt and k not in bad]
    for k in model_keys:
        if k in ckpt:
            continue
        if REL_POS.match(k):
            rep.expected_missing.append(k)
        elif k.startswith(NET):
            rep.missing.append(k)
        else:
            rep.random_init.append(k)
    return rep


def explain(rep: LoadReport, net) -> str:
    """One-line error for a failed load: a width/depth/patch mismatch named as such."""
    cfg = arch_of_config(net)
    shapes = {k: a for k, a, _ in rep.wrong_shape}
    hints = []
    w = shapes.get(NET + "patch_embed.proj.weight")
    if w is not None:
        if w[0] != cfg["embed_dim"]:
            hints.append(f"width {w[0]} vs model.backbone.net.embed_dim={cfg['embed_dim']}")
        if tuple(w[2:]) != (cfg["patch_size"],) * 2:
            hints.append(f"patch {w[2]} vs model.backbone.net.patch_size={cfg['patch_size']}")
    blocks = {int(m.group(1)) for k in rep.unexpected if (m := _BLOCK.match(k))}
    if blocks:
        hints.append(f"depth {max(blocks) + 1} vs model.backbone.net.depth={cfg['depth']}")
    elif rep.missing:
        have = {int(m.group(1)) for k in rep.loaded if (m := _BLOCK.match(k))}
        absent = {int(m.group(1)) for k in rep.missing if (m := _BLOCK.match(k))}
        if have and absent and max(have) < min(absent) and len(absent) + len(have) == cfg["depth"] \
                and all(_BLOCK.match(k) for k in rep.missing):
            hints.append(f"depth {len(have)} vs model.backbone.net.depth={cfg['depth']}")
        else:
            hints.append(f"{len(rep.missing)} backbone weights are not in the checkpoint: {_keys(rep.missing, 3)}")
    if rep.unexpected and not blocks:
        hints.append(f"{len(rep.unexpected)} checkpoint weights have no place in the model: {_keys(rep.unexpected, 3)}")
    pos = shapes.get(NET + "pos_embed")
    if pos is not None and not hints:
        hints.append(f"position table of {pos[1]} rows vs model.backbone.net.pretrain_img_size={cfg['img_size']}; "
                     "re-convert with `droppos convert --img-size` or pass the source checkpoint to --init")
    what = "; ".join(hints) if hints else "see the load report above"
    return f"{rep.checkpoint}: does not fit the detector ({what}); use a matching config or override the fields"


def load_weights(model, path: str, require_full: bool = False) -> LoadReport:
    """Load ``path`` into ``model`` with detectron2's ``DetectionCheckpointer``; return the report.

    Raises :class:`InitError` when the report has errors, or when ``require_full`` (evaluation)
    and some weight outside the backbone is not in the checkpoint.
    """
    from detectron2.checkpoint import DetectionCheckpointer

    seen: dict = {}

    class _Recording(DetectionCheckpointer):
        def _load_model(self, checkpoint):
            seen["keys"] = list(checkpoint["model"])
            seen["incompatible"] = super()._load_model(checkpoint)
            return seen["incompatible"]

    target = model.module if hasattr(model, "module") else model
    _Recording(target).load(path, checkpointables=[])
    if "incompatible" not in seen:
        raise InitError(f"{path}: detectron2 loaded nothing from it (no 'model' weights)")
    model_keys = list(target.state_dict())
    rep = build_report(path, model_keys, seen["keys"], seen["incompatible"])
    print(rep.summary())
    if not rep.ok:
        raise InitError(explain(rep, _net_config(target)))
    if not rep.loaded:
        raise InitError(f"{path}: no weight of the checkpoint is in the model")
    if require_full and rep.random_init:
        raise InitError(f"{path}: holds no weights for {len(rep.random_init)} detector tensors "
                        f"({_keys(rep.random_init, 2)}); evaluation needs a trained detector (e.g. OUTPUT/model_final.pth)")
    return rep


class _NetArgs:
    """Architecture of a built detectron2 ViT, in the shape ``arch_of_config`` reads."""

    def __init__(self, vit):
        w = vit.patch_embed.proj.weight
        self.embed_dim, self.depth = w.shape[0], len(vit.blocks)
        self.num_heads = vit.blocks[0].attn.num_heads
        self.patch_size = w.shape[-1]
        n = vit.pos_embed.shape[1] - (1 if vit.pretrain_use_cls_token else 0) if vit.pos_embed is not None else 0
        self.pretrain_img_size = int(round(n ** 0.5)) * self.patch_size


def _net_config(model):
    return _NetArgs(model.backbone.net)
