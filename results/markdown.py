"""The Markdown report: main table, published numbers, unfinished runs, warnings.

Main table: one row per backbone, one column per (task, protocol, dataset, metric); a cell
reads ``84.10 ± 0.50 (n=3) [Δ +0.50 vs MAE]``: the mean and the half-width of its 95% confidence interval. Published numbers follow in their own rows,
labelled ``published: ...``, in the columns that match a run's task, protocol, dataset and
metric. Nothing becomes a zero: ``—`` means no run, ``missing`` a run without a value,
``partial: x @ iter k`` an unfinished run's last evaluation (not in the mean).
"""

from __future__ import annotations

from droppos.results.aggregate import Cell, Table
from droppos.results.published import Published, comparability

LEGEND = (
    "Cells: mean ± half-width of its 95% confidence interval (t-distribution on the n seeds, n − 1 degrees of "
    "freedom; shown when n >= 2; 'n=3 pretrainings': three pretraining seeds, each value the mean of its "
    "downstream seeds). "
    "† recovered from the engine's own log (no metrics.json). "
    "Δ: difference of means against a reference row (a spec's `reference:`, `--reference`); "
    "'tie' when Welch's 95% interval of the difference (unequal variances) contains 0; with one seed on "
    "either side there is no interval and nothing is ranked. "
    "— not run; missing: run folder without this value; partial: last evaluation of an unfinished run "
    "(not in the mean). Rows marked *published* are numbers from the literature, not runs."
)


def fmt(v: float | None, scale: float | None = None) -> str:
    """Two decimals for values (or a ``scale``) of 1 and more, three below (distances, cosines)."""
    if v is None:
        return ""
    s = abs(v if scale is None else scale)
    return f"{v:.2f}" if s >= 1 or s == 0 else f"{v:.3f}"


def _signed(v: float, scale: float) -> str:
    return ("+" if v >= 0 else "−") + fmt(abs(v), scale)


def cell_text(cell: Cell | None) -> str:
    """The text of one table cell (see the module docstring)."""
    if cell is None:
        return "—"
    if cell.values:
        s = fmt(cell.mean)
        if cell.ci95 is not None:
            s += f" ± {fmt(cell.ci95, cell.mean)}"
        if cell.n > 1:
            s += f" (n={cell.n}{' pretrainings' if cell.over == 'pretrainings' else ''})"
        if cell.recovered:
            s += "†"
        if cell.deltas:
            s += " [Δ " + ", ".join(f"{_signed(d, cell.mean)} vs {name}" + (" tie" if cell.ties.get(name) else "")
                                     for name, d in cell.deltas.items()) + "]"
    elif cell.partial:
        v, progress = cell.partial[-1]
        s = f"partial: {fmt(v)}" + (f" @ {progress}" if progress else "")
    elif cell.other:
        s = ", ".join(sorted(cell.other))
    else:
        s = "missing"
    extra = []
    if cell.values or cell.partial:  # name what the shown value leaves out
        n_partial = len(cell.partial) - (0 if cell.values else 1)
        if n_partial:
            extra.append(f"+{n_partial} partial")
        if cell.missing:
            extra.append(f"+{cell.missing} missing")
        extra += [f"+{count} {status}" for status, count in sorted(cell.other.items())]
    return s + (f" ({', '.join(extra)})" if extra else "")


def _esc(s: str) -> str:
    return s.replace("|", "\\|")


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(_esc(c) for c in cells) + " |"


def main_table(table: Table, published: list[Published]) -> str:
    """The backbone x task/metric table, then the published rows for the same columns."""
    if not table.columns:
        return "_No results: no run with a table metric was found._\n"
    costs = any(row.cost for row in table.rows)
    extra = ["params (M)", "GFLOPs (task@px)", "run time (min)", "peak memory (GiB)"] if costs else []
    lines = [_row(["backbone"] + [c.label for c in table.columns] + extra),
             _row(["---"] * (len(table.columns) + 1 + len(extra)))]
    for row in table.rows:
        lines.append(_row([row.label] + [cell_text(row.cells.get(c)) for c in table.columns]
                          + (cost_cells(row.cost) if costs else [])))
    groups: dict[tuple, dict] = {}
    for p in published:
        if p.column in table.columns:
            groups.setdefault((p.key, p.source), {})[p.column] = p
    for (key, source), by_col in groups.items():
        label = next(iter(by_col.values())).label
        lines.append(_row([f"*{label}*"] + [f"*{by_col[c].text}*" if c in by_col else "" for c in table.columns]))
    return "\n".join(lines) + "\n"


def cost_cells(cost: dict) -> list[str]:
    """The cost columns of a row: parameters, GFLOPs per task and input size, summed run time, peak memory."""
    flops = ", ".join(f"{k} {v:.3g}" for k, v in sorted(cost.get("GFLOPs", {}).items()))
    return [f"{cost['params_M']:.2f}" if cost.get("params_M") is not None else "—", flops or "—",
            f"{cost['wall_s'] / 60:.1f}" if cost.get("wall_s") is not None else "—",
            f"{cost['peak_rss_gib']:.2f}" if cost.get("peak_rss_gib") is not None else "—"]


def published_table(table: Table, published: list[Published]) -> str:
    lines = [_row(["backbone", "task", "dataset", "metric", "value", "schedule", "source", "with these runs"]),
             _row(["---"] * 8)]
    for p in published:
        lines.append(_row([p.label.removeprefix("published: ").rsplit(" [", 1)[0], f"{p.column.task} {p.column.protocol}",
                           p.column.dataset, p.column.metric, p.text, p.schedule,
                           f"[{p.source}]({p.reference})" if p.reference else p.source, comparability(p, table)]))
    return "\n".join(lines) + "\n"


def attention_list(table: Table) -> str:
    """Every run not read from a finished metrics.json (recovered, partial, missing, failed)."""
    lines = []
    for run in sorted(table.runs, key=lambda r: str(r.path)):
        if run.status == "finished":
            continue
        what = f"{run.task}/{run.protocol}/{run.dataset}"
        details = ", ".join(x for x in (run.progress, f"from {run.source}", run.note) if x)
        seed = "?" if run.seed is None else run.seed
        lines.append(f"- **{run.status}** {run.path} ({what}, seed {seed}; {details})")
    return "\n".join(lines) + "\n" if lines else "All runs finished.\n"


def comparisons(table: Table) -> str:
    """One sentence per backbone, reference and column, by the rule of the legend: above or below when
    Welch's 95% interval of the difference excludes 0, a tie when it contains 0, not ranked when a side
    has one seed. The README's sentences about a ranking are these."""
    lines = []
    for col in table.columns:
        for row in table.rows:
            cell = row.cells.get(col)
            if cell is None:
                continue
            for name, d in cell.deltas.items():
                ref = next(r for r in table.rows if r.key == name).cells[col]
                what = f"{row.label} vs {name}, {col.label}: {_signed(d, cell.mean)}"
                if name not in cell.ties:
                    lines.append(f"- {what}; not ranked (n={cell.n} vs n={ref.n}: one seed gives no interval)")
                    continue
                lo, hi = cell.intervals[name]
                interval = f"Welch 95% interval [{_signed(lo, cell.mean)}, {_signed(hi, cell.mean)}]"
                verdict = "tie" if cell.ties[name] else "above" if d > 0 else "below"
                lines.append(f"- {what}; {verdict}: {interval} {'contains' if cell.ties[name] else 'excludes'} 0 "
                             f"(n={cell.n} vs n={ref.n})")
    return "\n".join(lines) + "\n" if lines else "_No reference rows: no differences to state._\n"


def render(table: Table, published: list[Published], warnings: list[str]) -> str:
    """The whole ``results.md``."""
    n = len(table.runs)
    counts: dict[str, int] = {}
    for r in table.runs:
        counts[r.status] = counts.get(r.status, 0) + 1
    summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    parts = ["# DropPos Bench results\n", f"{n} runs ({summary}).\n", main_table(table, published), LEGEND + "\n"]
    if any(cell.deltas for row in table.rows for cell in row.cells.values()):
        parts += ["## Differences against the references\n", comparisons(table)]
    if published:
        parts += ["## Published reference numbers\n", published_table(table, published)]
    parts += ["## Runs to check (not a finished metrics.json)\n", attention_list(table)]
    if warnings:
        parts += ["## Warnings\n", "\n".join(f"- {w}" for w in warnings) + "\n"]
    return "\n".join(parts)
