"""The ``metrics.json`` every run writes, read by the results aggregator.

Schema (version 1)::

    {
      "schema": "droppos-bench/metrics/v1",
      "task": "pretrain" | "classification" | "detection" | "segmentation" | "probe",
      "protocol": e.g. "droppos", "mae", "finetune", "linear", "knn", "mask_rcnn", "upernet",
                  "position", "order",
      "backbone": {"id": str (the backbone's name, the table's row), "method": str, "arch": str,
                   "epochs": int | None, "source": str, "data": str?, "sha256": str?},
      "dataset": str,                      # e.g. "fmnist", "imagenet", "coco", "ade20k"
      "metrics": {name: float},            # e.g. top1/top5, AP/AP50/..., mIoU/mAcc/aAcc
      "seed": int,
      "data_id": str | None,               # hash of the data set's dataset.json (its build options)
      "cost": {"params_M", "GFLOPs", "input", "wall_s", "peak_rss_gib", ...},  # droppos.utils.cost
      "status": "finished",
      ...                                  # free extras: epochs, iterations, config, per_class
    }

Metric values are plain floats in the engines' own units (percent for top-1, AP and mIoU).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

SCHEMA = "droppos-bench/metrics/v1"
TASKS = ("pretrain", "classification", "detection", "segmentation", "probe")


def backbone_record(method: str, arch: dict | str, epochs: int | None = None, source: str = "", id: str | None = None,
                    data: str | None = None, sha256: str | None = None) -> dict:
    """A backbone's identity: ``id`` (its name: the results table's row key), method, architecture,
    pretraining epochs and data, the source and its hash. ``id`` defaults to '<method>-<arch>[-e<epochs>]'."""
    arch_name = arch if isinstance(arch, str) else arch_label(arch)
    if id is None:
        id = f"{method}-{arch_name}" + (f"-e{epochs}" if epochs else "")
    record = {"id": id, "method": method, "arch": arch_name, "epochs": epochs, "source": str(source)}
    if data:
        record["data"] = str(data)
    if sha256:
        record["sha256"] = sha256
    return record


def arch_label(arch: dict) -> str:
    """'vit_base_p16' style label from architecture arguments (named sizes where they match)."""
    from droppos.models.vit import VIT_SIZES

    triple = (arch.get("embed_dim"), arch.get("depth"), arch.get("num_heads"))
    name = next((k for k, v in VIT_SIZES.items() if v == tuple(triple)), None)
    if name is None:
        name = f"d{triple[0]}x{triple[1]}"
    return f"vit_{name}_p{arch.get('patch_size')}"


def data_id(root: str | Path) -> str | None:
    """A data set's identity: the hash of the ``dataset.json`` its builder wrote (build options, seed,
    counts), so that runs on two data sets of one name are never averaged as seeds; None without one."""
    import hashlib

    root = Path(root)
    for candidate in (root / "dataset.json", root.parent / "dataset.json"):
        if candidate.is_file():
            return hashlib.sha256(candidate.read_bytes()).hexdigest()[:12]
    return None


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if hasattr(v, "item") and callable(v.item):
        return _clean(v.item())
    return v


def write_metrics(run_dir: str | Path, *, task: str, protocol: str, backbone: dict, dataset: str,
                  metrics: dict[str, float], seed: int = 0, data_root: str | Path | None = None,
                  cost: dict | None = None, **extra: Any) -> Path:
    """Write ``run_dir/metrics.json`` (atomically) and return its path; ``data_root`` gives ``data_id``;
    ``cost`` (the backbone's params/GFLOPs, :func:`droppos.utils.cost.backbone_cost`) gets the run's
    wall time and peak memory added."""
    from droppos.utils.cost import run_cost

    if data_root is not None:
        extra["data_id"] = data_id(data_root)
    extra["cost"] = {**(cost or {}), **run_cost()}
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    record = {"schema": SCHEMA, "task": task, "protocol": protocol, "backbone": backbone, "dataset": dataset,
              "metrics": {k: float(v) for k, v in metrics.items()}, "seed": seed, "status": "finished", **extra}
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "metrics.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_clean(record), indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


def read_metrics(path: str | Path) -> dict:
    """Read and check a metrics file; a malformed one raises ``ValueError`` naming the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: unreadable metrics file ({e})") from None
    missing = [k for k in ("task", "protocol", "backbone", "metrics") if k not in data]
    if missing:
        raise ValueError(f"{path}: metrics file lacks {missing}")
    return data
