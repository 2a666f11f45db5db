"""Read a ViT backbone from any supported source into this project's encoder key names.

``load_backbone(src)`` recognises the layout by the file's content (``fmt`` / ``--from`` forces
one); :mod:`.readers` has the table of layouts (this project's ``encoder.pth`` and
``checkpoint.pth``, the official DropPos and MAE releases, DeiT, DINO, iBOT, MoCo v3, DINOv2,
Hugging Face, torchvision, AugReg ``.npz``, plain timm state dicts and ``.safetensors``) and how
each is recognised. ``scratch:<size>_p<patch>_<img>[_s<seed>]`` is a random initialisation::

    droppos convert runs/pt/encoder.pth --to timm --out vit.pth
    droppos convert dino_vitbase16_full_checkpoint.pth --part student --to detectron2 --out d2.pth
    droppos convert vit-s-300ep.pth.tar --to mmseg --out m.pth        # MoCo v3 (ViT-S: 12 heads)
    droppos convert model.safetensors --to timm --out t.pth --arch vit_small_patch16_224
    droppos convert scratch:base_p16_224 --to detectron2 --out scratch_d2.pth

What is not part of the encoder (pretext heads, projection heads, the other network of a
teacher/student pair) is dropped and listed; a classifier head is kept aside as
:attr:`ViTBackbone.head`. Exact transformations keep the same network: DINOv2 layer scale is folded
into the projections, a ViT without qkv bias gets an exact zero bias, a position table without a
[cls] row gets a zero row. The head count is never guessed: it comes from ``--arch``, the file
(a model name, an AugReg array shape, an ``encoder.pth`` meta) or the table of the layout's
family (registered with its reader, :mod:`.readers`), and where families disagree for a width the reader stops
and asks for ``--arch num_heads=N``. Non-finite weights are an error unless ``allow_nonfinite``.

The result, a :class:`ViTBackbone`, holds the encoder state dict (``VisionTransformer(**arch)``
loads it strictly), its architecture, what was dropped and why, and a ``backbone`` record for
``metrics.json``. Errors are one-line :class:`~droppos.errors.UserError` naming the file.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from droppos.errors import UserError
from droppos.utils.checkpoint import safe_load
from droppos.utils.metrics import backbone_record

from .arch import ViTArch, check_shapes, infer_arch, parse_arch_override
from .hub import resolve_folder, transformers_arch
from .naming import ENGINE_SCRATCH, SCRATCH, parse_source
from .readers import PARTS, READERS, by_suffix, detect_layout, formats, heads_for

#: every layout ``--from`` takes (the registered readers, then ``scratch``)
FORMATS = formats()

_ENCODER_KEY = re.compile(
    r"^(cls_token|reg_token|pos_embed|patch_embed\.proj\.(weight|bias)|norm\.(weight|bias)|"
    r"blocks\.\d+\.(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias))$"
)
# keys of timm models that are not this encoder, with the reason shown to the user
_REFUSED = (
    (re.compile(r"^(dist_token|head_dist\.)"), "a distilled DeiT (dist_token, head_dist): a different network; "
                                              "use the non-distilled weights"),
    (re.compile(r"\.ls[12]\.|\.gamma_?[12]"), "a ViT with layer scale; read it with --from dinov2 to fold it"),
    (re.compile(r"^fc_norm\."), "a classifier fine-tuned with average pooling (fc_norm): not a pretrained encoder"),
    (re.compile(r"^norm_pre\."), "a ViT with a pre-norm (CLIP style), which this encoder does not have"),
    (re.compile(r"\.q_norm\.|\.k_norm\."), "a ViT with qk-norm, which this encoder does not have"),
)


@dataclass
class ViTBackbone:
    """A ViT encoder read from some source.

    Attributes:
        state_dict: encoder weights in this project's (= timm / official MAE) key names.
        arch: the ViT (:class:`~.arch.ViTArch`; img_size = the position embedding's grid).
        meta: ``{"method", "epochs", "source", "format", ...}``.
        dropped: (original key, reason) of every weight left out (pretext heads, classifier head).
        head: the classifier head of a supervised source (``{"weight": (K, D), "bias": (K,)}``), else {}.
        notes: what was inferred rather than read (shown in the key report).
        backbone: ``backbone_record(...)`` for ``metrics.json``.
    """

    state_dict: dict[str, torch.Tensor]
    arch: ViTArch
    meta: dict
    dropped: list[tuple[str, str]] = field(default_factory=list)
    head: dict[str, torch.Tensor] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    backbone: dict = field(default_factory=dict)

    def encoder(self, img_size: int | None = None, **kwargs):
        """A ``VisionTransformer`` with these weights (strict load; position embedding resampled to ``img_size``)."""
        from droppos.models.pos_embed import resample_pos_embed
        from droppos.models.vit import VisionTransformer

        arch = self.arch.at(img_size)
        sd = dict(self.state_dict)
        if arch.grid != self.arch.grid:
            sd["pos_embed"] = resample_pos_embed(sd["pos_embed"], arch.grid, 1, self.arch.grid)
        model = VisionTransformer(**arch.to_dict(), **kwargs)
        model.load_state_dict(sd, strict=True)
        return model

    def classifier(self, img_size: int, num_classes: int, global_pool: str = "avg", drop_path: float = 0.0,
                   train_pos_embed: bool = True, head_init: str = "new"):
        """This project's ``VisionTransformer`` classifier holding these encoder weights (MAE's fine-tuning model).

        The weights load with exactly the expected keys missing (``head.*``; ``fc_norm.*`` with average
        pooling) and unused (``norm.*`` with average pooling), anything else is an error; the head gets
        MAE's init (trunc-normal std 2e-5), or the file's own head with ``head_init="source"``.
        """
        import torch.nn as nn
        from timm.layers import trunc_normal_

        from droppos.models.pos_embed import resample_pos_embed
        from droppos.models.vit import VisionTransformer

        where = f"{self.meta.get('source', '?')}: "
        arch = self.arch.at(img_size)
        model = VisionTransformer(**arch.to_dict(), num_classes=num_classes, global_pool=global_pool,
                                  drop_path_rate=drop_path, train_pos_embed=train_pos_embed)
        sd = dict(self.state_dict)
        sd["pos_embed"] = resample_pos_embed(sd["pos_embed"], arch.grid, 1, self.arch.grid)
        result = model.load_state_dict(sd, strict=False)
        avg = global_pool == "avg"
        want_missing = {"head.weight", "head.bias"} | ({"fc_norm.weight", "fc_norm.bias"} if avg else set())
        want_unused = {"norm.weight", "norm.bias"} if avg else set()
        if set(result.missing_keys) != want_missing or set(result.unexpected_keys) != want_unused:
            raise UserError(f"{where}backbone weights do not fit the classifier: missing "
                            f"{sorted(set(result.missing_keys) - want_missing)}, unused "
                            f"{sorted(set(result.unexpected_keys) - want_unused)}")
        with torch.no_grad():
            if head_init == "source":
                if not self.head:
                    raise UserError(f"{where}--head-init source: the backbone file has no classifier head")
                k = self.head["weight"].shape[0]
                if k != num_classes:
                    raise UserError(f"{where}its classifier head has {k} classes, the data has {num_classes}; "
                                    "use --head-init new (a fresh head) or data with the head's classes")
                model.head.weight.copy_(self.head["weight"])
                model.head.bias.copy_(self.head["bias"])
            else:
                trunc_normal_(model.head.weight, std=2e-5)
                nn.init.zeros_(model.head.bias)
        return model

    def input_size(self, requested: int | None = None) -> int:
        """The run's input size: ``requested`` (checked against the patch) or the pretraining size."""
        return self.arch.at(requested).img_size[0]


def load_backbone(src: str | Path, fmt: str | None = None, trust_pickle: bool = False, arch: str | dict | None = None,
                  part: str | None = None, allow_nonfinite: bool = False, name: str | None = None,
                  method: str | None = None, epochs: int | None = None) -> ViTBackbone:
    """Read ``src`` (a file path or ``scratch:<spec>``) as a :class:`ViTBackbone`.

    Args:
        src: checkpoint file (.pth/.pt/.bin/.tar/.safetensors/.npz) or ``scratch:<size>_p<patch>_<img>[_s<seed>]``.
        fmt: force a layout (one of ``FORMATS``); None recognises it from the content.
        trust_pickle: allow unpickling arbitrary objects. Unsafe for untrusted files; plain containers,
            tensors and ``argparse.Namespace`` (DINO/MAE ``args``) read without it.
        arch: architecture override, ``--arch`` syntax (see :mod:`.arch`) or a dict of fields.
        part: which network of a two-network checkpoint: ``teacher``/``student`` (DINO, iBOT),
            ``base``/``momentum`` (MoCo v3).
        allow_nonfinite: accept NaN/Inf weights (otherwise an error naming the tensor).
        name, method, epochs: the backbone's identity for the record (default: the readable id of the
            source path; the method and epochs the file describes, else "unknown").
    """
    if fmt is not None and fmt not in FORMATS:
        raise UserError(f"--from {fmt}: unknown layout; choose one of {', '.join(FORMATS)}")
    if part is not None and part not in PARTS:
        raise UserError(f"--part {part}: choose one of {', '.join(PARTS)}")
    hint = parse_arch_override(arch) if isinstance(arch, (str, type(None))) else dict(arch)
    src = str(src)
    parsed = parse_source(src)
    if parsed.kind == SCRATCH or fmt == "scratch":
        bb = _scratch(src, hint)
    elif parsed.model_folder:
        bb = _load_folder(src, fmt, hint, allow_nonfinite)
    elif parsed.kind == ENGINE_SCRATCH:
        raise UserError("scratch: the engine's own random init exists in detect and segment only; name a random ViT "
                        "here: scratch:<size>_p<patch>_<img>[_s<seed>], e.g. scratch:base_p16_224")
    elif parsed.generic:
        raise UserError(f"{src}: a generic backbone, built by name, not a ViT checkpoint: read it with "
                        "BackboneOptions(backbone=...).read()")
    else:
        bb = _load_file(Path(src), fmt, trust_pickle, hint, part, allow_nonfinite)
    bb.backbone = backbone_record(method or bb.meta["method"], bb.arch.to_dict(),
                                  epochs if epochs is not None else bb.meta["epochs"], bb.meta["source"],
                                  id=name or bb.meta.get("name") or default_name(src), data=bb.meta.get("data"),
                                  sha256=bb.meta.get("sha256"))
    bb.backbone.update({k: bb.meta[k] for k in ("repo", "revision") if bb.meta.get(k)})
    if method:
        bb.meta["method"] = method
    if epochs is not None:
        bb.meta["epochs"] = epochs
    return bb


def _load_file(path: Path, fmt: str | None, trust_pickle: bool, hint: dict, part: str | None,
               allow_nonfinite: bool) -> ViTBackbone:
    where = f"{path}: "
    if not path.is_file():
        raise UserError(f"{path}: no such checkpoint file")
    reader = READERS[fmt] if fmt is not None else by_suffix(path.suffix)
    if reader is not None and reader.suffix:  # a reader of its own file format (AugReg .npz)
        raw, info = reader.read(path, where, part)
        fmt = reader.name
    else:
        obj = _read(path, trust_pickle)
        if not isinstance(obj, dict):
            raise UserError(f"{where}holds a {type(obj).__name__}, not a checkpoint dict")
        forced = fmt is not None
        fmt = fmt or detect_layout(obj, where)
        try:
            raw, info = READERS[fmt].read(obj, where, part)
        except (KeyError, TypeError, AttributeError, StopIteration) as e:
            if not forced:
                raise
            raise UserError(f"{where}is not in the {fmt} layout ({type(e).__name__}: {e}); "
                            "drop --from to recognise the layout") from None
        if part is not None and "part" not in info and fmt != "mocov3":
            raise UserError(f"{where}--part {part}: this {fmt} file holds one network; drop --part")
    info["sha256"] = file_hash(path)
    beside = path.parent / "config.json"
    if fmt == "hf" and beside.is_file():  # what the folder states wins over any family table
        try:
            stated, notes = transformers_arch(beside, where)
        except UserError:
            stated, notes = {}, []
        hint = {**stated, **hint}
        info["notes"] = [*notes, *info.get("notes", [])]
    return _finish(raw, hint, fmt, str(path), info, where, allow_nonfinite)


def _load_folder(src: str, fmt: str | None, hint: dict, allow_nonfinite: bool) -> ViTBackbone:
    """``hf:<org>/<repo>[@rev]`` or a local model folder: its weights file, read with its ``config.json``."""
    folder = resolve_folder(src)
    if not (folder.path / "config.json").is_file():
        raise UserError(f"{folder.describe()}: no config.json in {folder.path}; a model folder is what save_pretrained "
                        "writes (config.json + model.safetensors)")
    transformers_arch(folder.path / "config.json", f"{folder.describe()}: ")  # an unsupported model: one line
    bb = _load_file(folder.weights, fmt or "hf", False, hint, None, allow_nonfinite)
    if folder.repo:
        bb.meta.update(source=f"hf:{folder.repo}@{folder.revision}", repo=folder.repo, revision=folder.revision,
                       name=folder.repo.split("/")[1])
        bb.notes.insert(0, f"hf:{folder.repo} at revision {folder.revision} (from the hub cache)")
    else:
        bb.meta.update(source=str(folder.path), name=bb.meta.get("name") or default_name(str(folder.path)))
    return bb


def file_hash(path: str | Path) -> str:
    """First 16 hex digits of the file's SHA-256 (the source's identity in the backbone record)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()[:16]


_GENERIC = {"encoder", "checkpoint", "model", "pytorch_model", "model_final", "pretrain", "weights", "backbone",
            "checkpoint_teacher", "last", "best", "init", "final"}


def default_name(src: str) -> str:
    """A stable, readable id of a source: ``runs/x/droppos/pretrain/encoder.pth`` -> ``droppos``,
    ``dino_vitbase16_pretrain.pth`` -> ``dino_vitbase16_pretrain``, ``scratch:tiny_p8_64`` -> ``scratch-tiny_p8_64``."""
    name = parse_source(src)
    if name.scratch:
        return "scratch" + ("-" + name.rest if name.rest else "")
    path = Path(src)
    stem = path.name
    for suffix in (".tar", ".pth", ".pt", ".bin", ".safetensors", ".npz", ".pkl"):
        stem = stem.removesuffix(suffix)
    parts = [stem]
    for parent in path.parent.parts[::-1]:
        if parts[-1].lower() not in _GENERIC or parent in ("", ".", "/"):
            break
        parts.append(parent)
    kept = [x for x in parts if x.lower() not in _GENERIC] or parts[:1]
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", "-".join(kept[::-1])).strip("_.-") or "backbone"


# ---------------------------------------------------------------------------------------- reading
def _read(path: Path, trust_pickle: bool):
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:  # noqa: BLE001 - any parse failure is a bad file
            raise UserError(f"{path}: not a readable safetensors file ({str(e).splitlines()[0]})") from None
    return safe_load(path, trust_pickle=trust_pickle)


# ---------------------------------------------------------------------------------------- common
def _finish(raw: dict, hint: dict, fmt: str, source: str, info: dict, where: str,
            allow_nonfinite: bool = False) -> ViTBackbone:
    """Split keys (encoder / dropped / refused), make exact fixes, infer and check the architecture."""
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
        tops = ", ".join(list(raw)[:6])
        raise UserError(f"{where}no ViT encoder left after the {fmt} layout's prefixes (keys: {tops}); "
                        "force another layout with --from, or check the file")
    for pattern, why in _REFUSED:
        hits = [k for k in unknown if pattern.search(k)]
        if hits:
            raise UserError(f"{where}{why} (keys {', '.join(hits[:3])})")
    if unknown:
        raise UserError(f"{where}{len(unknown)} weights are neither encoder nor known pretext keys: "
                        f"{', '.join(unknown[:5])}; this is not a plain ViT encoder")
    notes = list(info.get("notes", []))
    hint = {**(info.get("arch_exact") or {}), **(info.get("arch_hint") or {} if not info.get("model_name") else {}),
            **hint}
    hint = _soft_hint(info.get("arch_hint") if info.get("model_name") else None, info.get("model_name"), sd, hint, notes)
    _exact_fixes(sd, hint, notes)
    if not allow_nonfinite:
        bad = [k for k, v in sd.items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise UserError(f"{where}non-finite weights (NaN/Inf) in {', '.join(bad[:3])}"
                            f"{f' (+{len(bad) - 3} more)' if len(bad) > 3 else ''}; "
                            "the file is damaged (pass --allow-nonfinite to read it anyway)")
    cast = [k for k, v in sd.items() if v.is_floating_point() and v.dtype != torch.float32]
    if cast:
        notes.append(f"cast {len(cast)} tensors from {sd[cast[0]].dtype} to float32")
    sd = {k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()}
    arch, arch_notes = infer_arch(sd, hint, where, heads_for=lambda width: heads_for(width, info.get("family")))
    check_shapes(sd, arch, where)
    meta = {"method": info.get("method") or "unknown", "epochs": info.get("epochs"), "source": source, "format": fmt}
    for k in ("model_name", "config", "family", "part", "data", "sha256", "name"):
        if info.get(k):
            meta[k] = info[k]
    return ViTBackbone(state_dict=sd, arch=arch, meta=meta, dropped=dropped, head=head, notes=notes + arch_notes)


def _exact_fixes(sd: dict, hint: dict, notes: list[str]) -> None:
    """Rewrites that keep the same network: missing qkv bias = 0, a position table without a [cls] row."""
    no_bias = [k for k in sd if k.endswith(".attn.qkv.weight") and k[:-len("weight")] + "bias" not in sd]
    for k in no_bias:
        sd[k[:-len("weight")] + "bias"] = torch.zeros(sd[k].shape[0], dtype=sd[k].dtype)
    if no_bias:
        notes.append(f"no qkv bias in {len(no_bias)} blocks: added an exact zero bias (the same network)")
    pos = sd.get("pos_embed")
    w = sd.get("patch_embed.proj.weight")
    if pos is None or pos.ndim != 3 or w is None:
        return
    n = pos.shape[1]
    grid_cells = _grid_cells(hint, int(w.shape[-1]))
    def square(m: int) -> bool:
        return m > 0 and int(round(m ** 0.5)) ** 2 == m

    no_cls_row = n == grid_cells if grid_cells is not None else (not square(n - 1) and square(n))
    if no_cls_row:
        sd["pos_embed"] = torch.cat([pos.new_zeros(1, 1, pos.shape[2]), pos], dim=1)
        notes.append("pos_embed had no [cls] row (timm no_embed_class); added a zero row (the same network)")


def _grid_cells(hint: dict, patch: int) -> int | None:
    size = hint.get("img_size")
    if size is None:
        return None
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    return (h // patch) * (w // patch)


def _soft_hint(named: dict | None, name: str | None, sd: dict, hint: dict, notes: list[str]) -> dict:
    """Fields from a model name stored in the file, used only where they agree with the weights."""
    if not named:
        return hint
    width = sd["cls_token"].shape[-1] if "cls_token" in sd else None
    if named.get("embed_dim") is not None and named.get("embed_dim") != width:
        notes.append(f"model name {name!r} does not match the weights (width {width}); name ignored")
        return hint
    return {**{k: v for k, v in named.items() if k in ("num_heads", "img_size", "patch_size")}, **hint}


_SCRATCH = re.compile(r"^(tiny|small|base|large|huge)(?:_p(\d+))?(?:_(\d+))?(?:_s(\d+))?$")


def _scratch(src: str, hint: dict) -> ViTBackbone:
    """Random init of ``scratch:<size>_p<patch>_<img>[_s<seed>]`` (or ``--arch`` fields)."""
    from droppos.models.vit import VisionTransformer, vit_arch_args

    spec = parse_source(src).rest
    arch, seed = {}, 0
    if spec:
        m = _SCRATCH.match(spec)
        if m is None:
            raise UserError(f"{src}: expected scratch:<size>_p<patch>_<img>[_s<seed>], e.g. scratch:tiny_p4_32")
        size, p, img, s = m.groups()
        arch = vit_arch_args(size, patch_size=int(p or 16), img_size=int(img or 224))
        seed = int(s or 0)
    arch.update(hint)
    need = {"embed_dim", "depth", "num_heads", "patch_size", "img_size"} - set(arch)
    if need:
        raise UserError(f"{src}: the scratch architecture lacks {sorted(need)}; use scratch:<size>_p<patch>_<img>")
    try:
        vit = ViTArch.from_dict(arch)
    except UserError as e:
        raise UserError(f"{src}: {e}") from None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = VisionTransformer(**vit.to_dict())
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    meta = {"method": "scratch", "epochs": 0, "source": src, "format": "scratch", "seed": seed}
    return ViTBackbone(state_dict=sd, arch=vit, meta=meta, notes=[f"random MAE-style init, seed {seed}"],
                    backbone=backbone_record("scratch", vit.to_dict(), 0, src))
