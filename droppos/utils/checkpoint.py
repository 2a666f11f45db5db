"""Checkpoint files: atomic writes, safe reads, and the self-describing encoder format.

Everything this project writes holds tensors and plain Python types only, so it loads with
``torch.load(weights_only=True)``. Two kinds of file:

* ``checkpoint.pth`` (resume): ``{"meta", "model", "optimizer", "scaler", "progress", "rng"}``.
* ``encoder.pth`` (weights for converters): ``{"format": ENCODER_FORMAT, "meta", "state_dict"}``.

``meta`` describes the weights: ``{"method", "arch": VisionTransformer.arch_args(), "epochs",
"epochs_done", "config"}``, so a converter never guesses the architecture.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from droppos.errors import UserError

ENCODER_FORMAT = "droppos-bench/encoder/v1"


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temp file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


#: first bytes of what ``torch.save`` writes: a zip archive, or a legacy pickle (protocol >= 2)
TORCH_MAGIC = (b"PK\x03\x04", b"\x80")


#: classes the restricted unpickler builds besides tensors and plain containers: the ``args`` of the
#: DINO, iBOT, MoCo v3 and MAE training checkpoints (attributes only; no code runs)
SAFE_GLOBALS = (argparse.Namespace,)


def safe_load(path: str | Path, trust_pickle: bool = False) -> Any:
    """Load a checkpoint on CPU with torch's restricted unpickler (``weights_only=True``).

    Tensors, plain containers and :data:`SAFE_GLOBALS` (``argparse.Namespace``) are read without
    running code. ``trust_pickle=True`` falls back to a full unpickle, which can run arbitrary
    code: only for files from a source you trust. Errors are one line naming the file and the fix.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such checkpoint file")
    with open(path, "rb") as f:
        head = f.read(4)
    if not head.startswith(TORCH_MAGIC):
        raise UserError(f"{path}: not a readable PyTorch checkpoint (neither a torch.save zip archive nor a pickle)")
    try:
        with torch.serialization.safe_globals(list(SAFE_GLOBALS)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        msg = str(e)
        if "Weights only load failed" in msg or "weights_only" in msg:
            if trust_pickle:
                return torch.load(path, map_location="cpu", weights_only=False)  # explicit trust option
            first = next((ln for ln in msg.splitlines() if "GLOBAL" in ln or "Unsupported" in ln), "")
            raise UserError(
                f"{path}: holds pickled Python objects besides tensors ({first.strip()}); "
                "if you trust its source, pass --trust-pickle (it runs the pickle's code)"
            ) from None
        raise UserError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {msg.splitlines()[0]})") from None


def encoder_payload(state_dict: dict, meta: dict) -> dict:
    return {"format": ENCODER_FORMAT, "meta": meta, "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()}}


def save_encoder(path: str | Path, state_dict: dict, meta: dict) -> Path:
    """Write the self-describing encoder file (``meta`` must contain ``arch`` and ``method``)."""
    missing = {"arch", "method"} - set(meta)
    if missing:
        raise ValueError(f"encoder meta lacks {sorted(missing)}")
    return atomic_save(encoder_payload(state_dict, meta), path)
