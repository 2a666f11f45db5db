"""``results.csv`` (long format, one line per backbone x column) and ``results.json``.

Empty CSV fields mean "no value" (never zero). Published numbers are lines with
``kind=published`` and their source, reference and comparability.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from droppos.results.aggregate import Table
from droppos.results.published import Published, comparability

SCHEMA = "droppos-bench/results/v1"
CSV_FIELDS = ["kind", "backbone", "method", "arch", "pretrain_epochs", "backbone_ids", "task", "protocol", "dataset",
              "metric", "mean", "std", "ci95", "n", "seeds", "status", "partial", "missing", "source", "reference", "comparable"]


def csv_fields(table: Table) -> list[str]:
    """The CSV columns: ``delta_vs_<name>`` and ``welch95_vs_<name>`` (``low;high``) per reference row, before
    ``source``."""
    i = CSV_FIELDS.index("source")
    refs = [f"{what}_vs_{name}" for name in table.references for what in ("delta", "welch95")]
    return CSV_FIELDS[:i] + refs + CSV_FIELDS[i:]


def _num(v: float | None) -> str:
    return "" if v is None else repr(round(v, 6))


def write_csv(table: Table, published: list[Published], path: str | Path) -> Path:
    path = Path(path)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=csv_fields(table))
        w.writeheader()
        for row in table.rows:
            method, arch, epochs = row.method, row.arch, row.epochs
            for col in table.columns:
                cell = row.cells.get(col)
                if cell is None:
                    continue
                w.writerow({
                    "kind": "run", "backbone": row.label, "method": method, "arch": arch,
                    "pretrain_epochs": "" if epochs is None else epochs, "backbone_ids": ";".join(row.ids),
                    "task": col.task, "protocol": col.protocol, "dataset": col.dataset, "metric": col.metric,
                    "mean": _num(cell.mean), "std": _num(cell.std), "ci95": _num(cell.ci95), "n": cell.n,
                    "seeds": ";".join(str(s) for s in cell.seeds), "status": cell.status,
                    "partial": ";".join(f"{_num(v)}@{p}" for v, p in cell.partial), "missing": cell.missing,
                    **{f"delta_vs_{k}": _num(v) for k, v in cell.deltas.items()},
                    **{f"welch95_vs_{k}": f"{_num(lo)};{_num(hi)}" for k, (lo, hi) in cell.intervals.items()},
                    "source": "runs", "reference": ";".join(cell.paths), "comparable": "",
                })
        for p in published:
            w.writerow({
                "kind": "published", "backbone": p.label, "method": p.method, "arch": p.arch,
                "pretrain_epochs": "" if p.pretrain_epochs is None else p.pretrain_epochs, "backbone_ids": "",
                "task": p.column.task, "protocol": p.column.protocol, "dataset": p.column.dataset,
                "metric": p.column.metric, "mean": _num(p.value), "std": "", "ci95": "", "n": "", "seeds": "",
                "status": "published", "partial": "", "missing": "", "source": p.source, "reference": p.reference,
                "comparable": f"{p.comparable} | {comparability(p, table)}",
            })
    return path


def to_json(table: Table, published: list[Published], warnings: list[str]) -> dict:
    return {
        "schema": SCHEMA,
        "columns": [{"key": c.key, "label": c.label, "task": c.task, "protocol": c.protocol,
                     "dataset": c.dataset, "metric": c.metric} for c in table.columns],
        "references": list(table.references),
        "rows": [{"label": r.label, "method": r.method, "arch": r.arch, "pretrain_epochs": r.epochs, "record": r.record,
                  "cost": r.cost,
                  "backbone_ids": r.ids, "cells": {c.key: cell.to_dict() for c, cell in r.cells.items()}}
                 for r in table.rows],
        "published": [{**p.to_dict(), "with_these_runs": comparability(p, table)} for p in published],
        "runs": [r.to_dict() for r in sorted(table.runs, key=lambda r: str(r.path))],
        "warnings": warnings,
    }


def write_json(table: Table, published: list[Published], warnings: list[str], path: str | Path) -> Path:
    path = Path(path)
    from droppos.runs.records import _clean

    # strict JSON: a non-finite number becomes null (the table's warnings say which)
    path.write_text(json.dumps(_clean(to_json(table, published, warnings)), indent=2, default=str, allow_nan=False) + "\n")
    return path
