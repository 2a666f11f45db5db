"""The fine-tuned classifier file, self-describing like ``encoder.pth``.

``classifier.pth`` = ``{"format": CLASSIFIER_FORMAT, "meta": {"arch", "num_classes", "classes",
"global_pool", "backbone", "dataset", ...}, "state_dict"}``, tensors and plain types only
(``weights_only=True``). ``load_classifier`` rebuilds the model, e.g. for the order-sensitivity
probe::

    model, meta = load_classifier("runs/ft/classifier.pth")   # eval mode, on the CPU
"""

from __future__ import annotations

from pathlib import Path

import torch

from droppos.utils.checkpoint import atomic_save, safe_load

CLASSIFIER_FORMAT = "droppos-bench/classifier/v1"


def save_classifier(path: str | Path, model: torch.nn.Module, setup, global_pool: str) -> Path:
    """Write ``model`` (a ``VisionTransformer`` with a head) with the run's description."""
    from .common import run_meta

    meta = run_meta(setup, global_pool=global_pool)
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return atomic_save({"format": CLASSIFIER_FORMAT, "meta": meta, "state_dict": sd}, path)


def load_classifier(path: str | Path):
    """``(model, meta)`` from a ``classifier.pth``; errors name the file."""
    from droppos.models.vit import VisionTransformer

    obj = safe_load(path)
    if not isinstance(obj, dict) or obj.get("format") != CLASSIFIER_FORMAT:
        raise ValueError(f"{path}: not a classifier file of this project (format {CLASSIFIER_FORMAT})")
    meta = obj["meta"]
    model = VisionTransformer(**meta["arch"], num_classes=meta["num_classes"], global_pool=meta["global_pool"])
    model.load_state_dict(obj["state_dict"], strict=True)
    return model.eval(), meta
