"""Every random number generator a training step draws from, saved and restored exactly.

torch (CPU and CUDA), Python's ``random`` (timm's RandAugment in the main process) and numpy's
global ``RandomState`` (timm's Mixup/CutMix, including its cached Gaussian), as tensors and plain
types so that checkpoints keep loading with ``weights_only=True``. DataLoader workers are seeded
from a generator of (seed, epoch, rank), so they need nothing here.
"""

from __future__ import annotations

import random

import numpy as np
import torch


def rng_state() -> dict:
    """The state of every generator (see the module docstring)."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state = {"torch": torch.get_rng_state(), "python": list(py_state), "python_gauss": py_gauss,
             "numpy": torch.from_numpy(keys.astype(np.int64)), "numpy_pos": int(pos),
             "numpy_has_gauss": int(has_gauss), "numpy_cached_gauss": float(cached)}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore :func:`rng_state` (older checkpoints without the Gaussian caches restore without them)."""
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), state.get("python_gauss")))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"],
                         state.get("numpy_has_gauss", 0), state.get("numpy_cached_gauss", 0.0)))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
