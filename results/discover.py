"""Find run folders under the given paths and read one :class:`RunResult` from each.

A run folder is a folder holding any of:

* ``metrics.json`` written by :func:`droppos.runs.records.write_metrics` (the normal case);
* ``run.json``: the plan of a run (same fields as ``metrics.json`` without ``metrics``; an
  optional ``"schedule": {"epochs": N}`` or ``{"iters": N}`` tells when an engine log is
  complete). A planned run with no numbers shows as ``missing``, or as its ``status`` when the
  bench recorded ``failed`` or ``blocked`` (with the last line of its ``error``);
* an engine's own log (see :mod:`droppos.results.engines`): detectron2 ``metrics.json`` lines,
  mmengine ``<work_dir>/<timestamp>/vis_data/scalars.json`` (the run is ``<work_dir>``), or a
  classification ``log.jsonl``.

Engine logs are read only where the run has no usable ``metrics.json`` of ours; a log in a
subfolder belongs to the nearest enclosing run folder of the same task. A malformed file is
named in a warning and skipped. Hidden folders (``.git``, ``.venv``) are not entered.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from droppos.results.engines import EngineLog, parse_classification, parse_detectron2, parse_mmengine
from droppos.results.records import RunResult

from droppos.runs.records import read_metrics

#: run.json statuses that say why a run has no numbers
PLAN_FAILURES = ("failed", "blocked")
# engine -> (task, protocol) it produces
ENGINE_TASK = {
    "detectron2": ("detection", "mask_rcnn"),
    "mmengine": ("segmentation", "upernet"),
    "classification": ("classification", "unknown"),
}


@dataclass
class Discovery:
    runs: list[RunResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class _Folder:
    ours: dict | None = None  # a valid metrics.json of ours
    plan: dict | None = None  # run.json
    malformed: str = ""  # why our metrics.json was skipped
    logs: list[tuple[str, Path]] = field(default_factory=list)  # (engine, file)

    @property
    def task(self) -> str | None:
        for d in (self.ours, self.plan):
            if d and d.get("task"):
                return str(d["task"])
        return None


def _metrics_json_kind(path: Path) -> str:
    """'ours' or 'detectron2' for a file named metrics.json; ValueError if it is neither."""
    text = path.read_text(errors="replace")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        first = next((s for s in text.splitlines() if s.strip()), "")
        try:
            head = json.loads(first)
        except json.JSONDecodeError:
            head = None
        if isinstance(head, dict) and "iteration" in head:
            return "detectron2"
        raise ValueError(f"{path}: malformed metrics file (neither JSON nor detectron2 JSON lines)") from None
    if isinstance(data, dict) and "iteration" in data and "task" not in data:
        return "detectron2"
    return "ours"


def _check_ours(path: Path) -> dict:
    """Our metrics.json, checked: a dict backbone and numeric (or null) metrics."""
    data = read_metrics(path)
    if not isinstance(data.get("backbone"), dict):
        raise ValueError(f"{path}: 'backbone' must be an object with method/arch/epochs")
    if not isinstance(data.get("metrics"), dict):
        raise ValueError(f"{path}: 'metrics' must be an object of name: number")
    for k, v in data["metrics"].items():
        if v is not None and not isinstance(v, (int, float)):
            raise ValueError(f"{path}: metric {k!r} is not a number ({v!r})")
    return data


def _read_plan(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: unreadable run plan ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a run plan must be a JSON object")
    return data


def _scan(root: Path, folders: dict[Path, _Folder], warnings: list[str], recursive: bool = True) -> None:
    walker = os.walk(root) if recursive else [(str(root), [], os.listdir(root))]
    for dirpath, dirnames, filenames in walker:
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        here = Path(dirpath)
        names = set(filenames)
        if "metrics.json" in names:
            path = here / "metrics.json"
            folder = folders.setdefault(here, _Folder())
            try:
                if _metrics_json_kind(path) == "detectron2":
                    folder.logs.append(("detectron2", path))
                else:
                    folder.ours = _check_ours(path)
            except (OSError, ValueError) as e:
                folder.malformed = str(e)
                warnings.append(f"skipped {e}")
        if "run.json" in names:
            try:
                folders.setdefault(here, _Folder()).plan = _read_plan(here / "run.json")
            except ValueError as e:
                warnings.append(f"skipped {e}")
        if "log.jsonl" in names:
            folders.setdefault(here, _Folder()).logs.append(("classification", here / "log.jsonl"))
        if here.name == "vis_data" and "scalars.json" in names:
            work_dir = here.parent.parent
            folders.setdefault(work_dir, _Folder()).logs.append(("mmengine", here / "scalars.json"))


def _attribute(folders: dict[Path, _Folder]) -> None:
    """Move each engine log of a bare folder to the nearest enclosing run folder of its task."""
    for path in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        folder = folders[path]
        if folder.ours or folder.plan or folder.malformed or not folder.logs:
            continue
        for parent in path.parents:
            owner = folders.get(parent)
            if owner and (owner.ours or owner.plan or owner.malformed):
                tasks = {ENGINE_TASK[e][0] for e, _ in folder.logs}
                if owner.task is None or owner.task in tasks:
                    owner.logs.extend(folder.logs)
                    folder.logs = []
                break


def _schedule(plan: dict | None) -> tuple[int | None, int | None]:
    s = (plan or {}).get("schedule") or {}
    return s.get("epochs"), s.get("iters")


def _parse_logs(folder: _Folder, warnings: list[str]) -> EngineLog | None:
    """The most advanced evaluation among a run folder's engine logs."""
    epochs, iters = _schedule(folder.plan)
    parsed: list[EngineLog] = []
    for engine, path in folder.logs:
        if folder.task and ENGINE_TASK[engine][0] != folder.task:
            continue
        try:
            if engine == "detectron2":
                log = parse_detectron2(path, iters)
            elif engine == "mmengine":
                log = parse_mmengine(path, iters)
            else:
                log = parse_classification(path, epochs)
        except ValueError as e:
            warnings.append(f"skipped {e}")
            continue
        warnings.extend(log.warnings)
        parsed.append(log)
    if not parsed:
        return None
    return max(parsed, key=lambda g: (bool(g.metrics), g.complete is True, g.step or 0, str(g.path)))


def _from_ours(path: Path, data: dict) -> tuple[RunResult, list[str]]:
    metrics = {k: float(v) for k, v in data["metrics"].items() if v is not None}
    nulls = [k for k, v in data["metrics"].items() if v is None]
    notes = [f"{path / 'metrics.json'}: {', '.join(nulls)} {'is' if len(nulls) == 1 else 'are'} null "
             "(non-finite when written, e.g. COCO's APl without large objects), left out"] if nulls else []
    run = RunResult(path=path, task=str(data["task"]), protocol=str(data["protocol"]), backbone=data["backbone"],
              dataset=str(data.get("dataset") or "unknown"), seed=data.get("seed"), metrics=metrics,
              status=str(data.get("status") or "finished"), source="metrics.json", data_id=data.get("data_id"),
              cost=data.get("cost") if isinstance(data.get("cost"), dict) else {})
    return run, notes


def _failed_if_not_finite(run: RunResult, warnings: list[str]) -> RunResult:
    """A run that reports a NaN or infinite metric (a diverged loss, a broken evaluation) is a failed run: its
    numbers leave the table and the warning names the file; never a ``nan`` mean."""
    bad = sorted(k for k, v in run.metrics.items() if not math.isfinite(v))
    if not bad:
        return run
    values = ", ".join(f"{k} = {run.metrics[k]}" for k in bad)
    warnings.append(f"{run.path / run.source if run.source == 'metrics.json' else run.path}: {values}; the run is "
                    "shown as failed (a diverged loss or a broken evaluation: look at its log)")
    return dataclasses.replace(run, metrics={}, status="failed", note=f"non-finite {', '.join(bad)}")


def _guess_backbone(path: Path) -> dict:
    return {"id": path.name, "method": path.name, "arch": "unknown", "epochs": None, "source": ""}


def _from_plan_or_log(path: Path, folder: _Folder, log: EngineLog | None, warnings: list[str]) -> RunResult | None:
    plan = folder.plan or {}
    if not plan and log is None:
        return None  # a malformed metrics.json alone: already warned, nothing to place
    engine_task = ENGINE_TASK[log.engine] if log else (None, None)
    if not isinstance(plan.get("backbone"), dict):
        warnings.append(f"{path}: no metrics.json or run.json names its backbone; "
                        f"using the folder name {path.name!r} (write run.json to name it)")
    backbone = plan["backbone"] if isinstance(plan.get("backbone"), dict) else _guess_backbone(path)
    protocol = plan.get("protocol") or (log.protocol if log else None) or engine_task[1]
    run = RunResult(path=path, task=str(plan.get("task") or engine_task[0]), protocol=str(protocol),
              backbone=backbone, dataset=str(plan.get("dataset") or "unknown"), seed=plan.get("seed"))
    if folder.malformed:
        run.note = "metrics.json malformed"
    if log is None or not log.metrics:
        # the bench's verdict when it has one (failed, blocked), else a run without numbers
        run.status = plan.get("status") if plan.get("status") in PLAN_FAILURES else "missing"
        if plan.get("error"):
            run.note = (run.note + "; " if run.note else "") + str(plan["error"]).strip().splitlines()[-1][:200]
        run.source = str(log.path.relative_to(path)) if log else "run.json"
        run.progress = log.progress if log else ""
        return run
    run.metrics = log.metrics
    run.status = "recovered" if log.complete else "partial"
    run.source = str(log.path.relative_to(path))
    run.progress = log.progress
    if log.complete is None:
        run.note = (run.note + "; " if run.note else "") + "completion unknown"
    return run


def discover(paths: list[str | Path]) -> Discovery:
    """Every run under ``paths`` (folders, walked recursively, or ``metrics.json`` files)."""
    found = Discovery()
    folders: dict[Path, _Folder] = {}
    for p in map(Path, paths):
        if p.is_dir():
            _scan(p, folders, found.warnings)
        elif p.is_file() and p.name == "metrics.json":
            _scan(p.parent, folders, found.warnings, recursive=False)
        elif p.exists():
            raise ValueError(f"{p}: expected a run folder or a metrics.json file")
        else:
            raise FileNotFoundError(f"{p}: no such run folder (pass folders that hold run outputs)")
    _attribute(folders)
    for path in sorted(folders):
        folder = folders[path]
        if folder.ours is not None:
            run, notes = _from_ours(path, folder.ours)
            found.warnings.extend(notes)
        else:
            log = _parse_logs(folder, found.warnings) if folder.logs else None
            run = _from_plan_or_log(path, folder, log, found.warnings)
        if run is not None:
            found.runs.append(_failed_if_not_finite(run, found.warnings))
    return found
