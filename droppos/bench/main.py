"""``droppos bench [SPEC]``: plan and run a backbones x tasks x seeds benchmark, then tabulate it.

Examples::

    droppos bench smoke --dry-run            # the plan: runs, folders, status, command lines
    droppos bench smoke                      # everything, one run at a time, then the table
    droppos bench smoke --only 'droppos/*' 'mae/knn/*'  # some runs (and what they need)
    droppos bench my_spec.yaml --out runs/mine --jobs 2
    droppos bench paper --slurm --partition gpu --gpus-per-node 8 --nodes 1 --timeout 4320
    droppos bench paper --recipe-card        # every setting beside the published recipe it follows
    droppos bench paper --rehearse           # every run, a few iterations at full size, 2 CPU processes

SPEC is a spec file or the name of a shipped one (``droppos/bench/specs``: ``smoke``, the
default, ``paper`` and ``fair``); its format is documented in :mod:`droppos.bench.spec`. Runs go to
``OUT/<backbone>/<task>/seed<k>/`` (pretraining: ``OUT/<backbone>/pretrain/``), default OUT
``runs/bench/<spec name>``. Each run is the real command line in a subprocess
(``python -m droppos.cli ...``); finished runs are skipped, interrupted ones resumed, failed ones
recorded (``run.json``) without stopping the others. At the end ``droppos results OUT --out
OUT/results`` writes the Markdown/CSV/JSON table and the PNG figure. Exit status: 0 when every
run finished, 1 when some failed, 2 on a bad spec or option.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

SLURM_ONLY = ("nodes", "partition", "timeout", "cpus_per_task", "slurm_option", "slurm_cluster", "wait")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = __doc__
    parser.add_argument("spec", nargs="?", default="smoke",
                        help="spec file, or a shipped spec name (smoke, paper, fair); default: %(default)s")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: runs/bench/<spec name>)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan (runs, folders, status, commands); run nothing")
    parser.add_argument("--only", nargs="+", metavar="GLOB", default=None,
                        help="run only the runs whose id matches (e.g. 'mae/*', '*/knn/*'; a bare backbone name: all "
                             "its runs), plus the runs they need")
    parser.add_argument("-j", "--jobs", type=int, default=1,
                        help="runs at once on this machine (default: %(default)s); each gets cores/jobs threads "
                             "and, with GPUs, its own GPU")
    parser.add_argument("--gpus-per-node", type=int, default=None,
                        help="processes (GPUs) per run: torchrun locally (detectron2 --num-gpus for detect; probes "
                             "and dataset builds stay one process); with --slurm, GPUs per node of each job (default: 1)")
    parser.add_argument("--no-results", action="store_true", help="do not run the aggregator at the end")
    parser.add_argument("--list", action="store_true", help="list the shipped specs and exit")
    parser.add_argument("--recipe-card", action="store_true",
                        help="write OUT/recipe_card.md (+ .json): each run's settings beside the published recipe "
                             "it names, with sources; exit 1 when a field differs without a declared reason")
    r = parser.add_argument_group("rehearsal (droppos.bench.rehearse): every run for a few iterations, here")
    r.add_argument("--rehearse", action="store_true",
                   help="run every planned run for a few iterations at its real size and input on synthetic data in "
                        "the real layouts, through its launcher with --processes CPU processes: start, checkpoint, "
                        "SIGKILL, resume, evaluate; write OUT/rehearsal.md (default OUT: runs/rehearse/<spec name>)")
    r.add_argument("--processes", type=int, default=2, help="processes of each rehearsed run (default: %(default)s)")
    r.add_argument("--rehearse-budget", type=float, default=20.0, metavar="GIB",
                   help="memory of all processes of a run (default: %(default)s GiB; the machine's 24 less a margin)")
    r.add_argument("--gpu", choices=("A100", "H100", "H200", "V100"), default="A100",
                   help="the GPU the GPU-hour estimates are for (default: %(default)s)")
    r.add_argument("--mfu", type=float, default=0.4,
                   help="fraction of the GPU's bf16 peak assumed for the estimates (default: %(default)s)")
    g = parser.add_argument_group("SLURM (through submitit, pip install 'droppos-bench[cluster]')")
    g.add_argument("--slurm", action="store_true", help="submit every run as a SLURM job (datasets are built here first)")
    g.add_argument("--nodes", type=int, default=None, help="nodes per job (default: 1); torchrun spans them")
    g.add_argument("--partition", default=None, help="SLURM partition")
    g.add_argument("--timeout", type=int, default=None, metavar="MIN",
                   help="time limit of each job in minutes (default: 4320); a job that reaches it is requeued and resumes")
    g.add_argument("--cpus-per-task", type=int, default=None, help="CPUs per job and node (default: 8)")
    g.add_argument("--slurm-option", nargs="+", default=None, metavar="KEY=VALUE",
                   help="more #SBATCH options, e.g. account=proj qos=high constraint=a100")
    g.add_argument("--slurm-cluster", choices=("slurm", "local", "debug"), default=None,
                   help="submitit executor: slurm (default); 'local' runs the jobs as local processes, to try the path")
    g.add_argument("--wait", action="store_true", help="wait for the jobs, then tabulate (default: submit and return)")


def _check_args(args) -> str | None:
    if args.jobs < 1:
        return f"--jobs must be >= 1, got {args.jobs}"
    if args.gpus_per_node is not None and args.gpus_per_node < 0:
        return f"--gpus-per-node must be >= 0, got {args.gpus_per_node}"
    if not args.slurm:
        given = [n for n in SLURM_ONLY if getattr(args, n) not in (None, False)]
        if given:
            return f"{', '.join('--' + n.replace('_', '-') for n in given)} appl{'ies' if len(given) == 1 else 'y'} to --slurm only"
    elif args.jobs != 1:
        return "--jobs applies to local runs; with --slurm every run is its own job"
    if args.rehearse and (args.slurm or args.dry_run or args.recipe_card):
        return "--rehearse runs here: not with --slurm, --dry-run or --recipe-card"
    if args.processes < 1 or args.rehearse_budget <= 0 or not 0 < args.mfu <= 1:
        return "need --processes >= 1, --rehearse-budget > 0 and 0 < --mfu <= 1"
    if args.nodes is not None and args.nodes < 1:
        return f"--nodes must be >= 1, got {args.nodes}"
    return None


def _lock(out: Path) -> None:
    """``OUT/.bench.lock``, held by this process until it ends (the run folders' lock): a second bench on the
    same folder gets one line naming this one's pid."""
    from droppos.runs import lock
    from droppos.utils.files import output_folder

    output_folder(out, "--out")
    lock(out / ".bench.lock", what="bench")


def _aggregate(out: Path, reference: list[str]) -> int:
    """``droppos results OUT --out OUT/results``, in this process; its user error is its one line and exit code."""
    from droppos.errors import UserError, print_user_error
    from droppos.results import main as results

    args = [str(out), "--out", str(out / "results")] + (["--reference", *reference] if reference else [])
    print(f"\n$ droppos results {' '.join(args)}", flush=True)
    parser = argparse.ArgumentParser(prog="droppos results")
    results.add_arguments(parser)
    try:
        rc = int(results.run(parser.parse_args(args)) or 0)
    except UserError as e:
        print_user_error("results", e)
        rc = e.exit_code
    md, png = out / "results" / "results.md", out / "results" / "results.png"
    if md.is_file():
        print(f"table:  {md}")
    if png.is_file():
        print(f"figure: {png}")
    return rc


def run(args: argparse.Namespace) -> int:
    from .spec import SpecError, load_spec, resolve_spec_path, shipped_specs

    if args.list:
        for name, path in shipped_specs().items():
            print(f"{name:10s} {path}")
        return 0
    problem = _check_args(args)
    if problem:
        print(f"droppos bench: error: {problem}", file=sys.stderr)
        return 2
    try:
        spec = load_spec(resolve_spec_path(args.spec))
        from .plan import build_plan, select

        out = args.out or Path("runs") / ("rehearse" if args.rehearse else "bench") / spec.name
        runs = select(build_plan(spec, out), args.only)
    except SpecError as e:
        print(f"droppos bench: error: {e}", file=sys.stderr)
        return 2
    if not runs:
        print(f"droppos bench: error: --only {' '.join(args.only)} matches no run of {spec.file}; "
              "see the run ids with --dry-run", file=sys.stderr)
        return 2

    from .table import plan_table, write_plan_json

    if args.rehearse:
        from .rehearse import RehearsalOptions, rehearse

        _lock(out)
        return rehearse(spec, out, RehearsalOptions(processes=args.processes, budget_gib=args.rehearse_budget,
                                                    gpu=args.gpu, mfu=args.mfu), only=args.only)
    if args.recipe_card:
        from .card import write_card

        md, undeclared = write_card(spec, out)
        print(md.read_text(), end="")
        print(f"recipe card: {md}")
        return 1 if undeclared else 0
    print(f"spec {spec.file} -> {out}")
    if args.dry_run:
        print(plan_table(runs))
        print(f"then: droppos results {out} --out {out / 'results'}")
        return 0
    _lock(out)
    try:
        return _execute(args, spec, out, runs, write_plan_json)
    finally:
        from droppos.runs import unlock

        unlock(out / ".bench.lock")


def _execute(args, spec, out: Path, runs, write_plan_json) -> int:
    import shutil

    from .backbones import backbone_records
    from .commands import Launch

    if args.slurm:
        from .slurm import import_submitit

        import_submitit()  # a clear error before any work when submitit is missing
    procs = (args.gpus_per_node or 1) * (args.nodes or 1)
    from .checks import batch_problems

    problems = batch_problems(runs, procs)
    if problems:  # before anything starts or is submitted
        for line in problems:
            print(f"droppos bench: error: {line}", file=sys.stderr)
        return 2
    shutil.copyfile(spec.file, out / "spec.yaml")
    write_plan_json(runs, out / "plan.json", spec.file)
    if spec.gpus > 1 and procs != spec.gpus:
        print(f"warning: {spec.file.name} is written for {spec.gpus} processes, this launch has {procs}: "
              f"effective batches differ from its recipe card by x{procs / spec.gpus:g} "
              f"(use --gpus-per-node/--nodes, or scale the batches)", file=sys.stderr)
    used = {r.backbone for r in runs}
    records, warnings = backbone_records([b for b in spec.run_backbones() if b.name in used], out)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    if args.slurm:
        from .slurm import SlurmOptions, submit

        extra = {}
        for item in args.slurm_option or []:
            key, sep, value = item.partition("=")
            if not sep or not key:
                print(f"droppos bench: error: --slurm-option {item!r}: expected KEY=VALUE", file=sys.stderr)
                return 2
            extra[key] = value
        opts = SlurmOptions(nodes=args.nodes or 1, gpus_per_node=1 if args.gpus_per_node is None else args.gpus_per_node,
                            partition=args.partition, timeout_min=args.timeout or 4320,
                            cpus_per_task=args.cpus_per_task or 8, extra=extra, cluster=args.slurm_cluster or "slurm")
        bad = submit(runs, records, out, opts, wait=args.wait)
        if args.wait and not args.no_results:
            _aggregate(out, spec.reference)
        return 1 if bad else 0

    from .local import LocalExecutor, summarize

    executor = LocalExecutor(records, jobs=args.jobs, launch=Launch(gpus=args.gpus_per_node or 1))
    try:
        outcomes = executor.execute(runs)
    except KeyboardInterrupt:
        print("\ndroppos bench: interrupted; run the same command again to resume (finished runs are kept)",
              file=sys.stderr)
        return 130
    bad = summarize(runs, outcomes)
    if not args.no_results:
        _aggregate(out, spec.reference)
    return 1 if bad else 0
