"""The records a run folder holds, typed, each written atomically (:mod:`droppos.utils.files`).

* ``metrics.json`` (:class:`MetricsRecord`): what a finished run measured, the results' input::

    {"schema": "droppos-bench/metrics/v1", "task", "protocol", "backbone": {id, method, arch, epochs,
     source[, data, sha256]}, "dataset", "metrics": {name: float}, "seed", "status": "finished",
     "data_id", "cost": {params_M, GFLOPs, input, wall_s, peak_rss_gib, ...}, ... free extras}

  Metric values are plain floats in the engines' own units (percent for top-1, AP and mIoU); a
  value that is not finite is written as null.
* ``init.json`` (:class:`InitRecord`): what ``--backbone`` resolved to in a detection or
  segmentation run (source, kind, the backbone record, the converted weights' file, the converter's
  report, the load report) and the number of processes it started with.
* ``run.json`` (:class:`RunRecord`): the bench's plan and bookkeeping of one run (written before each
  launch, so a killed or failed run still shows in the results): the fields of ``metrics.json``
  without ``metrics``, the ``schedule`` the engine log is complete at, and the attempts::

    {"schema": "droppos-bench/run/v1", "run_id": "droppos/finetune/seed0", "status": "failed",
     "task", "protocol", "backbone", "dataset", "seed", "schedule": {"epochs": 3},
     "command": "droppos classify finetune ...", "log": "bench.log", "attempts": 2, "started",
     "ended", "returncode": 1, "error": "<last lines of the log>", "job_id": "1234"}

  Status values: ``running``, ``finished``, ``failed`` (exit code or no metrics.json),
  ``interrupted`` (the bench was stopped), ``blocked`` (a run it needs failed), ``submitted`` (a
  SLURM job is queued or running).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from droppos.utils.files import atomic_write_json, read_json

METRICS_FILE, INIT_FILE, RUN_FILE = "metrics.json", "init.json", "run.json"
METRICS_SCHEMA = "droppos-bench/metrics/v1"
RUN_SCHEMA = "droppos-bench/run/v1"
TASKS = ("pretrain", "classification", "detection", "segmentation", "probe")


def _clean(v: Any) -> Any:
    """Plain JSON values: tensors and numpy scalars as numbers, non-finite floats as null."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if hasattr(v, "item") and callable(v.item):
        return _clean(v.item())
    return v


class _Record:
    """A dataclass read from and written to one JSON file; unknown keys are kept in ``extra``."""

    FILE = ""

    @classmethod
    def from_dict(cls, data: dict):
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in data.items() if k in names}
        return cls(**known, extra={k: v for k, v in data.items() if k not in names})

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return _clean({**d, **self.extra})

    @classmethod
    def read(cls, folder: str | Path):
        """The record in ``folder``, or None when absent or unreadable."""
        data = read_json(Path(folder) / cls.FILE)
        try:
            return cls.from_dict(data) if isinstance(data, dict) else None
        except (TypeError, ValueError):  # a record without its required fields: not one of ours
            return None

    def write(self, folder: str | Path) -> Path:
        return atomic_write_json(Path(folder) / self.FILE, self.to_dict(), sort_keys=True)


@dataclass
class MetricsRecord(_Record):
    FILE = METRICS_FILE

    task: str
    protocol: str
    backbone: dict
    dataset: str
    metrics: dict
    seed: int = 0
    status: str = "finished"
    schema: str = METRICS_SCHEMA
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")


@dataclass
class InitRecord(_Record):
    FILE = INIT_FILE

    source: str = ""
    kind: str = ""  # scratch | native | converted | generic | run
    backbone: dict = field(default_factory=dict)
    checkpoint: str = ""  # the weights file the engine loads ("" for scratch and generic)
    conversion: dict = field(default_factory=dict)
    load_report: dict | None = None
    notes: list = field(default_factory=list)
    world_size: int | None = None  # processes the run started with
    extra: dict = field(default_factory=dict)


@dataclass
class RunRecord(_Record):
    FILE = RUN_FILE

    run_id: str = ""
    status: str = "todo"
    task: str = ""
    protocol: str = ""
    backbone: dict | None = None
    dataset: str = ""
    seed: int | None = None
    schedule: dict | None = None
    command: str = ""
    log: str = "bench.log"
    attempts: int = 0
    started: str | None = None
    ended: str | None = None
    returncode: int | None = None
    error: str | None = None
    seconds: float | None = None
    job_id: str | None = None
    submitted: str | None = None
    schema: str = RUN_SCHEMA
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = super().to_dict()
        if d.get("schedule") is None:
            d.pop("schedule", None)
        return d


def write_metrics(run_dir: str | Path, *, task: str, protocol: str, backbone: dict, dataset: str,
                  metrics: dict[str, float], seed: int = 0, data_root: str | Path | None = None,
                  cost: dict | None = None, **extra: Any) -> Path:
    """Write ``run_dir/metrics.json`` and return its path; ``data_root`` gives ``data_id``; ``cost`` (the
    backbone's params/GFLOPs, :func:`droppos.utils.cost.backbone_cost`) gets the run's wall time and peak
    memory added."""
    from droppos.utils.cost import run_cost
    from droppos.utils.metrics import data_id

    if data_root is not None:
        extra["data_id"] = data_id(data_root)
    extra["cost"] = {**(cost or {}), **run_cost()}
    record = MetricsRecord(task=task, protocol=protocol, backbone=backbone, dataset=dataset,
                           metrics={k: float(v) for k, v in metrics.items()}, seed=seed, extra=extra)
    return record.write(run_dir)


def read_metrics(path: str | Path) -> dict:
    """Read and check a metrics file; a malformed one raises ``ValueError`` naming the file."""
    import json

    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: unreadable metrics file ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: metrics file is not a JSON object")
    missing = [k for k in ("task", "protocol", "backbone", "metrics") if k not in data]
    if missing:
        raise ValueError(f"{path}: metrics file lacks {missing}")
    return data
