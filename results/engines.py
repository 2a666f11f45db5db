"""Read the engines' own logs when a run left no ``metrics.json`` of ours.

Three formats, all JSON lines (one object per line):

* detectron2 ``metrics.json`` (``detectron2.utils.events.JSONWriter``): event-storage scalars
  per logged iteration, ``{"iteration": 39, "total_loss": ..., "bbox/AP": 12.3, "segm/AP50": ...}``;
  evaluation lines carry ``bbox/*`` and ``segm/*`` keys (COCO AP in percent, NaN when a size
  range has no objects). The run finished when ``model_final.pth`` sits beside it.
* mmengine ``<work_dir>/<timestamp>/vis_data/scalars.json`` (``LocalVisBackend``): training
  lines ``{"loss": ..., "iter": 50, "step": 50}`` and validation lines
  ``{"aAcc": 71.3, "mIoU": 23.45, "mAcc": 30.1, "step": 100}`` (percent). The schedule comes
  from the dumped ``vis_data/config.py`` (``train_cfg``'s ``max_iters`` / ``max_epochs``; not a
  top-level variable of the same name, which a config may leave at another value), and so does
  the protocol (its top-level ``protocol``, e.g. ``'linear'`` for a frozen dense probe; else UperNet).
* classification ``log.jsonl``: one line per epoch with ``epoch`` and top-1 under ``top1``,
  ``acc1`` or ``test_acc1`` (top-5 under ``top5``/``acc5``/``test_acc5``), percent.

Each parser returns an :class:`EngineLog`; a file that is not what it claims to be raises
``ValueError`` naming the file.
"""

from __future__ import annotations

import ast
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

D2_METRIC = re.compile(r"^(bbox|segm)/(AP|AP50|AP75|APs|APm|APl)$")
MMSEG_METRICS = ("mIoU", "mAcc", "aAcc")
CLS_KEYS = {"top1": ("top1", "val_top1", "acc1", "test_acc1"), "top5": ("top5", "val_top5", "acc5", "test_acc5")}


@dataclass
class EngineLog:
    """The last evaluation found in an engine log.

    ``metrics`` is empty when the log holds no evaluation yet; ``step`` counts the iterations
    or epochs done at that evaluation (or at the last line when there is none); ``complete`` is True
    only with evidence that the schedule ended, False when it did not, None when unknown.
    """

    engine: str
    path: Path
    metrics: dict[str, float]
    step: int | None
    total: int | None = None
    complete: bool | None = None
    warnings: list[str] = field(default_factory=list)
    protocol: str | None = None  # what the log says it ran, when it says (mmengine: the config's ``protocol``)

    @property
    def progress(self) -> str:
        unit = "epoch" if self.engine == "classification" else "iter"
        if self.step is None:
            return ""
        return f"{unit} {self.step}" + (f"/{self.total}" if self.total else "")


def read_json_lines(path: Path) -> tuple[list[dict], list[str]]:
    """Parse a JSON-lines file into its objects.

    A truncated last line (a run killed while writing) is dropped with a warning; any other
    bad line raises ``ValueError`` naming the file and line.
    """
    try:
        text = path.read_text()
    except OSError as e:
        raise ValueError(f"{path}: unreadable ({e})") from None
    lines = [(i + 1, s) for i, s in enumerate(text.splitlines()) if s.strip()]
    out, warnings = [], []
    for k, (lineno, s) in enumerate(lines):
        try:
            obj = json.loads(s)
        except json.JSONDecodeError as e:
            if k == len(lines) - 1 and out:
                warnings.append(f"{path}:{lineno}: truncated last line ignored")
                continue
            raise ValueError(f"{path}:{lineno}: not a JSON line ({e})") from None
        if not isinstance(obj, dict):
            raise ValueError(f"{path}:{lineno}: expected a JSON object per line, got {type(obj).__name__}")
        out.append(obj)
    if not out:
        raise ValueError(f"{path}: empty log")
    return out, warnings


def _finite(metrics: dict[str, object], path: Path, warnings: list[str]) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        try:
            f = float(v)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ValueError(f"{path}: metric {k!r} is not a number ({v!r})") from None
        if math.isfinite(f):
            out[k] = f
        else:
            warnings.append(f"{path}: {k} is {v} (no value), left out")
    return out


def _int(v) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def parse_detectron2(path: Path, expected_iters: int | None = None) -> EngineLog:
    """Last ``bbox/*``/``segm/*`` evaluation of a detectron2 ``metrics.json`` (JSON lines).

    Metric names become ours: ``bbox/AP50`` -> ``bbox_AP50``.
    """
    lines, warnings = read_json_lines(path)
    if not all("iteration" in line for line in lines):
        raise ValueError(f"{path}: not a detectron2 metrics file (lines lack 'iteration')")
    done = {id(line): (_int(line["iteration"]) or 0) + 1 for line in lines}  # 0-based iteration -> iterations done
    evals = [line for line in lines if any(D2_METRIC.match(k) for k in line)]
    metrics: dict[str, float] = {}
    step = max(done.values())
    if evals:
        last = max(evals, key=lambda line: done[id(line)])
        step = done[id(last)]
        raw = {k.replace("/", "_"): v for k, v in last.items() if D2_METRIC.match(k)}
        metrics = _finite(raw, path, warnings)
    if (path.parent / "model_final.pth").is_file():
        complete = True
    elif expected_iters:
        complete = step >= expected_iters
    else:
        complete = None
    return EngineLog("detectron2", path, metrics, step, expected_iters, complete if metrics else False, warnings)


def _mmengine_config(vis_dir: Path) -> tuple[int | None, str | None]:
    """(``train_cfg``'s ``max_iters``/``max_epochs``, the top-level ``protocol``) of the config mmengine dumped
    beside ``scalars.json``; read as Python syntax, never run. None for what it does not state."""
    try:
        tree = ast.parse((vis_dir / "config.py").read_text(errors="replace"))
    except (OSError, SyntaxError, ValueError):
        return None, None
    top = {node.targets[0].id: node.value for node in tree.body
           if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)}
    total = None
    loop = top.get("train_cfg")
    if isinstance(loop, ast.Call):
        for kw in loop.keywords:
            if kw.arg in ("max_iters", "max_epochs") and isinstance(kw.value, ast.Constant) \
                    and isinstance(kw.value.value, int):
                total = kw.value.value
    protocol = top.get("protocol")
    protocol = protocol.value if isinstance(protocol, ast.Constant) and isinstance(protocol.value, str) else None
    return total, protocol


def parse_mmengine(path: Path, expected_iters: int | None = None) -> EngineLog:
    """Last validation (``mIoU``/``mAcc``/``aAcc``) of an mmengine ``scalars.json``.

    Keys written with a ``val/`` or ``test/`` prefix are accepted too.
    """
    lines, warnings = read_json_lines(path)
    if not all("step" in line for line in lines):
        raise ValueError(f"{path}: not an mmengine scalars file (lines lack 'step')")

    def strip(line: dict) -> dict:
        return {k.split("/", 1)[1] if k.startswith(("val/", "test/")) else k: v for k, v in line.items()}

    lines = [strip(line) for line in lines]
    evals = [line for line in lines if "mIoU" in line]
    step = max(_int(line["step"]) or 0 for line in lines)
    metrics: dict[str, float] = {}
    if evals:
        last = max(evals, key=lambda line: _int(line["step"]) or 0)
        step = _int(last["step"])
        metrics = _finite({k: last[k] for k in MMSEG_METRICS if k in last}, path, warnings)
    dumped, protocol = _mmengine_config(path.parent)
    total = dumped or expected_iters
    complete = (step is not None and step >= total) if total else None
    return EngineLog("mmengine", path, metrics, step, total, complete if metrics else False, warnings, protocol)


def parse_classification(path: Path, expected_epochs: int | None = None) -> EngineLog:
    """Last evaluated epoch of a classification ``log.jsonl``.

    Epochs may be counted from 0 (MAE/DropPos ``log.txt`` style) or 1: a log whose first
    epoch is 0 has done ``last + 1`` epochs.
    """
    lines, warnings = read_json_lines(path)

    def acc(line: dict, name: str):
        return next((line[k] for k in CLS_KEYS[name] if k in line), None)

    evals = [line for line in lines if acc(line, "top1") is not None]
    if not evals:
        raise ValueError(f"{path}: no {'/'.join(CLS_KEYS['top1'])} entries; not a classification log")
    epochs = [_int(line.get("epoch")) for line in evals]
    known = [e for e in epochs if e is not None]
    last = evals[-1]
    metrics = {name: acc(last, name) for name in CLS_KEYS if acc(last, name) is not None}
    metrics = _finite(metrics, path, warnings)
    step = None
    if known:
        zero_based = min(_int(line.get("epoch")) for line in lines if _int(line.get("epoch")) is not None) == 0
        step = (known[-1] + 1) if zero_based else known[-1]
    complete = (step is not None and step >= expected_epochs) if expected_epochs else None
    return EngineLog("classification", path, metrics, step, expected_epochs, complete, warnings)
