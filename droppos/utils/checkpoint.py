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
import pickle
import tarfile
from pathlib import Path
from typing import Any

import torch

from droppos.errors import UserError

ENCODER_FORMAT = "droppos-bench/encoder/v1"


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` through :func:`droppos.utils.files.atomic_write`: the previous file survives a failed
    write, which is one line naming the path (torch reports a full disk as "unexpected pos ..."; the free
    space is said instead)."""
    from droppos.utils.files import atomic_write

    return atomic_write(path, lambda f: torch.save(obj, f))


#: first bytes of what ``torch.save`` writes: a zip archive, or a legacy pickle (protocol >= 2)
TORCH_MAGIC = (b"PK\x03\x04", b"\x80")


#: classes the restricted unpickler builds besides tensors and plain containers: the ``args`` of the
#: DINO, iBOT, MoCo v3 and MAE training checkpoints (attributes only; no code runs)
SAFE_GLOBALS = (argparse.Namespace,)


def safe_load(path: str | Path, trust_pickle: bool = False) -> Any:
    """Load a checkpoint on CPU without running code from it.

    * ``torch.save`` files (zip or legacy): torch's restricted unpickler (``weights_only=True``),
      which builds tensors, plain containers and :data:`SAFE_GLOBALS` (``argparse.Namespace``);
    * the pre-0.4 ``torch.save`` tar archive: refused (torch reads it only without ``weights_only``);
    * plain pickles (``.pkl``: detectron2's model zoo, ``{"model": {name: ndarray}}``): a restricted
      unpickler that builds plain containers and numpy arrays only (:class:`RestrictedUnpickler`);
      arrays become tensors.

    ``trust_pickle=True`` falls back to a full unpickle, which can run arbitrary code: only for
    files from a source you trust. Errors are one line naming the file and the fix.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such checkpoint file")
    with open(path, "rb") as f:
        head = f.read(4)
    if not head.startswith(TORCH_MAGIC) and tarfile.is_tarfile(path):  # torch.save before PyTorch 0.4
        if trust_pickle:
            return torch.load(path, map_location="cpu", weights_only=False)  # explicit trust option
        raise UserError(f"{path}: a torch.save tar archive (PyTorch < 0.4), which only a full unpickle reads; if you "
                        "trust its source, pass --trust-pickle (it runs the pickle's code)")
    if not head.startswith(TORCH_MAGIC):
        raise UserError(f"{path}: not a readable PyTorch checkpoint (neither a torch.save zip archive nor a pickle)")
    if head.startswith(b"\x80") and not _is_legacy_torch_save(path):
        return _load_plain_pickle(path, trust_pickle)  # not torch.save's format: a plain pickle (.pkl)
    try:
        with torch.serialization.safe_globals(list(SAFE_GLOBALS)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        msg = str(e)
        if msg.startswith("Weights only load failed"):  # how torch (>= 2.6) words every weights-only refusal
            if trust_pickle:
                return torch.load(path, map_location="cpu", weights_only=False)  # explicit trust option
            first = next((ln for ln in msg.splitlines() if "GLOBAL" in ln or "Unsupported" in ln), "")
            raise UserError(
                f"{path}: holds pickled Python objects besides tensors ({first.strip()}); "
                "if you trust its source, pass --trust-pickle (it runs the pickle's code)"
            ) from None
        raise UserError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {' '.join(msg.split())})") from None


class RestrictedUnpickler(pickle.Unpickler):
    """Builds plain containers, numpy arrays and scalars, and :data:`SAFE_GLOBALS`; any other
    global (a function, a class with a ``__reduce__``) is refused before anything runs."""

    def find_class(self, module: str, name: str):
        allowed = _numpy_globals() | {("collections", "OrderedDict"), ("argparse", "Namespace")}
        if (module, name) in allowed:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")


def _numpy_globals() -> set[tuple[str, str]]:
    import numpy as np

    out: set[tuple[str, str]] = set()
    for core in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out |= {(core, "_reconstruct"), (core, "scalar")}
    out |= {("numpy", "ndarray"), ("numpy", "dtype")}
    out |= {(type(np.dtype(t)).__module__, type(np.dtype(t)).__name__)
            for t in ("bool", "int8", "uint8", "int16", "int32", "int64", "float16", "float32", "float64")}
    return out


def _is_legacy_torch_save(path: Path) -> bool:
    """Whether a pickle stream starts with torch's legacy ``torch.save`` magic number (read safely)."""
    try:
        with open(path, "rb") as f:
            return RestrictedUnpickler(f).load() == torch.serialization.MAGIC_NUMBER
    except Exception:  # noqa: BLE001 - anything else is not the legacy format
        return False


def _load_plain_pickle(path: Path, trust_pickle: bool) -> Any:
    """A plain pickle, numpy arrays turned into tensors (detectron2's ``.pkl`` layout)."""
    try:
        with open(path, "rb") as f:
            obj = pickle.load(f) if trust_pickle else RestrictedUnpickler(f).load()  # explicit trust option
    except pickle.UnpicklingError as e:
        if "is not allowed" in str(e):
            raise UserError(f"{path}: holds pickled Python objects besides arrays ({e}); if you trust its source, "
                            "pass --trust-pickle (it runs the pickle's code)") from None
        raise UserError(f"{path}: not a readable pickle ({e})") from None
    except Exception as e:  # noqa: BLE001 - truncated or corrupt file
        raise UserError(f"{path}: not a readable pickle ({type(e).__name__}: {e})") from None
    return _arrays_to_tensors(obj)


def _arrays_to_tensors(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, dict):
        return {k: _arrays_to_tensors(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_arrays_to_tensors(v) for v in obj]
    return obj


def encoder_payload(state_dict: dict, meta: dict) -> dict:
    return {"format": ENCODER_FORMAT, "meta": meta, "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()}}


def save_encoder(path: str | Path, state_dict: dict, meta: dict) -> Path:
    """Write the self-describing encoder file (``meta`` must contain ``arch`` and ``method``)."""
    missing = {"arch", "method"} - set(meta)
    if missing:
        raise ValueError(f"encoder meta lacks {sorted(missing)}")
    return atomic_save(encoder_payload(state_dict, meta), path)
