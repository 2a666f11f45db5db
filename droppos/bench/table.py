"""The plan as a text table (``droppos bench SPEC --dry-run``) and as JSON (``OUT/plan.json``)."""

from __future__ import annotations

import json
from pathlib import Path

from .plan import PlannedRun
from .state import changed_since, status

COLUMNS = ("run", "backbone", "task", "seed", "folder", "status", "command")


def _rel(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


def plan_rows(runs: list[PlannedRun]) -> list[dict]:
    rows = []
    for r in runs:
        state = status(r)
        if state == "done" and changed_since(r):
            state = "done*"
        rows.append({"run": r.id, "backbone": r.backbone or "-", "task": r.task or r.kind,
                     "seed": "-" if r.seed is None else str(r.seed), "folder": _rel(r.folder), "status": state,
                     "command": r.command if r.buildable else "(build: false: the dataset must be at this path)",
                     "needs": list(r.deps)})
    return rows


def plan_table(runs: list[PlannedRun]) -> str:
    """Aligned columns; the command line last, unpadded."""
    rows = plan_rows(runs)
    head = {c: c for c in COLUMNS}
    widths = {c: max(len(str(x[c])) for x in [head, *rows]) for c in COLUMNS[:-1]}
    lines = []
    for x in [head, *rows]:
        lines.append("  ".join(str(x[c]).ljust(widths[c]) for c in COLUMNS[:-1]) + "  " + x["command"])
        if x is head:
            lines.append("  ".join("-" * widths[c] for c in COLUMNS[:-1]) + "  " + "-" * 7)
    counts: dict[str, int] = {}
    for x in rows:
        counts[x["status"]] = counts.get(x["status"], 0) + 1
    lines.append(f"{len(rows)} runs: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    if "done*" in counts:
        lines.append("done*: finished with other options than the spec's now (run.json 'command'); "
                     "skipped all the same: delete its folder to redo it")
    return "\n".join(lines)


def write_plan_json(runs: list[PlannedRun], path: Path, spec_file: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"spec": str(spec_file), "runs": plan_rows(runs)}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)
    return path
