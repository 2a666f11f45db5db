"""This project's own files: ``encoder.pth`` (exported encoder) and ``checkpoint.pth`` (a pretraining run)."""

from __future__ import annotations

from droppos.utils.checkpoint import ENCODER_FORMAT

from .common import tensors, under_prefix
from .registry import register, register_family

register_family("droppos", {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16})  # droppos.models.vit.VIT_SIZES


def _epochs_done(meta: dict) -> int | None:
    done = meta.get("epochs_done")
    return int(done) if done is not None else meta.get("epochs")


@register("encoder", order=10, recognise=lambda obj: obj.get("format") == ENCODER_FORMAT)
def read_encoder(obj: dict, where: str, part: str | None = None):
    """``{"format": droppos-bench/encoder/v1, "state_dict", "meta"}``: the architecture is stored."""
    meta = obj.get("meta") or {}
    sd = tensors(obj.get("state_dict") or {}, where, "state_dict")
    config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    return ({k: (v, None) for k, v in sd.items()},
            dict(method=meta.get("method", "unknown"), epochs=_epochs_done(meta), arch_exact=meta.get("arch"),
                 config=meta.get("config"), name=meta.get("name"), data=meta.get("data") or config.get("data")))


def _is_checkpoint(obj: dict) -> bool:
    model = obj.get("model")
    return isinstance(model, dict) and "meta" in obj and any(str(k).startswith("encoder.") for k in model)


@register("checkpoint", order=20, recognise=_is_checkpoint)
def read_checkpoint(obj: dict, where: str, part: str | None = None):
    """A pretraining checkpoint: ``model`` with ``encoder.*`` and the pretext heads, ``meta``."""
    meta = obj.get("meta") or {}
    model = tensors(obj["model"], where, "model")
    raw = under_prefix(model, "encoder.", lambda k: f"pretext ({meta.get('method', 'pretraining')} head)")
    return raw, dict(method=meta.get("method", "unknown"), epochs=_epochs_done(meta), arch_exact=meta.get("arch"),
                     config=meta.get("config"))
