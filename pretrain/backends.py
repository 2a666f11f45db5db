"""Which pretraining input backend a run uses (``--data-backend``: torch, fast, dali), checked before training."""

from __future__ import annotations

from pathlib import Path

from droppos.errors import UserError

from . import datapath
from .dali import import_dali

BACKENDS = ("torch", "fast", "dali")
JPEG_SUFFIXES = (".jpg", ".jpeg")


def check_backend(backend: str, method: str, files: list[Path]) -> tuple[str, str]:
    """(the backend to use, a note to print or ''): one line for what cannot work."""
    if backend not in BACKENDS:
        raise UserError(f"--data-backend must be one of {list(BACKENDS)}, got {backend!r}")
    if backend != "torch" and method == "supervised":
        raise UserError(f"--data-backend {backend}: supervised pretraining runs the DeiT transform "
                        "(RandAugment, random erasing) in the loader; use --data-backend torch")
    if backend == "dali":
        import_dali()
        other = [p for p in files if p.suffix.lower() not in JPEG_SUFFIXES]
        if other:
            return "fast", (f"--data-backend dali decodes JPEG windows only; {len(other)} of {len(files)} images "
                            f"are not JPEG (e.g. {other[0].name}): using --data-backend fast instead")
    if backend == "fast" and datapath.window_decoder() is None:
        return backend, datapath.WINDOW_NOTE
    return backend, ""
