"""Let mmengine resume from its own checkpoints under PyTorch's safe loading (``weights_only``).

mmengine 0.10 saves, besides tensors and plain types, its ``MessageHub`` state: the training
curves as ``HistoryBuffer`` objects holding numpy arrays and numpy scalars, and each buffer's
statistics methods as ``getattr(HistoryBuffer, 'mean')`` references. ``torch.load`` (which
mmengine calls without ``weights_only``, i.e. ``True`` since torch 2.6) refuses those globals.

:func:`allow_mmengine_checkpoints` allow-lists exactly these, with
``torch.serialization.add_safe_globals``; nothing else changes and ``weights_only`` stays on:

* ``mmengine.logging.HistoryBuffer``;
* ``numpy.ndarray``, ``numpy.dtype``, ``numpy.core.multiarray._reconstruct`` and ``.scalar``
  (under both their numpy 1 and numpy 2 module paths) and the classes of the numeric dtypes
  (``numpy.dtypes.Float64DType``, ...): how numpy arrays and scalars pickle;
* ``builtins.getattr`` *only* in the restricted form :func:`history_buffer_getattr`, which
  resolves ``HistoryBuffer``'s registered statistics methods and refuses everything else.

(``torch.serialization.get_unsafe_globals_in_checkpoint(path)`` lists what a file needs.)
"""

from __future__ import annotations

import pickle

_ALLOWED: list | None = None
#: HistoryBuffer's built-in statistics (registered lazily, on its first instance)
DEFAULT_STATISTICS = ("min", "max", "current", "mean")
NUMERIC_DTYPES = ("bool", "int8", "uint8", "int16", "int32", "int64", "float16", "float32", "float64")


def history_buffer_getattr(obj, name: str):
    """``getattr`` for unpickling: only ``HistoryBuffer.<registered statistics method>``."""
    from mmengine.logging import HistoryBuffer

    allowed = set(DEFAULT_STATISTICS) | set(HistoryBuffer._statistics_methods)
    if obj is HistoryBuffer and isinstance(name, str) and name in allowed:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f"refusing getattr({getattr(obj, '__name__', type(obj).__name__)}, {name!r}) while loading a checkpoint: "
        "only HistoryBuffer statistics methods are allowed")


def mmengine_safe_globals() -> list:
    """The entries :func:`allow_mmengine_checkpoints` adds (objects or (object, 'module.name'))."""
    import numpy as np
    from mmengine.logging import HistoryBuffer

    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray
    entries: list = [HistoryBuffer, (history_buffer_getattr, "builtins.getattr")]
    for core in ("numpy.core", "numpy._core"):
        entries += [(multiarray._reconstruct, f"{core}.multiarray._reconstruct"),
                    (multiarray.scalar, f"{core}.multiarray.scalar")]
    entries += [(np.ndarray, "numpy.ndarray"), (np.dtype, "numpy.dtype")]
    # unpickling a dtype sets its state: its class (numpy.dtypes.Float64DType, ...) must be allowed
    entries += sorted({type(np.dtype(t)) for t in NUMERIC_DTYPES}, key=str)
    return entries


def allow_mmengine_checkpoints() -> list:
    """Allow-list what mmengine's checkpoints need (idempotent); returns the entries."""
    global _ALLOWED
    import torch

    if _ALLOWED is None:
        _ALLOWED = mmengine_safe_globals()
        torch.serialization.add_safe_globals(_ALLOWED)
    return _ALLOWED
