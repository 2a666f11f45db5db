"""Where a run stands (done / partial / failed / todo), and its ``run.json``.

``run.json`` (:class:`droppos.runs.RunRecord`: the fields and statuses are documented there) is the
plan of a run, written before each launch so that a killed or failed run still shows in the
results table (:mod:`droppos.results.discover` reads it), and the bench's own bookkeeping.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from droppos.runs.records import RUN_FILE, RunRecord

from .plan import PlannedRun

BENCH_FILES = {RUN_FILE, "bench.log"}


def bench_file(name: str) -> bool:
    """A file the bench writes beside a run (its plan, its logs: ``bench.log``, ``bench.node<k>.log``)."""
    return name in BENCH_FILES or (name.startswith("bench.node") and name.endswith(".log"))
ERROR_LINES = 25


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def read_run_json(folder: Path) -> dict | None:
    record = RunRecord.read(folder)
    return record.to_dict() if record is not None else None


def finished(run: PlannedRun) -> bool:
    """Our ``metrics.json`` says finished (and a pretraining also left ``encoder.pth``)."""
    if run.kind == "data":
        return data_ready(run.folder)
    try:
        data = json.loads((run.folder / "metrics.json").read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(data, dict) or data.get("status") != "finished" or "metrics" not in data:
        return False
    return run.kind != "pretrain" or (run.folder / "encoder.pth").is_file()


def data_ready(folder: Path) -> bool:
    """A dataset folder that exists and is not empty (``droppos data`` renames it into place when complete)."""
    return folder.is_dir() and any(folder.iterdir())


def changed_since(run: PlannedRun) -> str | None:
    """The command a finished run was made with, when the spec now gives another one (else None).

    Such a run is still skipped (its numbers stay valid for what it ran); the bench and the plan
    say so, and deleting its folder makes the next bench redo it.
    """
    if run.kind == "data":
        return None
    old = (read_run_json(run.folder) or {}).get("command")
    return old if old and old != run.command else None


def status(run: PlannedRun) -> str:
    """done | partial | failed | todo for a run; data: done | todo | missing (absent and not buildable)."""
    if run.kind == "data":
        if data_ready(run.folder):
            return "done"
        return "todo" if run.buildable else "missing"
    if finished(run):
        return "done"
    plan = read_run_json(run.folder)
    if plan and plan.get("status") == "failed":
        return "failed"
    if plan and plan.get("status") in ("running", "interrupted", "submitted"):
        return "partial"
    if run.folder.is_dir() and any(not bench_file(p.name) for p in run.folder.iterdir()):
        return "partial"
    return "todo"


def write_run_json(run: PlannedRun, backbone: dict | None, **fields) -> dict:
    """Create or update ``run.json`` of ``run`` with ``fields`` (the plan fields always refreshed); a field
    :class:`RunRecord` does not have is an error."""
    record = RunRecord.read(run.folder) or RunRecord(run_id=run.id)
    updates = {"run_id": run.id, **run.plan, "command": run.command, "log": run.log.name, **fields}
    if backbone is not None:
        updates["backbone"] = backbone
    for key, value in updates.items():
        if key == "extra" or not hasattr(record, key):
            raise TypeError(f"run.json has no field {key!r}")
        setattr(record, key, value)
    record.write(run.folder)
    return record.to_dict()


def log_tail(log: Path, start: int = 0, lines: int = ERROR_LINES) -> str:
    """The last ``lines`` lines written to ``log`` after byte offset ``start`` (progress bars folded)."""
    try:
        with open(log, "rb") as f:
            f.seek(start)
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    kept = [next((seg for seg in reversed(line.split("\r")) if seg.strip()), "")
            for line in text.replace("\r\n", "\n").split("\n")]
    return "\n".join([line for line in kept if line.strip()][-lines:])


def outcome_error(run: PlannedRun, returncode: int, log_start: int) -> str | None:
    """None when the run succeeded, else why it failed (with the end of its log)."""
    if returncode == 0 and finished(run):
        return None
    if returncode == 0:
        what = "exited 0 but " + ("the dataset folder is empty" if run.kind == "data" else
                                  "wrote no finished metrics.json" + (" / encoder.pth" if run.kind == "pretrain" else ""))
    elif returncode < 0:
        what = f"killed by signal {-returncode}"
    else:
        what = f"exit code {returncode}"
    tail = log_tail(run.log, log_start)
    return f"{what}; log {run.log}" + (f":\n{tail}" if tail else "")
