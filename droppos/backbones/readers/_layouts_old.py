"""The release layouts a ViT backbone is read from: recognised from content, renamed to our keys.

Each reader takes the loaded object and returns ``(raw, info)``: ``raw`` maps a key in this
project's encoder names (= timm / MAE names) to ``(tensor, None)``, or any other key to
``(tensor, reason)`` for a weight that is dropped (pretext heads, classifiers); ``info`` holds what
the file says about itself (``method``/``epochs`` only when the file *describes* them, e.g. an
``encoder.pth`` meta or MAE's ``args.model``; never from how it is packed), the ViT ``family``
whose head-count table applies, and notes for the key report.

| layout        | recognised by                                                | dropped                        |
|---------------|--------------------------------------------------------------|--------------------------------|
| ``encoder``   | ``format: droppos-bench/encoder/v1``                         | –                              |
| ``checkpoint``| ``meta`` + ``model`` with ``encoder.*``                      | pretext heads                  |
| ``droppos``   | ``state_dict`` of ``module.*`` + a string ``model``           | pretext (decoders, tokens)     |
| ``mae``       | ``model`` with ``decoder_*``/``mask_token`` or MAE ``args``   | pretext (decoder, mask token)  |
| ``deit``      | ``model`` = a timm ViT (DeiT, MAE encoder-only, MoCo v3 DeiT) | ``head.*`` (kept as the head)  |
| ``dino``      | ``teacher``/``student`` (DINO, iBOT full checkpoints)        | DINO/iBOT head, ``masked_embed``|
| ``ibot``      | ``state_dict`` = a timm ViT (+ ``masked_embed``)             | ``masked_embed`` (pretext)     |
| ``mocov3``    | ``state_dict`` with ``module.base_encoder.*``                | projector, momentum, predictor |
| ``dinov2``    | layer scale ``ls1.gamma`` / ``register_tokens``              | ``mask_token``; LS folded      |
| ``hf``        | ``embeddings.patch_embeddings.projection.*`` (``vit.``)       | ``pooler.*``, MAE decoder      |
| ``torchvision``| ``conv_proj.*`` + ``class_token``                           | ``heads.*`` (kept as the head) |
| ``augreg``    | a ``.npz`` file (read by timm's ``_load_weights``)            | ``head.*`` (kept as the head)  |
| ``timm``      | a flat timm ViT state dict (DINO backbone files too)          | ``head.*`` (kept as the head)  |

Layouts that are not a plain ViT (BEiT/data2vec relative position bias, EVA RoPE/SwiGLU, CLIP
pre-norm, SigLIP attention pooling, qk-norm) are refused by :func:`refuse_unrepresentable` with
one line naming the feature.
"""

from __future__ import annotations

import re

import torch

from droppos.errors import UserError
from droppos.utils.checkpoint import ENCODER_FORMAT

Raw = dict[str, tuple[torch.Tensor, str | None]]

PARTS = ("teacher", "student", "base", "momentum")

_OFFICIAL_PRETEXT = re.compile(r"^(mask_token|mask_pos_token|decoder_|aux_decoder_|decoder\.|pos_decoder\.)")
_FEATURES = (  # (pattern over keys, what it is) of architectures this ViT cannot represent exactly
    (re.compile(r"(^|\.)visual\.|(^|\.)ln_pre\.|^norm_pre\."), "a CLIP-style pre-norm (ln_pre / norm_pre)"),
    (re.compile(r"relative_position_bias_table|rel_pos_bias|\.gamma_[12]$"),
     "BEiT/data2vec relative position bias and layer scale (gamma_1/2)"),
    (re.compile(r"(^|\.)rope\.|\.mlp\.fc1_g\.|\.mlp\.w12\.|\.attn\.q_bias$"), "EVA-style RoPE / SwiGLU / split q,v bias"),
    (re.compile(r"(^|\.)attn_pool\."), "a SigLIP attention-pooling head (no [cls] token)"),
    (re.compile(r"\.(q_norm|k_norm)\."), "qk-norm"),
)
GENERIC_PATH = ("the generic `timm:<model_name>:FILE` backbone source is the way for it "
                "(not available in this release)")


def refuse_unrepresentable(keys, where: str) -> None:
    """One line naming the feature when ``keys`` belong to an architecture that is not a plain ViT."""
    keys = list(keys)
    for pattern, what in _FEATURES:
        hits = [k for k in keys if pattern.search(k)]
        if hits:
            raise UserError(f"{where}{what} (key {hits[0]}) cannot be represented exactly as a plain ViT encoder; "
                            + GENERIC_PATH)


def _strip(sd: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def _tensors(sd, where: str, what: str) -> dict[str, torch.Tensor]:
    if not isinstance(sd, dict):
        raise UserError(f"{where}{what} is a {type(sd).__name__}, not a state dict")
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise UserError(f"{where}{what} holds non-tensor entries ({', '.join(map(str, bad[:4]))})")
    return sd


def _timm_raw(sd: dict, pretext=(), head_reason="classifier head (kept as Backbone.head)") -> Raw:
    """A timm-named state dict: ``head.*`` kept aside, ``pretext`` key prefixes dropped."""
    raw: Raw = {}
    for k, v in sd.items():
        if k.startswith("head."):
            raw[k] = (v, head_reason)
        elif k.startswith("pre_logits."):
            raw[k] = (v, "pre-logits layer of the classifier")
        elif any(k.startswith(p) for p in pretext):
            raw[k] = (v, "pretext (pretraining only)")
        else:
            raw[k] = (v, None)
    return raw


def _int(v) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


# ---------------------------------------------------------------------------------------- recognition
def is_hf(sd: dict) -> bool:
    return any(k.endswith("embeddings.patch_embeddings.projection.weight") for k in sd)


def is_torchvision(sd: dict) -> bool:
    return "conv_proj.weight" in sd and "class_token" in sd


def is_dinov2(sd: dict) -> bool:
    return any(re.search(r"\.ls[12]\.gamma$", k) for k in sd) or "register_tokens" in sd or (
        "mask_token" in sd and "blocks.0.attn.qkv.weight" in sd and sd["mask_token"].ndim == 2)


def detect_layout(obj: dict, where: str = "") -> str:
    """The layout name of a loaded checkpoint (see the module table)."""
    from .sources import FORMATS

    if obj.get("format") == ENCODER_FORMAT:
        return "encoder"
    model, state = obj.get("model"), obj.get("state_dict")
    if isinstance(model, dict) and "meta" in obj and any(str(k).startswith("encoder.") for k in model):
        return "checkpoint"
    if isinstance(obj.get("teacher"), dict) or isinstance(obj.get("student"), dict):
        return "dino"
    if isinstance(state, dict):
        if any(str(k).startswith(("module.base_encoder.", "base_encoder.")) for k in state):
            return "mocov3"
        if isinstance(model, str) or any(_OFFICIAL_PRETEXT.match(str(k)[len("module."):]) for k in state):
            return "droppos"
        return "ibot"
    if isinstance(model, dict):
        keys = [str(k).removeprefix("module.") for k in model]
        if "args" in obj or any(_OFFICIAL_PRETEXT.match(k) for k in keys):
            return "mae"
        return "deit"
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        if is_hf(obj):
            return "hf"
        if is_torchvision(obj):
            return "torchvision"
        if is_dinov2(obj):
            return "dinov2"
        return "timm"
    keys = ", ".join(map(str, list(obj)[:8]))
    raise UserError(f"{where}no ViT encoder in this file (top-level keys: {keys}); force a layout with "
                    f"--from {{{','.join(FORMATS)}}}")


# ---------------------------------------------------------------------------------------- this project
def read_encoder(obj: dict, where: str, part: str | None = None):
    meta = obj.get("meta") or {}
    sd = _tensors(obj.get("state_dict") or {}, where, "state_dict")
    config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    return ({k: (v, None) for k, v in sd.items()},
            dict(method=meta.get("method", "unknown"), epochs=_epochs_done(meta), arch_exact=meta.get("arch"),
                 config=meta.get("config"), name=meta.get("name"), data=meta.get("data") or config.get("data")))


def read_checkpoint(obj: dict, where: str, part: str | None = None):
    meta = obj.get("meta") or {}
    model = _tensors(obj["model"], where, "model")
    raw: Raw = {}
    for k, v in model.items():
        if k.startswith("encoder."):
            raw[k[len("encoder."):]] = (v, None)
        else:
            raw[k] = (v, f"pretext ({meta.get('method', 'pretraining')} head)")
    return raw, dict(method=meta.get("method", "unknown"), epochs=_epochs_done(meta), arch_exact=meta.get("arch"),
                     config=meta.get("config"))


def _epochs_done(meta: dict) -> int | None:
    done = meta.get("epochs_done")
    return int(done) if done is not None else meta.get("epochs")


# ---------------------------------------------------------------------------------------- official DropPos / MAE
def _official(sd: dict) -> Raw:
    return {k: (v, "pretext (official release)" if _OFFICIAL_PRETEXT.match(k) else None) for k, v in sd.items()}


def read_droppos(obj: dict, where: str, part: str | None = None):
    from .arch import arch_from_name

    sd = _tensors(obj["state_dict"], where, "state_dict")
    notes = []
    if any(k.startswith("module.") for k in sd):
        sd = {k.removeprefix("module."): v for k, v in sd.items()}
        notes.append("removed DDP's 'module.' prefix from the state_dict keys")
    if "ema_state_dict" in obj:
        notes.append("file also holds an EMA teacher (ema_state_dict); the student state_dict was used")
    name = obj.get("model") if isinstance(obj.get("model"), str) else ""
    method = "droppos" if "droppos" in name.lower() else "unknown"
    return (_official(sd), dict(method=method, epochs=_int(obj.get("epoch")), family="mae",
                                arch_hint=arch_from_name(name) if name else None, model_name=name, notes=notes))


def read_mae(obj: dict, where: str, part: str | None = None):
    from .arch import arch_from_name

    model = obj["model"]
    if isinstance(model, str):
        raise UserError(f"{where}'model' holds a string ({model!r}), not weights: this is the DropPos release "
                        "layout (weights under 'state_dict'); use --from droppos")
    sd = _tensors(model, where, "model")
    notes = []
    if any(k.startswith("module.") for k in sd):
        sd = {k.removeprefix("module."): v for k, v in sd.items()}
        notes.append("removed DDP's 'module.' prefix from the model keys")
    args = obj.get("args")
    name = str(getattr(args, "model", "") or "")
    hint = arch_from_name(name) if name else None
    if hint is not None and getattr(args, "input_size", None):
        hint["img_size"] = int(args.input_size)
    epochs = getattr(args, "epochs", None)
    if _int(obj.get("epoch")) is not None:
        epochs = obj["epoch"] + 1  # MAE's misc.save_model stores the 0-based epoch index
    method = "mae" if "mae" in name.lower() else "unknown"
    return _official(sd), dict(method=method, epochs=epochs, family="mae", arch_hint=hint, model_name=name, notes=notes)


def read_deit(obj: dict, where: str, part: str | None = None):
    sd = _tensors(obj["model"], where, "model")
    notes = ["{'model': state dict} wrapper (official DeiT, MAE encoder-only release, MoCo v3 convert_to_deit)"]
    if any(k.startswith("module.") for k in sd):
        sd = {k.removeprefix("module."): v for k, v in sd.items()}
    refuse_unrepresentable(sd, where)
    if is_dinov2(sd):
        return read_dinov2(sd, where)
    return _timm_raw(sd), dict(notes=notes, family="deit" if "head.weight" in sd else None)


def read_timm(obj: dict, where: str, part: str | None = None):
    sd = _tensors(obj, where, "state dict")
    for prefix in ("module.", "model."):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = _strip(sd, prefix)
    refuse_unrepresentable(sd, where)
    return _timm_raw(sd), {}


# ---------------------------------------------------------------------------------------- DINO / iBOT / MoCo v3
def read_dino(obj: dict, where: str, part: str | None = None):
    """DINO / iBOT full checkpoint: ``teacher`` (``backbone.*``) and ``student`` (``module.backbone.*``)."""
    have = [p for p in ("teacher", "student") if isinstance(obj.get(p), dict)]
    if part is not None and part not in have:
        raise UserError(f"{where}--part {part}: this checkpoint holds {' and '.join(have)}")
    chosen = part or ("teacher" if "teacher" in have else have[0])
    sd = _tensors(obj[chosen], where, chosen)
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    raw: Raw = {}
    for k, v in sd.items():
        if k.startswith("backbone."):
            raw[k[len("backbone."):]] = (v, None)
        else:
            raw[k] = (v, f"{k.split('.')[0]} of the {chosen} (projection head: pretext)")
    if not any(r is None for _, r in raw.values()):
        raise UserError(f"{where}{chosen} has no 'backbone.' weights (keys: {', '.join(list(sd)[:6])})")
    ibot = any(k == "masked_embed" for k in raw) or "ibot_loss" in obj
    family = "ibot" if ibot else "dino"
    raw = {k: (v, "masked_embed (iBOT pretext token)" if k == "masked_embed" else r) for k, (v, r) in raw.items()}
    refuse_unrepresentable([k for k, (_, r) in raw.items() if r is None], where)
    default = "" if part else f" (default; --part {'student' if chosen == 'teacher' else 'teacher'} picks the other)"
    notes = [f"{family.upper() if ibot else 'DINO'} full checkpoint: read the {chosen}{default}"]
    if len(have) == 2:
        notes.append(f"dropped the {'student' if chosen == 'teacher' else 'teacher'} network: "
                     f"{len(obj['student' if chosen == 'teacher' else 'teacher'])} tensors")
    args = obj.get("args")
    epochs = _int(obj.get("epoch"))
    hint = {"patch_size": int(args.patch_size)} if _int(getattr(args, "patch_size", None)) else {}
    return raw, dict(family=family, epochs=epochs, notes=notes, arch_hint=hint or None,
                     model_name=str(getattr(args, "arch", "") or ""), part=chosen)


def read_ibot(obj: dict, where: str, part: str | None = None):
    """``{'state_dict': sd}`` with timm keys (iBOT's teacher checkpoint, extracted backbones)."""
    sd = _tensors(obj["state_dict"], where, "state_dict")
    sd = {k.removeprefix("module.").removeprefix("backbone."): v for k, v in sd.items()}
    refuse_unrepresentable(sd, where)
    raw = _timm_raw(sd, pretext=("masked_embed",))
    family = "ibot" if "masked_embed" in sd else None
    return raw, dict(family=family, epochs=_int(obj.get("epoch")), notes=["{'state_dict': ...} wrapper"])


def read_mocov3(obj: dict, where: str, part: str | None = None):
    """MoCo v3 ``*.pth.tar``: ``module.base_encoder.*`` (``head.*`` = projector MLP)."""
    sd = _tensors(obj["state_dict"], where, "state_dict")
    if part not in (None, "base", "momentum"):
        raise UserError(f"{where}--part {part}: a MoCo v3 checkpoint holds the 'base' and 'momentum' encoders")
    enc = "momentum_encoder" if part == "momentum" else "base_encoder"
    raw: Raw = {}
    for k, v in sd.items():
        bare = k.removeprefix("module.")
        if bare.startswith(enc + ".") and not bare.startswith(enc + ".head."):
            raw[bare[len(enc) + 1:]] = (v, None)
        else:
            raw[k] = (v, "MoCo v3 " + (bare.split(".")[0] if not bare.startswith(enc) else "projector head") + " (pretext)")
    refuse_unrepresentable([k for k, (_, r) in raw.items() if r is None], where)
    arch = str(obj.get("arch") or "")
    notes = [f"MoCo v3 checkpoint: read the {enc}" + ("" if part else " (default; --part momentum picks the other)")]
    return raw, dict(family="mocov3", epochs=_int(obj.get("epoch")), notes=notes, model_name=arch)


# ---------------------------------------------------------------------------------------- DINOv2
def read_dinov2(obj: dict, where: str, part: str | None = None):
    """DINOv2 (timm or torch.hub names): layer scale folded into the projections, registers kept."""
    sd = dict(_tensors(obj, where, "state dict"))
    if any(".mlp.w12." in k for k in sd):
        raise UserError(f"{where}a DINOv2 with SwiGLU MLP (mlp.w12, ViT-g) cannot be represented exactly as a plain "
                        "ViT encoder; " + GENERIC_PATH)
    refuse_unrepresentable([k for k in sd if not re.search(r"\.ls[12]\.gamma$", k)], where)
    notes = []
    raw: Raw = {}
    if "mask_token" in sd:
        raw["mask_token"] = (sd.pop("mask_token"), "DINOv2 mask token (iBOT pretext)")
    if "register_tokens" in sd:  # torch.hub names: registers after [cls], no position; [cls] keeps its row
        sd["reg_token"] = sd.pop("register_tokens")
    gammas = {k: sd.pop(k) for k in [k for k in sd if re.search(r"\.ls[12]\.gamma$", k)]}
    for k, g in gammas.items():
        i, which = re.match(r"blocks\.(\d+)\.ls([12])\.gamma$", k).groups()
        lin = f"blocks.{i}.attn.proj" if which == "1" else f"blocks.{i}.mlp.fc2"
        sd[lin + ".weight"] = sd[lin + ".weight"] * g[:, None]
        sd[lin + ".bias"] = sd[lin + ".bias"] * g
    if gammas:
        notes.append(f"layer scale folded into {len(gammas)} projections (attn.proj, mlp.fc2): "
                     "W' = gamma * W, b' = gamma * b (the same network)")
    if "reg_token" in sd:
        notes.append(f"{sd['reg_token'].shape[1]} register tokens kept as prefix tokens after [cls] (no position)")
    raw.update(_timm_raw(sd))
    return raw, dict(family="dinov2", notes=notes)


# ---------------------------------------------------------------------------------------- Hugging Face / torchvision
def _renamed(sd: dict, rules: list[tuple[str, str | None, str]]) -> Raw:
    """Rename by the first matching ``(regex, template, reason)``; a None template drops the key with
    the reason; a key no rule matches is kept as is (the common checks report it)."""
    compiled = [(re.compile(p), t, why) for p, t, why in rules]
    raw: Raw = {}
    for k, v in sd.items():
        rule = next(((pat, t, why) for pat, t, why in compiled if pat.match(k)), None)
        if rule is None:
            raw[k] = (v, None)
        elif rule[1] is None:
            raw[k] = (v, rule[2])
        else:
            raw[rule[0].sub(rule[1], k)] = (v, rule[2] or None)
    return raw


_BLOCK = r"^(?:encoder\.layer|layers)\.(\d+)\."  # HF hub names / transformers 5 in-memory names
_HF_RULES = [
    (r"^embeddings\.cls_token$", "cls_token", ""),
    (r"^embeddings\.position_embeddings$", "pos_embed", ""),
    (r"^embeddings\.patch_embeddings\.projection\.(weight|bias)$", r"patch_embed.proj.\1", ""),
    (r"^layernorm\.(weight|bias)$", r"norm.\1", ""),
    (r"^pooler\.", None, "HF pooler (dense + tanh on [cls]; not part of the ViT encoder)"),
    (_BLOCK + r"layernorm_before\.(weight|bias)$", r"blocks.\1.norm1.\2", ""),
    (_BLOCK + r"layernorm_after\.(weight|bias)$", r"blocks.\1.norm2.\2", ""),
    (_BLOCK + r"attention\.(?:attention\.query|q_proj)\.(weight|bias)$", r"blocks.\1.attn.q.\2", ""),
    (_BLOCK + r"attention\.(?:attention\.key|k_proj)\.(weight|bias)$", r"blocks.\1.attn.k.\2", ""),
    (_BLOCK + r"attention\.(?:attention\.value|v_proj)\.(weight|bias)$", r"blocks.\1.attn.v.\2", ""),
    (_BLOCK + r"attention\.(?:output\.dense|o_proj)\.(weight|bias)$", r"blocks.\1.attn.proj.\2", ""),
    (_BLOCK + r"(?:intermediate\.dense|mlp\.fc1)\.(weight|bias)$", r"blocks.\1.mlp.fc1.\2", ""),
    (_BLOCK + r"(?:output\.dense|mlp\.fc2)\.(weight|bias)$", r"blocks.\1.mlp.fc2.\2", ""),
]


def read_hf(obj: dict, where: str, part: str | None = None):
    """Hugging Face ``ViTModel`` / ``ViTMAEModel`` state dict (optionally under ``vit.``)."""
    sd = _tensors(obj, where, "state dict")
    anchor = next(k for k in sd if k.endswith("embeddings.patch_embeddings.projection.weight"))
    prefix = anchor[: -len("embeddings.patch_embeddings.projection.weight")]
    raw = _renamed({k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}, _HF_RULES)
    raw.update({k: (v, "not the encoder (decoder / classifier of the HF model)") for k, v in sd.items()
                if not k.startswith(prefix)})
    for key in [k for k in raw if re.match(r"blocks\.\d+\.attn\.q\.", k)]:  # separate q, k, v -> qkv
        parts = [raw.pop(key.replace(".attn.q.", f".attn.{x}."), (None, None))[0] for x in "qkv"]
        if any(t is None for t in parts):
            raise UserError(f"{where}{key.split('.attn')[0]} lacks some of query/key/value")
        raw[key.replace(".attn.q.", ".attn.qkv.")] = (torch.cat(parts), None)
    notes = ["Hugging Face names: separate query/key/value concatenated into qkv",
             "HF ViT configs default to LayerNorm eps 1e-12; this encoder uses 1e-6 (features differ by < 1e-5 "
             "unless a token's variance is tiny)"]
    return raw, dict(notes=notes)


_TV_LAYER = r"^encoder\.layers\.encoder_layer_(\d+)\."
_TV_RULES = [
    (r"^class_token$", "cls_token", ""),
    (r"^encoder\.pos_embedding$", "pos_embed", ""),
    (r"^conv_proj\.(weight|bias)$", r"patch_embed.proj.\1", ""),
    (r"^encoder\.ln\.(weight|bias)$", r"norm.\1", ""),
    (r"^heads\.head\.(weight|bias)$", r"head.\1", "classifier head (kept as Backbone.head)"),
    (r"^heads\.", None, "pre-logits layer of the classifier"),
    (_TV_LAYER + r"ln_1\.(weight|bias)$", r"blocks.\1.norm1.\2", ""),
    (_TV_LAYER + r"ln_2\.(weight|bias)$", r"blocks.\1.norm2.\2", ""),
    (_TV_LAYER + r"self_attention\.in_proj_(weight|bias)$", r"blocks.\1.attn.qkv.\2", ""),
    (_TV_LAYER + r"self_attention\.out_proj\.(weight|bias)$", r"blocks.\1.attn.proj.\2", ""),
    (_TV_LAYER + r"mlp\.(?:0|linear_1)\.(weight|bias)$", r"blocks.\1.mlp.fc1.\2", ""),
    (_TV_LAYER + r"mlp\.(?:3|linear_2)\.(weight|bias)$", r"blocks.\1.mlp.fc2.\2", ""),
]


def read_torchvision(obj: dict, where: str, part: str | None = None):
    """torchvision ``vit_*`` state dict."""
    raw = _renamed(_tensors(obj, where, "state dict"), _TV_RULES)
    return raw, dict(family="torchvision", notes=["torchvision names (in_proj = qkv)"])


# ---------------------------------------------------------------------------------------- AugReg .npz
def read_augreg(path, where: str):
    """A big_vision / AugReg ``.npz``: the architecture from the array shapes, the weights through
    timm's own ``_load_weights`` into a timm ``VisionTransformer``; returns ``(raw, info)``."""
    import numpy as np
    from timm.models.vision_transformer import VisionTransformer as TimmViT
    from timm.models.vision_transformer import _load_weights

    try:
        w = np.load(path)
        files = set(w.files)
    except Exception as e:  # noqa: BLE001 - any parse failure is a bad file
        raise UserError(f"{where}not a readable .npz file ({type(e).__name__}: {e})") from None
    prefix = next((p for p in ("", "opt/target/", "params/", "params/img/") if f"{p}embedding/kernel" in files), None)
    if prefix is None:
        raise UserError(f"{where}not an AugReg/big_vision ViT .npz (no embedding/kernel)")
    stacked = f"{prefix}Transformer/encoderblock/LayerNorm_0/scale" in files  # big_vision: blocks stacked on axis 0
    big_vision = prefix.startswith("params/") or f"{prefix}pos_embedding" in files or stacked
    pos_key = f"{prefix}pos_embedding" if big_vision else f"{prefix}Transformer/posembed_input/pos_embedding"
    block = f"{prefix}Transformer/encoderblock/" if stacked else f"{prefix}Transformer/encoderblock_0/"
    mha, mlp_sub = ("MultiHeadDotProductAttention_0", "MlpBlock_0") if big_vision else \
        ("MultiHeadDotProductAttention_1", "MlpBlock_3")
    query, fc1 = f"{block}{mha}/query/kernel", f"{block}{mlp_sub}/Dense_0/kernel"
    missing = [k for k in (pos_key, query, fc1) if k not in files]
    if missing:
        raise UserError(f"{where}not an AugReg/big_vision ViT .npz (missing {missing[0]})")
    if f"{prefix}cls" not in files:
        raise UserError(f"{where}a ViT without a [cls] token (global average pooling / MAP head); " + GENERIC_PATH)
    p, _, c, d = w[f"{prefix}embedding/kernel"].shape
    if stacked:
        depth = w[f"{prefix}Transformer/encoderblock/LayerNorm_0/scale"].shape[0]
        heads, mlp = w[query].shape[-2], w[fc1].shape[-1]
    else:
        depth = len({f.split("/")[len(prefix.split("/"))] for f in files if f.startswith(f"{prefix}Transformer/encoderblock_")})
        heads, mlp = w[query].shape[1], w[fc1].shape[1]
    n = w[pos_key].reshape(-1, d).shape[0] - 1
    side = int(round(n ** 0.5))
    if side * side != n:
        raise UserError(f"{where}position grid of {n} cells is not square")
    head_key = f"{prefix}head/kernel"
    classes = w[head_key].shape[-1] if head_key in files and w[head_key].ndim == 2 else 0
    model = TimmViT(img_size=side * p, patch_size=p, in_chans=c, embed_dim=d, depth=depth, num_heads=heads,
                    mlp_ratio=mlp / d, qkv_bias=True, num_classes=classes)
    _load_weights(model, str(path))
    sd = model.state_dict()
    return _timm_raw(sd), dict(notes=[f"AugReg .npz read by timm's _load_weights ({depth} blocks, {heads} heads "
                                      "from the array shapes)"], arch_hint={"num_heads": int(heads)})


READERS = {"encoder": read_encoder, "checkpoint": read_checkpoint, "droppos": read_droppos, "mae": read_mae,
           "deit": read_deit, "timm": read_timm, "dino": read_dino, "ibot": read_ibot, "mocov3": read_mocov3,
           "dinov2": read_dinov2, "hf": read_hf, "torchvision": read_torchvision}
