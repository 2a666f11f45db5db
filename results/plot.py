"""``results.png``: one panel per table column, one bar per backbone, published numbers as markers.

Bars are means with error bars of the mean's 95% confidence interval (t on the seeds) (hatched when recovered from an engine log); the
colour of a backbone is the same in every panel. An unfinished run's last evaluation is a
dashed outline marked ``partial``; a run with no value has its status written in its slot
(``missing``, ``failed``) instead of a zero bar. Published numbers of the same column are black stars
on slots of their own, labelled under the axis. matplotlib (the ``results`` extra) is imported
here only, with the Agg backend.
"""

from __future__ import annotations

import math
from pathlib import Path

from droppos.results.aggregate import Table
from droppos.results.published import Published


def write_png(table: Table, published: list[Published], path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    cols = table.columns
    n = max(len(cols), 1)
    ncols = min(n, 4)
    nrows = math.ceil(n / ncols)
    legend_rows = math.ceil((len(table.rows) + 3) / 4)
    height = 3.2 * nrows + 0.3 * legend_rows + 0.2
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, height), squeeze=False)
    colours = plt.get_cmap("tab10")
    colour = {row.key: colours(i % 10) for i, row in enumerate(table.rows)}
    for ax in axes.flat[n:]:
        ax.set_axis_off()
    if not cols:
        axes[0][0].set_axis_off()
        axes[0][0].text(0.5, 0.5, "no results", ha="center", va="center")
    for ax, col in zip(axes.flat, cols):
        rows = [r for r in table.rows if col in r.cells]
        for x, row in enumerate(rows):
            cell = row.cells[col]
            if cell.mean is not None:
                ax.bar(x, cell.mean, yerr=cell.ci95, color=colour[row.key], capsize=3,
                       hatch="//" if cell.recovered else None, edgecolor="black", linewidth=0.5)
            elif cell.partial:  # outline only: an unfinished run's last evaluation, not a result
                ax.bar(x, cell.partial[-1][0], fill=False, edgecolor=colour[row.key], linestyle="--", linewidth=1.2)
                ax.text(x, 0, "partial", rotation=90, ha="center", va="bottom", fontsize=8, color="dimgray")
            else:
                ax.text(x, 0, cell.status, rotation=90, ha="center", va="bottom", fontsize=8, color="dimgray")
        pubs = [p for p in published if p.column == col]
        for k, p in enumerate(pubs):
            ax.plot(len(rows) + k, p.value, marker="*", markersize=12, color="black", linestyle="none")
        ticks = list(range(len(rows), len(rows) + len(pubs)))
        ax.set_xticks(ticks, [f"{p.method} {p.arch} {p.pretrain_epochs or ''}ep" for p in pubs],
                      fontsize=6, rotation=60, ha="right")
        ax.set_xlim(-0.7, len(rows) + len(pubs) - 0.3)
        ax.set_title(f"{col.task} {col.protocol}\n{col.dataset} · {col.metric}", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colour[r.key]) for r in table.rows]
    labels = [r.label for r in table.rows]
    if published:
        handles.append(plt.Line2D([], [], marker="*", color="black", linestyle="none", markersize=10))
        labels.append("published (literature)")
    if any(c.recovered for r in table.rows for c in r.cells.values()):
        handles.append(plt.Rectangle((0, 0), 1, 1, fill=False, hatch="//"))
        labels.append("recovered from engine log")
    if any(c.partial and not c.values for r in table.rows for c in r.cells.values()):
        handles.append(plt.Rectangle((0, 0), 1, 1, fill=False, linestyle="--"))
        labels.append("partial (unfinished, not counted)")
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, (0.3 * legend_rows + 0.1) / height, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
