"""Group runs into a backbone x (task, protocol, dataset, metric) table with mean +- std.

Rows are backbones keyed by their name (the backbone record's ``id``: ``--name``, a bench spec's
backbone key); two runs that give one name to different backbones (another method, architecture,
pretraining epochs or source hash) are an error naming both runs, never a merged or dropped row.
Columns are (task, protocol, dataset, metric). A cell pools the runs of one row and column group
over seeds: ``finished`` and ``recovered`` values give mean and sample std (n - 1), ``partial``,
``missing`` and other statuses are kept beside them so that the table can say so.

Deltas: only against the rows named as references (a bench spec's ``reference:``, ``droppos
results --reference NAME``): each cell's mean minus the reference row's mean in the same column.
No reference is guessed from a method label.

Statistics: a cell's mean has its 95% confidence interval from the t-distribution on its seeds
(n - 1 degrees of freedom); a difference against a reference has Welch's 95% interval (unequal
variances, Welch-Satterthwaite degrees of freedom). The difference is a tie when that interval
contains 0; with one seed on either side there is no interval and nothing is ranked.

Pretraining seeds: rows named ``NAME@pt<k>`` (a bench spec's ``pretrain_seeds``: one pretraining per
seed, each with its downstream runs) are pooled into row ``NAME``. Its cells hold one value per
pretraining, the mean over that pretraining's downstream seeds, so n counts pretrainings (the
variation that matters for comparing pretraining methods) and the intervals above are over them.
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from droppos.results.records import RunResult

from droppos.errors import UserError
from droppos.runs.records import TASKS

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
    deltas: dict[str, float] = field(default_factory=dict)  # reference name -> mean - reference mean
    ties: dict[str, bool] = field(default_factory=dict)  # reference name -> Welch's interval contains 0
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)  # reference name -> Welch's 95% interval
    over: str = "seeds"  # what the values are over: downstream "seeds", or "pretrainings" (each one's mean)

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
    def ci95(self) -> float | None:
        """Half-width of the mean's 95% confidence interval, t-distribution on the seeds; None with one seed."""
        if self.n < 2:
            return None
        from scipy.stats import t

        return float(t.ppf(0.975, self.n - 1)) * self.std / math.sqrt(self.n)

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
        return {"mean": self.mean, "std": self.std, "ci95": self.ci95, "n": self.n, "values": self.values,
                "seeds": self.seeds, "over": self.over, "ties": self.ties,
                "intervals": {k: list(v) for k, v in self.intervals.items()},
                "status": self.status, "recovered": self.recovered, "partial": [list(p) for p in self.partial],
                "missing": self.missing, "other": self.other, "deltas": self.deltas, "runs": self.paths}


@dataclass
class Row:
    key: str  # the backbone's name
    record: dict  # the backbone record of its first run (method, arch, epochs, source, sha256)
    first: str = ""  # the run folder the record came from (named when another run contradicts it)
    cells: dict[Column, Cell] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.key

    @property
    def method(self) -> str:
        return str(self.record.get("method") or "unknown")

    @property
    def arch(self) -> str:
        return str(self.record.get("arch") or "unknown")

    @property
    def epochs(self) -> int | None:
        return self.record.get("epochs")

    cost: dict = field(default_factory=dict)  # params_M, GFLOPs by "task@HxW", wall_s (sum), peak_rss_gib (max)

    @property
    def ids(self) -> list[str]:
        return [self.key]

    def add_cost(self, run: RunResult) -> None:
        c = run.cost
        if not c:
            return
        if c.get("params_M") is not None:
            self.cost.setdefault("params_M", c["params_M"])
        if c.get("GFLOPs") is not None and c.get("input"):
            size = "x".join(map(str, c["input"])) if c["input"][0] != c["input"][1] else str(c["input"][0])
            self.cost.setdefault("GFLOPs", {})[f"{TASK_SHORT.get(run.task, run.task)}@{size}"] = c["GFLOPs"]
        if c.get("wall_s") is not None:
            self.cost["wall_s"] = self.cost.get("wall_s", 0.0) + float(c["wall_s"])
        if c.get("peak_rss_gib") is not None:
            self.cost["peak_rss_gib"] = max(self.cost.get("peak_rss_gib", 0.0), float(c["peak_rss_gib"]))


@dataclass
class Table:
    columns: list[Column]
    rows: list[Row]
    runs: list[RunResult]
    warnings: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)  # names of the rows the deltas are taken against


def headline_metrics(task: str, protocol: str) -> tuple[str, ...] | None:
    """The main-table metrics of a task/protocol; None when every metric is shown."""
    for key in ((task, protocol), task):
        if key in HEADLINE:
            return HEADLINE[key]
    return None


def _dedupe(runs: list[RunResult], warnings: list[str]) -> list[RunResult]:
    """One run per (backbone, task, seed): the most finished, then the newest folder."""
    rank = {"finished": 0, "recovered": 1, "partial": 2}
    best: dict[tuple, RunResult] = {}
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
            warnings.append(f"duplicate run for {k[0]} {'/'.join(k[1])} seed {k[2]}: "
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


def _row_sort(row: Row):
    m = row.method.lower()
    return (METHOD_ORDER.index(m) if m in METHOD_ORDER else len(METHOD_ORDER), m, row.arch, row.epochs or 0, row.key)


def _col_sort(col: Column):
    t = TASKS.index(col.task) if col.task in TASKS else len(TASKS)
    head = headline_metrics(col.task, col.protocol) or ()
    m = head.index(col.metric) if col.metric in head else len(head)
    return (t, col.task, col.protocol, col.dataset, m, col.metric)


def _columns_of(run: RunResult, all_metrics: bool) -> list[str]:
    """Metric columns a run fills; '?' when a run without numbers has no known metric names."""
    head = headline_metrics(run.task, run.protocol)
    if head == () and not all_metrics:
        return []  # hidden task (pretraining): listed in the run summary only
    names = (sorted(run.metrics) or list(head or ())) if all_metrics or head is None else list(head)
    return names or ["?"]


def aggregate(runs: list[RunResult], all_metrics: bool = False, references: list[str] | tuple = ()) -> Table:
    """Build the table; ``all_metrics`` adds every metric (and pretraining) as a column; deltas are
    taken against the rows named in ``references`` (none by default)."""
    warnings: list[str] = []
    runs = _dedupe(_split_datasets(runs, warnings), warnings)
    rows: dict[str, Row] = {}
    for run in sorted(runs, key=lambda r: str(r.path)):
        row = rows.get(run.backbone_key)
        if row is None:
            row = rows[run.backbone_key] = Row(run.backbone_key, dict(run.backbone), str(run.path))
        elif not _same_backbone(row.record, run.backbone):
            raise UserError(f"backbone name {row.key!r} is given to two different backbones: {row.first} "
                            f"({_describe(row.record)}) and {run.path} ({_describe(run.backbone)}); "
                            "give them different --name (or spec backbone keys)")
        row.add_cost(run)
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
    rows = _pool_pretrainings(rows)
    columns = sorted({c for r in rows.values() for c in r.cells}, key=_col_sort)
    ordered = sorted(rows.values(), key=_row_sort)
    unknown = [r for r in references if r not in rows]
    if unknown:
        warnings.append(f"reference row(s) {unknown} not found among the backbones {sorted(rows)}; no deltas for them")
    refs = [r for r in references if r in rows]
    _add_deltas(ordered, refs, rows)
    return Table(columns, ordered, runs, warnings, refs)


PRETRAINING = re.compile(r"^(?P<name>.+)@pt(?P<seed>\d+)$")  # droppos.bench.spec.PRETRAIN_SEED_MARK


def _pool_pretrainings(rows: dict[str, Row]) -> dict[str, Row]:
    """Rows ``NAME@pt<k>`` -> row ``NAME``: per column, one value per pretraining (the mean of its counted
    downstream values) with ``seeds`` = the pretraining seeds; other statuses and paths are carried over."""
    families: dict[str, list[tuple[int, Row]]] = {}
    out: dict[str, Row] = {}
    for key, row in rows.items():
        m = PRETRAINING.match(key)
        if m:
            families.setdefault(m["name"], []).append((int(m["seed"]), row))
        else:
            out[key] = row
    for name, members in families.items():
        members.sort(key=lambda x: x[0])
        first = members[0][1]
        if name in out:
            raise UserError(f"backbone name {name!r} is both a row of its own ({out[name].first}) and the pretrainings "
                            f"{', '.join(r.key for _, r in members)}: rename one")
        for _, row in members[1:]:
            unhashed = [{k: v for k, v in r.record.items() if k != "sha256"} for r in (first, row)]
            if not _same_backbone(*unhashed):
                raise UserError(f"{first.key} and {row.key} are pretrainings of one backbone {name!r} but differ: "
                                f"{_describe(first.record)} vs {_describe(row.record)}")
        record = {k: v for k, v in first.record.items() if k not in ("sha256", "source")}
        pooled = Row(name, {**record, "id": name, "pretrain_seeds": [s for s, _ in members]}, first.first)
        for seed, row in members:
            for k, v in row.cost.items():
                if k == "wall_s":
                    pooled.cost[k] = pooled.cost.get(k, 0.0) + v
                elif k == "peak_rss_gib":
                    pooled.cost[k] = max(pooled.cost.get(k, 0.0), v)
                else:
                    pooled.cost.setdefault(k, v)
            for col, cell in row.cells.items():
                p = pooled.cells.setdefault(col, Cell(over="pretrainings"))
                if cell.values:
                    p.values.append(cell.mean)
                    p.seeds.append(seed)
                    p.recovered += cell.recovered == cell.n
                p.partial += cell.partial
                p.missing += cell.missing
                p.paths += cell.paths
                for status, n in cell.other.items():
                    p.other[status] = p.other.get(status, 0) + n
        out[name] = pooled
    return out


def _split_datasets(runs: list[RunResult], warnings: list[str]) -> list[RunResult]:
    """Runs on two data sets of one name (other build options: other ``data_id``) go to two columns,
    ``name@<id>``, never one cell: they are not seeds of one experiment."""
    import dataclasses

    ids: dict[str, set] = {}
    for r in runs:
        ids.setdefault(r.dataset, set()).add(r.data_id)
    split = {name for name, found in ids.items() if len(found - {None}) > 1}
    for name in sorted(split):
        warnings.append(f"data set {name!r} names {len(ids[name] - {None})} different builds "
                        f"({', '.join(sorted(i for i in ids[name] if i))}): shown as separate columns")
    return [dataclasses.replace(r, dataset=f"{r.dataset}@{r.data_id[:6]}") if r.dataset in split and r.data_id else r
            for r in runs]


def _same_backbone(a: dict, b: dict) -> bool:
    """Two records are one backbone when method, arch and epochs agree, and the source hashes when both have one."""
    from droppos.results.records import _epochs

    def ident(r):
        return str(r.get("method") or "unknown"), str(r.get("arch") or "unknown"), _epochs(r.get("epochs"))

    return ident(a) == ident(b) and not (a.get("sha256") and b.get("sha256") and a["sha256"] != b["sha256"])


def _describe(record: dict) -> str:
    return ", ".join(f"{k} {record.get(k)}" for k in ("method", "arch", "epochs", "source") if record.get(k) is not None)


def _add_deltas(rows: list[Row], references: list[str], by_name: dict[str, Row]) -> None:
    for row in rows:
        for col, cell in row.cells.items():
            if cell.mean is None:
                continue
            for name in references:
                ref = by_name[name].cells.get(col)
                if name != row.key and ref is not None and ref.mean is not None:
                    cell.deltas[name] = cell.mean - ref.mean
                    interval = welch_interval(cell, ref)
                    if interval is not None:  # seeds on both sides
                        cell.intervals[name] = interval
                        cell.ties[name] = interval[0] <= 0.0 <= interval[1]


def welch_interval(a: Cell, b: Cell) -> tuple[float, float] | None:
    """Welch's 95% interval of mean(a) - mean(b) (unequal variances); None unless both have two seeds or more.

    Two cells without spread (every seed the same value) give the point interval [d, d]."""
    if a.n < 2 or b.n < 2:
        return None
    from scipy.stats import t

    va, vb = a.std ** 2 / a.n, b.std ** 2 / b.n
    d = a.mean - b.mean
    if va + vb == 0.0:
        return (d, d)
    dof = (va + vb) ** 2 / (va ** 2 / (a.n - 1) + vb ** 2 / (b.n - 1))
    half = float(t.ppf(0.975, dof)) * math.sqrt(va + vb)
    return (d - half, d + half)
