"""Mutation testing of the modules in tests/mutation/modules.toml with cosmic-ray, on a copy of the checkout.

    python tests/mutation/run.py [NAME ...] [--out DIR] [--workers N]

The working tree's files (tracked and untracked, not ignored) are copied to DIR/checkout, where the
``droppos`` namespace is laid out as installed (``droppos/pretrain`` -> ``pretrain/``, ...) and put first on
``PYTHONPATH``: cosmic-ray mutates the copy in place, one mutant at a time, and runs the module's tests there
(``pytest -x``, in its own ``--basetemp``: a test suite running beside it keeps its folders; a mutant is
killed when they fail). Prints one row per module (mutants, killed, survived,
timeouts, the score with the equivalent mutants of tests/mutation/equivalent.toml left out) and writes the
survivors to ``DIR/survivors-NAME.txt`` (default DIR: ./mutation-report, which also holds the copy and
cosmic-ray's session files: ``--resume`` goes on where a run was stopped). A module's ``path`` is a file or a
folder (every ``.py`` file under it). With ``--workers N`` the mutants are shared by N cosmic-ray HTTP workers,
each mutating its own copy (``DIR/checkout``, ``DIR/checkout-w1``, ...): cosmic-ray's ``http`` distributor.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
NAMESPACE = ("pretrain", "tools", "transfer", "results")  # pyproject's package-dir: droppos.<x> is <x>/


def copy_checkout(dst: Path) -> None:
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            check=True, capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = REPO / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    for ext in REPO.glob("pretrain/_jpeg_window*.so"):  # the built window decoder (ignored by git)
        shutil.copy2(ext, dst / "pretrain" / ext.name)
    for name in NAMESPACE:
        link = dst / "droppos" / name
        if not link.is_symlink():
            link.symlink_to(Path("..") / name)


def annotation_spans(source: str) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """(start, end) positions, (line 1-based, column 0-based) as cosmic-ray's, of every annotation of a module
    that has ``from __future__ import annotations``: never evaluated (PEP 563), so a mutant inside one is
    equivalent by construction. Empty for a module without that import (its annotations are evaluated)."""
    tree = ast.parse(source)
    future = any(isinstance(n, ast.ImportFrom) and n.module == "__future__" and
                 any(a.name == "annotations" for a in n.names) for n in tree.body)
    if not future:
        return []
    nodes = []
    for node in ast.walk(tree):
        if isinstance(node, ast.arg) and node.annotation is not None:
            nodes.append(node.annotation)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns is not None:
            nodes.append(node.returns)
        elif isinstance(node, ast.AnnAssign):
            nodes.append(node.annotation)
    return [((n.lineno, n.col_offset), (n.end_lineno, n.end_col_offset)) for n in nodes]


def skip_annotation_mutants(db: Path, root: Path) -> int:
    """Mark the mutants that lie inside an annotation as skipped (those already run too: a run from before this
    rule); returns how many. ``root`` is the copy the mutants' module paths are relative to."""
    from cosmic_ray.work_db import use_db
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    spans: dict[Path, list] = {}
    skipped = 0
    with use_db(str(db)) as work_db:
        for item in work_db.work_items:
            inside = []
            for m in item.mutations:
                path = Path(m.module_path)
                if path not in spans:
                    spans[path] = annotation_spans((root / path).read_text())
                inside.append(any(a <= tuple(m.start_pos) and tuple(m.end_pos) <= b for a, b in spans[path]))
            if all(inside):
                work_db.set_result(item.job_id, WorkResult(worker_outcome=WorkerOutcome.SKIPPED))
                skipped += 1
    return skipped


def equivalents(name: str) -> set[str]:
    """The keys ``FILE OPERATOR OCCURRENCE`` of the module's listed equivalent mutants (``file`` is needed only
    where the module is a folder; without it the key is ``OPERATOR OCCURRENCE``)."""
    data = tomllib.loads((HERE / "equivalent.toml").read_text()) if (HERE / "equivalent.toml").is_file() else {}
    return {" ".join(filter(None, (e.get("file"), e["operator"], str(e["occurrence"])))) for e in data.get(name, [])}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_workers(copies: list[Path], cr: list[str]) -> tuple[list[subprocess.Popen], list[str]]:
    """One cosmic-ray HTTP worker per copy (it mutates and tests in its own folder); waits until each listens."""
    procs, urls = [], []
    for copy in copies:
        (copy / ".mutation").mkdir(exist_ok=True)  # the tests' --basetemp lives there
        port = free_port()
        env = {**os.environ, "PYTHONPATH": str(copy), "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
        procs.append(subprocess.Popen([*cr, "http-worker", "--port", str(port)], cwd=copy, env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        urls.append(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if procs[-1].poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"cosmic-ray http-worker in {copy} did not start")
                time.sleep(0.5)
    return procs, urls


def run_module(mod: dict, copies: list[Path], out: Path, timeout: float, fresh: bool = True) -> dict:
    copy = copies[0]
    work = copy / ".mutation"
    work.mkdir(exist_ok=True)
    config, db = work / f"{mod['name']}.toml", work / f"{mod['name']}.sqlite"
    tests = " ".join(mod["tests"])
    env = {**os.environ, "PYTHONPATH": str(copy), "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    cr = [sys.executable, "-m", "cosmic_ray.cli"]
    workers, urls = start_workers(copies, cr) if len(copies) > 1 else ([], [])
    distributor = f'name = "http"\n\n[cosmic-ray.distributor.http]\nworker-urls = {urls}' if urls else 'name = "local"'
    # each test run keeps its folders under its own copy (the command runs in the worker's folder)
    config.write_text(f"""[cosmic-ray]
module-path = "{mod['path']}"
timeout = {timeout}
excluded-modules = []
test-command = "{sys.executable} -m pytest -x -q -p no:cacheprovider --basetemp .mutation/tmp {tests}"

[cosmic-ray.distributor]
{distributor}
""")
    try:
        if fresh or not db.is_file():
            db.unlink(missing_ok=True)
            subprocess.run([*cr, "init", str(config), str(db)], cwd=copy, env=env, check=True)
        skip_annotation_mutants(db, copy)
        base = subprocess.run([*cr, "baseline", str(config)], cwd=copy, env=env, capture_output=True, text=True)
        if base.returncode != 0:
            raise SystemExit(f"{mod['name']}: its tests fail on the unmutated copy:\n{base.stdout[-2000:]}{base.stderr[-2000:]}")
        subprocess.run([*cr, "exec", str(config), str(db)], cwd=copy, env=env, check=True)
    finally:
        for w in workers:
            w.terminate()
            w.wait()
    report = subprocess.run([sys.executable, "-m", "cosmic_ray.tools.report", "--show-diff", str(db)], cwd=copy,
                            env=env, capture_output=True, text=True, check=True).stdout
    return summarize(mod["name"], report, out, folder=(copy / mod["path"]).is_dir())


JOB = re.compile(r"^\[job-id\] (\S+)\n(\S+) (\S+) (\d+)", re.M)


def summarize(name: str, report: str, out: Path, folder: bool = False) -> dict:
    """Counts from cr-report's text: one block per job, its outcome and diff."""
    blocks = re.split(r"(?m)^(?=\[job-id\] )", report)
    counts = {"mutants": 0, "killed": 0, "survived": 0, "timeout": 0, "equivalent": 0, "annotation": 0,
              "incompetent": 0}
    survivors = []
    equiv = equivalents(name)
    for block in blocks:
        m = JOB.match(block)
        if not m:
            continue
        counts["mutants"] += 1
        key = f"{m.group(2) + ' ' if folder else ''}{m.group(3)} {m.group(4)}"
        if "WorkerOutcome.SKIPPED" in block:
            counts["annotation"] += 1  # inside an annotation (never evaluated): equivalent by construction
        elif "WorkerOutcome.TIMEOUT" in block:
            counts["timeout"] += 1  # a mutant that makes the tests hang is caught: counted as killed
        elif "TestOutcome.SURVIVED" in block:
            if key in equiv:
                counts["equivalent"] += 1
            else:
                counts["survived"] += 1
                survivors.append(block.strip())
        elif "TestOutcome.INCOMPETENT" in block:
            counts["incompetent"] += 1
        else:
            counts["killed"] += 1
    scored = counts["mutants"] - counts["equivalent"] - counts["annotation"] - counts["incompetent"]
    counts["score"] = 100.0 * (counts["killed"] + counts["timeout"]) / scored if scored else 100.0
    out.mkdir(parents=True, exist_ok=True)
    (out / f"survivors-{name}.txt").write_text("\n\n".join(survivors) + ("\n" if survivors else ""))
    return counts


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", help="modules of modules.toml (default: all)")
    p.add_argument("--out", default="mutation-report", help="folder for the survivors' diffs")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per mutant's test run")
    p.add_argument("--workers", type=int, default=1,
                   help="mutants tested at once, each worker in its own copy (cosmic-ray's http distributor)")
    p.add_argument("--resume", action="store_true",
                   help="keep the session files in OUT/checkout and run only the mutants not yet run (the copy's "
                        "files are refreshed from this checkout; a mutant left in place by a stopped run is undone)")
    p.add_argument("--recheck-survivors", action="store_true",
                   help="with --resume: run the surviving mutants again (after adding tests)")
    args = p.parse_args(argv)
    modules = tomllib.loads((HERE / "modules.toml").read_text())["module"]
    unknown = set(args.names) - {m["name"] for m in modules}
    if unknown:
        p.error(f"unknown module(s) {sorted(unknown)}; modules.toml lists {[m['name'] for m in modules]}")
    chosen = [m for m in modules if not args.names or m["name"] in args.names]
    rows = []
    out = Path(args.out).resolve()
    if args.workers < 1:
        p.error("--workers must be at least 1")
    copies = [out / "checkout"] + [out / f"checkout-w{i}" for i in range(1, args.workers)]
    for i, copy in enumerate(copies):
        if not (args.resume and i == 0 and copy.is_dir()):  # the first copy holds the session files
            shutil.rmtree(copy, ignore_errors=True)
            copy.mkdir(parents=True)
        copy_checkout(copy)
    for mod in chosen:
        db = copies[0] / ".mutation" / f"{mod['name']}.sqlite"
        if args.resume and args.recheck_survivors and db.is_file():
            import sqlite3

            with sqlite3.connect(db) as con:
                con.execute("DELETE FROM work_results WHERE test_outcome = 'SURVIVED'")
        rows.append((mod, run_module(mod, copies, out, args.timeout, fresh=not args.resume)))
        print(f"done: {row(*rows[-1])}", flush=True)  # each module as it ends (a long run may be stopped)
    print_table(rows)
    low = [m["name"] for m, c in rows if c["score"] < 90.0]
    return 1 if low else 0


def print_table(rows) -> None:
    print("| module | file | mutants | in annotations | killed | timeouts | survived | equivalent | score |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for mod, c in rows:
        print(row(mod, c), flush=True)


def row(mod: dict, c: dict) -> str:
    return (f"| {mod['name']} | `{mod['path']}` | {c['mutants']} | {c['annotation']} | {c['killed']} | {c['timeout']} | "
            f"{c['survived']} | {c['equivalent']} | {c['score']:.1f}% |")


if __name__ == "__main__":
    sys.exit(main())
