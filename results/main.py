"""``droppos results RUNS... --out DIR [--published FILE]``: aggregate run folders.

Walks every RUNS folder for run outputs (our ``metrics.json``, else the engines' own logs),
groups them by backbone and task, and writes into DIR:

* ``results.md``   - the Markdown table (printed too), published numbers, unfinished runs;
* ``results.csv``  - long format, every metric, one line per backbone x column;
* ``results.json`` - the same plus every run and every warning;
* ``results.png``  - bars per task column, one colour per backbone, published numbers as stars.

Malformed files are named in warnings (stderr) and skipped; unfinished runs are shown as such.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUNS", help="run folders (searched recursively) or metrics.json files")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for results.md/.csv/.json/.png")
    parser.add_argument("--published", default=None, metavar="FILE",
                        help="published-numbers CSV (default: the one shipped in droppos/results/published.csv; "
                             "'none' for no published rows)")
    parser.add_argument("--all-metrics", action="store_true",
                        help="put every metric (and pretraining) in the Markdown table and figure, not only the headline ones")
    parser.add_argument("--no-plot", action="store_true", help="do not write results.png")
    parser.add_argument("--reference", nargs="+", default=[], metavar="NAME",
                        help="backbone names (rows) the delta columns are taken against, e.g. mae supervised "
                             "(default: none; a bench passes its spec's 'reference:')")


def run(args: argparse.Namespace) -> int:
    from droppos.results.aggregate import aggregate
    from droppos.results.discover import discover
    from droppos.results.export import write_csv, write_json
    from droppos.results.markdown import LEGEND, main_table, render
    from droppos.results.published import DEFAULT_FILE, load_published

    try:
        found = discover(args.runs)
        no_published = args.published is not None and args.published.lower() == "none"
        published = [] if no_published else load_published(args.published or DEFAULT_FILE)
    except (FileNotFoundError, ValueError) as e:
        print(f"droppos results: {e}", file=sys.stderr)
        return 2
    if not found.runs:
        for w in found.warnings:
            print(f"warning: {w}", file=sys.stderr)
        print(f"droppos results: no runs found under {' '.join(map(str, args.runs))} "
              "(expected folders holding metrics.json, run.json or engine logs)", file=sys.stderr)
        return 1

    shown = aggregate(found.runs, all_metrics=args.all_metrics, references=args.reference)
    full = aggregate(found.runs, all_metrics=True, references=args.reference)
    warnings = found.warnings + shown.warnings
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)

    from droppos.utils.files import output_folder

    out = output_folder(args.out, "--out")
    (out / "results.md").write_text(render(shown, published, warnings))
    write_csv(full, published, out / "results.csv")
    write_json(full, published, warnings, out / "results.json")
    written = ["results.md", "results.csv", "results.json"]
    if not args.no_plot:
        try:
            from droppos.results.plot import write_png

            write_png(shown, published, out / "results.png")
            written.append("results.png")
        except ImportError as e:
            print(f"warning: results.png not written: {e} (pip install 'droppos-bench[results]')", file=sys.stderr)
    print(main_table(shown, published))
    print(LEGEND)
    print(f"\nwrote {', '.join(str(out / w) for w in written)}")
    return 0
