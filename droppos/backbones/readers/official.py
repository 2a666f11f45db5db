"""The official DropPos and MAE releases (``models_mae.py`` names, with their pretext decoders)."""

from __future__ import annotations

import re

from droppos.errors import UserError

from ..arch import arch_from_name
from .common import as_int, tensors
from .registry import Raw, register, register_family

register_family("mae", {768: 12, 1024: 16, 1280: 16})  # MAE / DropPos models_mae.py

_PRETEXT = re.compile(r"^(mask_token|mask_pos_token|decoder_|aux_decoder_|decoder\.|pos_decoder\.)")


def has_official_pretext(keys) -> bool:
    """Some key (``module.`` removed) is a DropPos / MAE pretext weight."""
    return any(_PRETEXT.match(str(k).removeprefix("module.")) for k in keys)


def _official(sd: dict) -> Raw:
    return {k: (v, "pretext (official release)" if _PRETEXT.match(k) else None) for k, v in sd.items()}


def _unprefixed(sd: dict, what: str, notes: list[str]) -> dict:
    if any(k.startswith("module.") for k in sd):
        notes.append(f"removed DDP's 'module.' prefix from the {what} keys")
        return {k.removeprefix("module."): v for k, v in sd.items()}
    return sd


def _is_droppos(obj: dict) -> bool:
    state = obj.get("state_dict")
    return isinstance(state, dict) and (isinstance(obj.get("model"), str) or has_official_pretext(state))


@register("droppos", order=50, recognise=_is_droppos)
def read_droppos(obj: dict, where: str, part: str | None = None):
    """The DropPos release: ``{"state_dict": module.*, "model": "DropPos_mae_vit_base_patch16..."}``."""
    notes: list[str] = []
    sd = _unprefixed(tensors(obj["state_dict"], where, "state_dict"), "state_dict", notes)
    if "ema_state_dict" in obj:
        notes.append("file also holds an EMA teacher (ema_state_dict); the student state_dict was used")
    name = obj.get("model") if isinstance(obj.get("model"), str) else ""
    method = "droppos" if "droppos" in name.lower() else "unknown"
    return (_official(sd), dict(method=method, epochs=as_int(obj.get("epoch")), family="mae",
                                arch_hint=arch_from_name(name) if name else None, model_name=name, notes=notes))


def _is_mae(obj: dict) -> bool:
    return isinstance(obj.get("model"), dict) and ("args" in obj or has_official_pretext(obj["model"]))


@register("mae", order=70, recognise=_is_mae)
def read_mae(obj: dict, where: str, part: str | None = None):
    """MAE's ``misc.save_model``: ``{"model", "optimizer", "epoch", "args"}`` (``args.model`` names the ViT)."""
    model = obj["model"]
    if isinstance(model, str):
        raise UserError(f"{where}'model' holds a string ({model!r}), not weights: this is the DropPos release "
                        "layout (weights under 'state_dict'); use --from droppos")
    notes: list[str] = []
    sd = _unprefixed(tensors(model, where, "model"), "model", notes)
    args = obj.get("args")
    name = str(getattr(args, "model", "") or "")
    hint = arch_from_name(name) if name else None
    if hint is not None and getattr(args, "input_size", None):
        hint["img_size"] = int(args.input_size)
    epochs = getattr(args, "epochs", None)
    if as_int(obj.get("epoch")) is not None:
        epochs = obj["epoch"] + 1  # MAE's misc.save_model stores the 0-based epoch index
    method = "mae" if "mae" in name.lower() else "unknown"
    return _official(sd), dict(method=method, epochs=epochs, family="mae", arch_hint=hint, model_name=name, notes=notes)
