"""Group runs into a backbone x (task, protocol, dataset, metric) table with mean +- std.

Rows are backbones keyed by (method, arch, pretraining epochs); columns are
(task, protocol, dataset, metric). A cell pools the runs of one row and column group over
seeds: ``finished`` and ``recovered`` values give mean and sample std (n - 1), ``partial``,
``missing`` and other statuses are kept beside them so that the table can say so.

Deltas: each cell's mean minus the mean of the reference row (MAE, supervised) with the same
architecture in the same column, preferring the same pretraining epochs, else the reference
with the most epochs.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

from droppos.results.records import COUNTED, REFERENCE_METHODS, Run, backbone_label
from droppos.utils.metrics import TASKS

# Metrics shown in the main table per task (or (task, protocol)); everything goes to CSV/JSON.
HEADLINE: dict[str | tuple[str, str], tuple[str, ...]] = {
    "classification": ("top1",),
    "detection": ("bbox_AP", "segm_AP"),
    "segmentation": ("mIoU",),
    ("probe", "position"): ("top1", "mean_dist"),
    ("probe", "order"): ("cos_dist", "acc_drop"),
    "pretrain": (),  # pretext losses are not comparable across methods: --all-metrics shows them
}
TASK_SHORT = {"pretrain": "pretrain", "classification": "cls", "detection": "det", "segmentation": "seg", "probe": "probe"}
METHOD_ORDER = ("droppos", "mae", "supervised", "scratch")


@dataclass(frozen=True, order=True)
class Column:
    task: str
    protocol: str
    dataset: str
    metric: str

    @property
    def label(self) -> str:
        return f"{TASK_SHORT.get(self.task, self.task)} {self.protocol} ({self.dataset}) {self.metric}"

    @property
    def key(self) -> str:
        return f"{self.task}/{self.protocol}/{self.dataset}/{self.metric}"


@dataclass
class Cell:
    """The runs of one backbone in one column.

    ``values``/``seeds``: counted (finished or recovered) values; ``partial``: (value, progress)
    of unfinished runs; ``missing``: runs with no value for this metric; ``other``: runs with
    another status (e.g. failed), status -> count.
    """

    values: list[float] = field(default_factory=list)
    seeds: list = field(default_factory=list)
    recovered: int = 0
    partial: list[tuple[float, str]] = field(default_factory=list)
    missing: int = 0
    other: dict[str, int] = field(default_factory=dict)
    paths: list[str] = field(default_factory=list)
    deltas: dict[str, float] = field(default_factory=dict)  # "MAE"/"sup" -> mean - reference mean

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if len(self.values) > 1 else None

    @property
    def status(self) -> str:
        """Summary: finished / recovered / partial / missing / <other status>."""
        if self.values:
            return "recovered" if self.recovered == len(self.values) else "finished"
        if self.partial:
            return "partial"
        if self.other:
            return sorted(self.other)[0]
        return "missing"

    def to_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std, "n": self.n, "values": self.values, "seeds": self.seeds,
                "status": self.status, "recovered": self.recovered, "partial": [list(p) for p in self.partial],
                "missing": self.missing, "other": self.other, "deltas": self.deltas, "runs": self.paths}


@dataclass
class Row:
    key: tuple[str, str, int | None]
    ids: list[str]
    cells: dict[Column, Cell] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return backbone_label(self.key)

    @property
    def method(self) -> str:
        return self.key[0]


@dataclass
class Table:
    columns: list[Column]
    rows: list[Row]
    runs: list[Run]
    warnings: list[str] = field(default_factory=list)


def headline_metrics(task: str, protocol: str) -> tuple[str, ...] | None:
    """The main-table metrics of a task/protocol; None when every metric is shown."""
    for key in ((task, protocol), task):
        if key in HEADLINE:
            return HEADLINE[key]
    return None


def _dedupe(runs: list[Run], warnings: list[str]) -> list[Run]:
    """One run per (backbone, task, seed): the most finished, then the newest folder."""
    rank = {"finished": 0, "recovered": 1, "partial": 2}
    best: dict[tuple, Run] = {}
    out = []
    for run in runs:
        if run.seed is None:
            out.append(run)
            continue
        k = (run.backbone_key, run.task_key, run.seed)
        if k in best:
            a, b = best[k], run
            keep = min((a, b), key=lambda r: (rank.get(r.status, 3), -_mtime(r.path)))
            drop = b if keep is a else a
            warnings.append(f"duplicate run for {backbone_label(k[0])} {'/'.join(k[1])} seed {k[2]}: "
                            f"using {keep.path}, ignoring {drop.path}")
            best[k] = keep
        else:
            best[k] = run
    return out + list(best.values())


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _row_sort(key: tuple[str, str, int | None]):
    method, arch, epochs = key
    m = method.lower()
    return (METHOD_ORDER.index(m) if m in METHOD_ORDER else len(METHOD_ORDER), m, arch, epochs or 0)


def _col_sort(col: Column):
    t = TASKS.index(col.task) if col.task in TASKS else len(TASKS)
    head = headline_metrics(col.task, col.protocol) or ()
    m = head.index(col.metric) if col.metric in head else len(head)
    return (t, col.task, col.protocol, col.dataset, m, col.metric)


def _columns_of(run: Run, all_metrics: bool) -> list[str]:
    """Metric columns a run fills; '?' when a run without numbers has no known metric names."""
    head = headline_metrics(run.task, run.protocol)
    if head == () and not all_metrics:
        return []  # hidden task (pretraining): listed in the run summary only
    names = (sorted(run.metrics) or list(head or ())) if all_metrics or head is None else list(head)
    return names or ["?"]


def aggregate(runs: list[Run], all_metrics: bool = False) -> Table:
    """Build the table; ``all_metrics`` adds every metric (and pretraining) as a column."""
    warnings: list[str] = []
    runs = _dedupe(runs, warnings)
    rows: dict[tuple, Row] = {}
    for run in sorted(runs, key=lambda r: str(r.path)):
        row = rows.setdefault(run.backbone_key, Row(run.backbone_key, []))
        bid = str(run.backbone.get("id") or "")
        if bid and bid not in row.ids:
            row.ids.append(bid)
        for metric in _columns_of(run, all_metrics):
            col = Column(run.task, run.protocol, run.dataset, metric)
            cell = row.cells.setdefault(col, Cell())
            cell.paths.append(str(run.path))
            value = run.metrics.get(metric)
            if run.counted and value is not None:
                cell.values.append(value)
                cell.seeds.append(run.seed)
                cell.recovered += run.status == "recovered"
            elif run.status == "partial" and value is not None:
                cell.partial.append((value, run.progress))
            elif run.counted or run.status in ("partial", "missing"):
                cell.missing += 1
            else:
                cell.other[run.status] = cell.other.get(run.status, 0) + 1
    columns = sorted({c for r in rows.values() for c in r.cells}, key=_col_sort)
    ordered = [rows[k] for k in sorted(rows, key=_row_sort)]
    _add_deltas(ordered, columns)
    return Table(columns, ordered, runs, warnings)


def _reference(rows: list[Row], row: Row, col: Column, method: str) -> Cell | None:
    cands = [r for r in rows if r.method.lower() == method and r.key[1] == row.key[1]
             and r is not row and col in r.cells and r.cells[col].mean is not None]
    if not cands:
        return None
    same = [r for r in cands if r.key[2] == row.key[2]]
    ref = same[0] if same else max(cands, key=lambda r: r.key[2] or 0)
    return ref.cells[col]


def _add_deltas(rows: list[Row], columns: list[Column]) -> None:
    for row in rows:
        for col, cell in row.cells.items():
            if cell.mean is None:
                continue
            for method, name in REFERENCE_METHODS.items():
                if row.method.lower() == method:
                    continue
                ref = _reference(rows, row, col, method)
                if ref is not None:
                    cell.deltas[name] = cell.mean - ref.mean
