"""A stand-in ``mmcv.ops`` for mmcv-lite, installed only when mmcv's compiled ops are absent.

Why: mmsegmentation 1.2.2 imports ``mmcv.ops`` while importing ``mmseg.models`` (for
``point_sample`` in ``mmseg/utils/mask_classification.py`` and ``sigmoid_focal_loss`` in its
focal loss). ``mmcv-lite`` ships the Python files of ``mmcv.ops`` but not the compiled
``mmcv._ext`` they load, so ``import mmseg.models`` fails with ``No module named 'mmcv._ext'``.
UperNet with the ``MAE`` backbone uses none of the compiled ops.

What :func:`ensure_mmcv_ops` does:

* full mmcv installed (``mmcv._ext`` importable): nothing at all; the real ``mmcv.ops`` is used.
* mmcv-lite: registers a module named ``mmcv.ops`` in ``sys.modules`` that provides a pure-torch
  :func:`point_sample` and raises ``ModuleNotFoundError`` for every other op. mmseg catches that
  error for its optional heads (CCHead, PSAHead, PointHead), which then say they need full mmcv.
  ``sigmoid_focal_loss`` is imported unguarded by mmseg's focal loss, so it is the one exception:
  importing it works and *calling* it raises ``ModuleNotFoundError`` (on CPU mmseg uses its own
  pure-torch focal loss and never calls it).

It is never run at import: the ``droppos segment`` entry point and the tests call it explicitly,
before the first mmseg import.
"""

from __future__ import annotations

import importlib.util
import sys
import types

import torch
import torch.nn.functional as F

SHIM_FLAG = "__droppos_mmcv_ops_shim__"

# Imported at module level (outside try/except) by mmseg 1.2.2: must import, may fail when called.
_IMPORTED_UNGUARDED = ("sigmoid_focal_loss",)

_HINT = ("needs mmcv's compiled ops (mmcv._ext), which mmcv-lite lacks; install full mmcv "
         "(pip install mmcv==2.1.0, built from source: see shared/DEPENDENCIES.md) to use it")


def point_sample(input: torch.Tensor, points: torch.Tensor, align_corners: bool = False, **kwargs) -> torch.Tensor:
    """Sample ``input`` at normalised points (mmcv's ``point_sample`` contract, pure torch).

    Args:
        input: (N, C, H, W) feature map.
        points: (N, P, 2) or (N, Hp, Wp, 2) point coordinates (x, y) in [0, 1] x [0, 1].
        align_corners: as in ``F.grid_sample``; ``kwargs`` go to ``F.grid_sample`` too.

    Returns:
        (N, C, P) for (N, P, 2) points, (N, C, Hp, Wp) for (N, Hp, Wp, 2) points.
    """
    flat = points.dim() == 3
    grid = points.unsqueeze(2) if flat else points
    out = F.grid_sample(input, 2.0 * grid - 1.0, align_corners=align_corners, **kwargs)
    return out.squeeze(3) if flat else out


def _missing(name: str):
    def op(*args, **kwargs):
        raise ModuleNotFoundError(f"mmcv.ops.{name} {_HINT}", name="mmcv._ext")

    op.__name__ = name
    op.__doc__ = f"Placeholder: calling it raises ModuleNotFoundError (mmcv.ops.{name} {_HINT})."
    return op


def _module_getattr(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    if name in _IMPORTED_UNGUARDED:
        return _missing(name)
    raise ModuleNotFoundError(f"mmcv.ops.{name} {_HINT}", name="mmcv._ext")


def full_mmcv_available() -> bool:
    """True when mmcv's compiled ops are installed (full mmcv, not mmcv-lite)."""
    return importlib.util.find_spec("mmcv") is not None and importlib.util.find_spec("mmcv._ext") is not None


def build_shim() -> types.ModuleType:
    """The stand-in module (not registered anywhere; :func:`ensure_mmcv_ops` does that)."""
    mod = types.ModuleType("mmcv.ops", __doc__)
    mod.point_sample = point_sample
    mod.__getattr__ = _module_getattr
    setattr(mod, SHIM_FLAG, True)
    return mod


def ensure_mmcv_ops() -> str:
    """Make ``import mmcv.ops`` work; returns ``'full'``, ``'shim'`` (installed now or before).

    Raises ``ModuleNotFoundError`` when mmcv itself is not installed.
    """
    if importlib.util.find_spec("mmcv") is None:
        raise ModuleNotFoundError(
            "mmcv is not installed; install the segmentation extra: pip install -e '.[segmentation]'", name="mmcv")
    current = sys.modules.get("mmcv.ops")
    if current is not None and getattr(current, SHIM_FLAG, False):
        return "shim"
    if full_mmcv_available():
        return "full"
    import mmcv

    shim = build_shim()
    sys.modules["mmcv.ops"] = shim
    mmcv.ops = shim
    return "shim"
