"""``droppos bench SPEC --rehearse``: every planned run of a spec, for a few iterations, on this machine,
before a GPU hour is spent.

Each run of the plan starts through the same launcher as on the cluster (torchrun, detectron2's
machines, mmengine's ``--launcher pytorch``; probes in one process) with ``--processes`` CPU processes
(2 by default), at its real model size and input resolution, on data written in the real layouts by
``droppos data`` (an ImageFolder tree of 256-px images, COCO 2017 JSON with 1024-px scenes, ADE20K
scenes of 512 px) and, for a checkpoint this machine lacks, random weights in that release's layout
(:mod:`.synthetic`). It must start, take steps with a finite loss, write its first checkpoint, survive
a SIGKILL right after it and resume, evaluate, and write ``metrics.json``.

What changes from the real run, and only this: the schedule (two iterations or epochs of two
iterations), the batch per process (2, the smallest every engine accepts; detection 1 image per
process), the number of classes of the synthetic data (10: the classifier and detector heads are
smaller), and the number of processes. Where a run does not fit this machine's memory with its
processes at full size (a budget of ``--rehearse-budget`` GiB for all of them, 20 by default, below
the 24 GiB of the machine), the rehearsal measures one process on one batch at three smaller inputs,
extrapolates the full-size memory from them (a quadratic in the number of tokens: global attention),
and runs its check at the largest input that fits; the report says so and gives both figures.

The report (``OUT/rehearsal.md`` and ``.json``; one row per run): rehearsed, or failed with the one
line that says why; seconds per iteration here (from the engine's own log); the peak resident memory
of the largest process; and the estimated GPU-hours of the real run (:mod:`.estimate`: fvcore FLOPs
of the whole model at the real input x the images of the real schedule, at ``--mfu`` of the named
``--gpu``'s bf16 peak). Identical commands (same options, same backbone file) are rehearsed once per
output folder (the memory measurements too), so rehearsing ``paper`` then ``fair`` into one folder reuses what
they share; a run both name alike with different commands is then refused in one line.
"""

from __future__ import annotations

import copy
import json
import os
import re
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from droppos.backbones.naming import FILE, parse_source
from droppos.errors import UserError
from droppos.utils.files import atomic_write_json, atomic_write_text, read_json

from .commands import Launch, launch_command
from .guard import Guarded, run_guarded
from .plan import PlannedRun, build_plan, select
from .spec import Spec
from .state import finished, log_tail


@dataclass
class RehearsalOptions:
    processes: int = 2
    budget_gib: float = 20.0
    gpu: str = "A100"
    mfu: float = 0.4
    timeout_s: float = 3600.0
    python: str = sys.executable


#: the schedule of a rehearsal, per run kind: merged over the run's own options (flags, or config keys)
def tiny_schedule(kind: str, processes: int) -> dict:
    workers = {"workers": 0}
    return {
        "pretrain": {"epochs": 1, "warmup_epochs": 0, "batch_size": 2, "accum_iter": 1, "save_every_iters": 1,
                     "log_every": 1, "keep_every_epochs": 0, "stop_after": 0, **workers},
        "classify finetune": {"epochs": 2, "warmup_epochs": 0, "batch_size": 2, "log_every": 1, **workers},
        "classify linear": {"epochs": 2, "warmup_epochs": 0, "batch_size": 2, "log_every": 1, **workers},
        "classify knn": {"batch_size": 2, **workers},
        "probe position": {"epochs": 1, "train_images": 8, "val_images": 4, "batch_size": 2, "head_batch_size": 16,
                           **workers},
        "probe order": {"val_images": 4, "train_images": 8, "epochs": 1, "batch_size": 2, "head_batch_size": 4,
                        **workers},
        "detect": {"train.max_iter": 2, "dataloader.train.total_batch_size": processes, "train.checkpointer.period": 1,
                   "train.log_period": 1, "dataloader.train.num_workers": 0, "dataloader.test.num_workers": 0,
                   "model.roi_heads.num_classes": SYNTHETIC_CLASSES},
        "segment": {"train_cfg.max_iters": 2, "train_cfg.val_interval": 2, "default_hooks.checkpoint.interval": 1,
                    "default_hooks.logger.interval": 1, "train_dataloader.num_workers": 0,
                    "val_dataloader.num_workers": 0, "test_dataloader.num_workers": 0,
                    "train_dataloader.persistent_workers": False, "val_dataloader.persistent_workers": False,
                    "test_dataloader.persistent_workers": False},
    }.get(kind, {})


SYNTHETIC_CLASSES = 10  # `droppos data` builds from Fashion-MNIST
#: the data a rehearsal builds, per kind: `droppos data` options (real layout, real resolution, a few images)
SYNTHETIC_DATA = {"imagefolder": {"size": 256, "train_per_class": 1, "val_per_class": 1},
                  "coco": {"canvas": 1024, "train_images": 4, "val_images": 2},
                  "ade20k": {"canvas": 512, "train_images": 8, "val_images": 2}}
#: the file whose appearance means the engine wrote its first checkpoint (None: the run keeps none)
CHECKPOINT = {"pretrain": "checkpoint.pth", "classify finetune": "checkpoint.pth", "classify linear": "checkpoint.pth",
              "detect": "last_checkpoint", "segment": "last_checkpoint"}


#: what a rehearsed run leaves that nothing reads afterwards: resume checkpoints (ours, detectron2's, mmengine's)
#: and the converted initial weights; at ViT-B/L size they are GBs each (``paper`` would leave ~50 GB)
TRAINING_STATE = ("checkpoint.pth", "model_*.pth", "iter_*.pth", "init/*.pth")


def drop_training_state(folder: Path) -> int:
    """Delete a rehearsed run's :data:`TRAINING_STATE` files; returns the bytes freed. The records
    (``metrics.json``, logs) and what later runs read (a pretraining's ``encoder.pth``) stay."""
    freed = 0
    for pattern in TRAINING_STATE:
        for f in folder.glob(pattern):
            if f.is_file() and not f.is_symlink():
                freed += f.stat().st_size
                f.unlink()
    return freed


# ---------------------------------------------------------------------------------------- the spec
def rehearsal_spec(spec: Spec, out: Path, opts: RehearsalOptions) -> tuple[Spec, list[str]]:
    """The spec as rehearsed: synthetic data, stand-in checkpoints, the tiny schedules. Returns it and notes."""
    from droppos.runs.tasks import task_kind

    from .synthetic import timm_name, write_checkpoint

    r = copy.deepcopy(spec)
    notes = []
    for name, d in r.data.items():
        d.path = str(out / "data" / name)
        d.build = {**SYNTHETIC_DATA[d.kind], "seed": 0}
    for bb in r.backbones:
        if bb.pretrain is not None:
            bb.pretrain = {**bb.pretrain, **tiny_schedule("pretrain", opts.processes)}
            continue
        src, fmt = bb.source.backbone, bb.source.source_format or "timm"
        if parse_source(src).kind != FILE or Path(src).exists():  # only a missing checkpoint file gets a stand-in
            continue
        stand_in = out / "checkpoints" / Path(src).name
        if not stand_in.exists():
            write_checkpoint(stand_in, fmt, bb.source.arch)
        notes.append(f"{bb.name}: {src} is not here: random {timm_name(src, bb.source.arch)} weights in its "
                     f"'{fmt}' layout, {stand_in}")
        bb.source.backbone = str(stand_in)
    for t in r.tasks:
        for tv in (t, *t.variants.values()):
            tv.options = {**tv.options, **tiny_schedule(task_kind(tv.kind, tv.protocol).kind, opts.processes)}
    return r, notes


# ---------------------------------------------------------------------------------------- input sizes
@dataclass
class SizePlan:
    full: int  # px
    used: int  # px the check runs at
    measured: dict = field(default_factory=dict)  # px -> peak GiB of one process (one batch)
    predicted_full_gib: float | None = None
    note: str = ""


def full_size(kind: str, config: str) -> tuple[int, int]:
    """(input side in px, patch) of a detection or segmentation config."""
    if kind == "detect":
        from detectron2.config import LazyConfig

        from droppos.transfer.detection.config import resolve_config_file

        cfg = LazyConfig.load(str(resolve_config_file(config)))
        return int(cfg.model.backbone.square_pad), int(cfg.model.backbone.net.patch_size)
    from droppos.transfer.segmentation.config import load_config

    cfg = load_config(config)
    return int(cfg.crop_size[0]), int(cfg.model.backbone.patch_size)


def size_options(kind: str, config: str, size: int) -> dict:
    """Config overrides that set a detection or segmentation run's input to ``size`` px."""
    if kind == "detect":
        return {"model.backbone.square_pad": size, "model.backbone.net.img_size": size,
                "dataloader.train.mapper.augmentations.image_size": size,
                "dataloader.test.mapper.augmentations.image_size": size}
    from droppos.transfer.segmentation.config import load_config

    cfg = load_config(config)
    out = {"crop_size": (size, size), "model.data_preprocessor.size": (size, size),
           "model.backbone.img_size": (size, size), "model.test_cfg.crop_size": (size, size),
           "model.test_cfg.stride": (size * 2 // 3, size * 2 // 3)}
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        for i, step in enumerate(cfg[loader].dataset.pipeline):
            if step["type"] in ("RandomResize", "Resize"):
                out[f"{loader}.dataset.pipeline.{i}.scale"] = (4 * size, size)
            if step["type"] == "RandomCrop":
                out[f"{loader}.dataset.pipeline.{i}.crop_size"] = (size, size)
    return out


def _quadratic(points: dict[int, float], patch: int):
    """Peak GiB as a + b N + c N^2 of the token count N, through three (px, GiB) points."""
    xs = sorted(points)
    n = [(x / patch) ** 2 for x in xs]
    y = [points[x] for x in xs]
    import numpy as np

    a, b, c = np.linalg.solve(np.array([[1, ni, ni * ni] for ni in n]), np.array(y))
    return lambda px: float(a + b * (px / patch) ** 2 + c * (px / patch) ** 4)


def plan_size(run: PlannedRun, out: Path, opts: RehearsalOptions, env: dict) -> SizePlan:
    """Measure one process on one batch at three smaller inputs; keep the full input when the prediction fits
    ``processes`` processes in the budget, else the largest that does (see the module docstring)."""
    config = run.args[run.args.index("--config-file" if run.kind == "detect" else "--config") + 1]
    full, patch = full_size(run.kind, config)
    step = 64 if run.kind == "detect" else 32
    sizes = sorted({max(step, round(full * f / step) * step) for f in (0.25, 0.5, 0.75)})
    measured: dict[int, float] = {}
    for s in sizes:
        g = _probe(run, out / "_probes" / f"{Path(config).stem}_{s}", size_options(run.kind, config, s), opts, env)
        if g.over_budget or g.returncode != 0:
            break
        measured[s] = g.peak_process_gib
    if len(measured) < 3:
        return SizePlan(full, max(measured, default=sizes[0]), measured,
                        note=f"memory measured at {sorted(measured)} px only; running at the smallest")
    predict = _quadratic(measured, patch)
    room = 0.9 * opts.budget_gib / opts.processes
    full_gib = predict(full)
    if full_gib <= room:
        return SizePlan(full, full, measured, full_gib)
    fits = [s for s in range(step, full, step) if predict(s) <= room]
    used = max(fits, default=sizes[0])
    return SizePlan(full, used, measured, full_gib,
                    note=(f"does not fit {opts.processes} processes at {full} px here: one process on one batch "
                          f"measured {', '.join(f'{v:.1f} GiB at {k}' for k, v in sorted(measured.items()))}; "
                          f"extrapolated {full_gib:.1f} GiB at {full} px; checked at {used} px "
                          f"({predict(used):.1f} GiB predicted)"))


def _probe(run: PlannedRun, folder: Path, size_opts: dict, opts: RehearsalOptions, env: dict) -> Guarded:
    """One process, one iteration, ``size_opts`` applied, scratch weights: its peak memory."""
    from .commands import overrides

    args = list(run.args)
    args[args.index("--output") + 1] = str(folder)
    args[args.index("--backbone") + 1] = "scratch"
    args = [a for a in args if a != "--resume"]
    if run.kind == "detect":  # one image: each process's share of the check's batch
        args += overrides({**size_opts, "train.max_iter": 1, "train.checkpointer.period": 100,
                           "dataloader.train.total_batch_size": 1})
    else:
        args = _append_cfg_options(args, overrides({**size_opts, "train_cfg.max_iters": 1, "train_cfg.val_interval": 100,
                                                    "default_hooks.checkpoint.interval": 100}))
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
    g = run_guarded([opts.python, "-m", "droppos.cli", *args], env, folder.with_suffix(".log"), opts.budget_gib,
                    timeout_s=opts.timeout_s)
    drop_training_state(folder)  # only its peak memory is kept
    return g


# ---------------------------------------------------------------------------------------- one run
@dataclass
class Row:
    run: str
    kind: str
    result: str = "not run"
    error: str = ""
    input: str = ""
    batch: str = ""
    processes: int = 1
    s_per_iter: float | None = None
    peak_gib: float | None = None
    resume: str = ""
    images: str = ""
    gmac: float | None = None  # per image, the whole model at the real input (fvcore counts multiply-adds)
    gpu_hours: float | None = None
    seconds: float = 0.0
    note: str = ""


def seconds_per_iteration(run: PlannedRun, processes: int) -> float | None:
    """The median time of one iteration, read from the engine's own log of the run."""
    folder = run.folder
    values: list[float] = []
    try:
        if run.kind in ("pretrain", "classify"):
            for line in (folder / "log.jsonl").read_text().splitlines():
                rec = json.loads(line)
                if rec.get("img_per_s"):
                    batch = json.loads((folder / "config.json").read_text())["batch_size"]
                    images = batch * (processes if run.kind == "pretrain" else 1)
                    values.append(images / rec["img_per_s"])
        elif run.kind == "detect":  # detectron2 times no iteration before its 3rd: read its log's timestamps
            values = _detectron2_iterations((folder / "log.txt").read_text())
        elif run.kind == "segment":
            for scalars in folder.glob("*/vis_data/scalars.json"):
                for line in scalars.read_text().splitlines():
                    rec = json.loads(line)
                    if "time" in rec and "mIoU" not in rec:
                        values.append(float(rec["time"]))
    except (OSError, ValueError, KeyError):
        return None
    return round(statistics.median(values), 2) if values else None


_D2_LINE = re.compile(r"^\[(\d\d)/(\d\d) (\d\d):(\d\d):(\d\d)\] \S+ [A-Z]+: (.*)$")  # detectron2 log.txt


def _detectron2_iterations(log: str) -> list[float]:
    """Seconds of each training iteration of a run that checkpoints every iteration: from "Starting training" or
    one iteration's checkpoint to the next one's, in detectron2's ``log.txt``."""
    out, last = [], None
    for line in log.splitlines():
        m = _D2_LINE.match(line)
        if m is None:
            continue
        t, text = (int(m[3]) * 60 + int(m[4])) * 60 + int(m[5]), m[6]  # seconds of the day: no iteration lasts a day
        if text.startswith("Starting training from iteration"):
            last = t
        elif re.match(r"Saving checkpoint to .*model_\d+\.pth$", text) and last is not None:
            out.append(float((t - last) % 86400))
            last = t
    return out


def _error(run: PlannedRun, g: Guarded, log: Path, offset: int, opts: RehearsalOptions) -> str:
    if g.over_budget:
        return f"its processes passed the {opts.budget_gib:g} GiB budget ({g.peak_total_gib:.1f} GiB); ended"
    if g.timed_out:
        return f"still running after {opts.timeout_s:.0f} s; ended"
    tail = log_tail(log, offset, lines=40)
    line = next((ln for ln in reversed(tail.splitlines()) if "error" in ln.lower() or "Error" in ln), "")
    return (line or (tail.splitlines() or [f"exit code {g.returncode}"])[-1]).strip()[:400]


def rehearse_run(run: PlannedRun, opts: RehearsalOptions, env: dict) -> Row:
    """Start, kill after the first checkpoint, resume, evaluate (see the module docstring)."""
    entry = run.entry
    procs = 1 if entry.single_process else opts.processes
    row = Row(run.id, entry.kind, processes=procs)
    cmd = launch_command(run.kind, run.args, Launch(gpus=procs), opts.python)
    log = run.log
    log.parent.mkdir(parents=True, exist_ok=True)
    offset = log.stat().st_size if log.exists() else 0
    marker = CHECKPOINT.get(entry.kind)
    t0 = time.monotonic()
    legs = []
    first = run_guarded(cmd, env, log, opts.budget_gib, timeout_s=opts.timeout_s,
                        stop_when=(lambda: (run.folder / marker).exists()) if marker else None)
    legs.append(first)
    if first.stopped:
        row.resume = "killed (SIGKILL) after its first checkpoint, resumed"
        legs.append(run_guarded(cmd, env, log, opts.budget_gib, timeout_s=opts.timeout_s))
    elif marker and first.returncode == 0:
        row.resume = "ended before the kill (no resume exercised)"
    elif not marker:
        row.resume = "keeps no checkpoint: runs once"
    last = legs[-1]
    row.seconds = round(time.monotonic() - t0, 1)
    row.peak_gib = round(max(g.peak_process_gib for g in legs), 2)
    if last.returncode == 0 and finished(run):
        row.result = "rehearsed"
    else:
        row.result = "failed"
        row.error = _error(run, last, log, offset, opts)
    row.s_per_iter = seconds_per_iteration(run, procs)
    return row


# ---------------------------------------------------------------------------------------- estimates
def _estimate(row: Row, run: PlannedRun, real: PlannedRun | None, spec: Spec, opts: RehearsalOptions, cache: dict) -> None:
    """The GPU-hours of the real run (see :mod:`.estimate`)."""
    from . import estimate as est

    if real is None:
        return
    try:
        key = (real.kind, _model_key(real))
        if key not in cache:
            cache[key] = _gflops(real, run)
        row.gmac = None if cache[key] is None else round(cache[key], 1)
    except Exception as e:  # noqa: BLE001 - an estimate that cannot be made says why, the run stands
        cache[key] = None
        row.note = (row.note + "; " if row.note else "") + f"no FLOP count ({type(e).__name__}: {str(e)[:120]})"
    batch = _global_batch(real, spec)
    options = _options(real)
    protocol = real.args[1] if real.kind in ("classify", "probe") else real.plan.get("protocol")
    images, how = est.schedule_images(real.kind, protocol, real.plan.get("schedule"), real.plan.get("dataset", ""),
                                      batch, options)
    row.images = how
    hours = est.gpu_hours(row.gmac, images, opts.gpu, opts.mfu)
    row.gpu_hours = None if hours is None else round(hours, 1)


def _options(run: PlannedRun) -> dict:
    out, args = {}, run.args
    for i, a in enumerate(args):
        if a.startswith("--") and i + 1 < len(args) and not args[i + 1].startswith("--"):
            out[a[2:].replace("-", "_")] = args[i + 1]
        elif "=" in a and not a.startswith("-"):
            k, v = a.split("=", 1)
            out[k] = v
    return out


def _model_key(run: PlannedRun) -> str:
    o = _options(run)
    if run.kind == "pretrain":
        return json.dumps({k: v for k, v in o.items() if k not in ("output", "data", "resume")}, sort_keys=True)
    return o.get("config_file") or o.get("config") or run.id


def _gflops(real: PlannedRun, rehearsed: PlannedRun) -> float | None:
    from . import estimate as est

    if real.kind == "pretrain":  # the model is the rehearsed one (only the schedule was shortened)
        return est.pretrain_gflops(json.loads((rehearsed.folder / "config.json").read_text()))
    if real.kind == "detect":
        from droppos.transfer.detection.config import resolve_config_file

        o = _options(real)
        keep = [f"{k}={v}" for k, v in o.items() if "." in k and k not in ("train.max_iter",)]
        return est.detection_gflops(str(resolve_config_file(o["config_file"])), keep)
    if real.kind == "segment":
        from droppos.transfer.segmentation.config import parse_cfg_options

        args = real.args
        items = args[args.index("--cfg-options") + 1:]
        opts = {k: v for k, v in parse_cfg_options(items).items() if k.startswith("model.")}
        return est.segmentation_gflops(_options(real)["config"], opts)
    return est.metrics_gflops(rehearsed.folder)


def _global_batch(run: PlannedRun, spec: Spec) -> int | None:
    o = _options(run)
    if run.kind == "detect":
        if "dataloader.train.total_batch_size" in o:
            return int(o["dataloader.train.total_batch_size"])
        from detectron2.config import LazyConfig

        from droppos.transfer.detection.config import resolve_config_file

        return int(LazyConfig.load(str(resolve_config_file(o["config_file"]))).dataloader.train.total_batch_size)
    if run.kind == "segment":
        from droppos.transfer.segmentation.config import load_config

        per = int(o.get("train_dataloader.batch_size") or load_config(o["config"]).train_dataloader.batch_size)
        return per * spec.gpus
    return None


def _real_batch(run: PlannedRun, spec: Spec) -> str:
    o = _options(run)
    if run.kind == "detect":
        g = _global_batch(run, spec)
        return f"{g // spec.gpus if g else '?'} / process" if g else ""
    if run.kind == "segment":
        g = _global_batch(run, spec)
        return f"{g // spec.gpus} / process" if g else ""
    if "batch_size" in o:
        return f"{o['batch_size']} / process"
    return ""


# ---------------------------------------------------------------------------------------- the report
def report_markdown(rows: list[Row], spec: Spec, opts: RehearsalOptions, notes: list[str], seconds: float,
                    left_out: list[str] = ()) -> str:
    def f(v, fmt="{:.2f}"):
        return "–" if v is None else fmt.format(v)

    from .estimate import GPUS

    ok = sum(r.result == "rehearsed" for r in rows)
    lines = [f"# Rehearsal of `{spec.name}` ({Path(spec.file).name})", "",
             f"{ok} of {len(rows)} runs rehearsed with {opts.processes} CPU processes: "
             f"{sum(r.seconds for r in rows) / 60:.0f} min of runs (memory probes not counted; this invocation "
             f"{seconds / 60:.1f} min), memory budget {opts.budget_gib:g} GiB. GPU-hours: 2 x fvcore's multiply-adds "
             f"of the whole model at the real input x the images of the real schedule (x 3 where it trains), at "
             f"{opts.mfu:.0%} of one {opts.gpu}'s dense bf16 peak ({GPUS[opts.gpu] / 1e12:g} TFLOP/s).", "",
             "| run | result | input px | batch here / real | s / iter here | peak GiB / process | resume | "
             "GMAC / image | real schedule (images) | est. GPU-h | note |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        result = r.result if not r.error else f"{r.result}: {r.error}"
        lines.append(f"| {r.run} | {result.replace('|', '/')} | {r.input} | {r.batch} | {f(r.s_per_iter)} | "
                     f"{f(r.peak_gib)} | {r.resume} | {f(r.gmac, '{:.1f}')} | {r.images} | "
                     f"{f(r.gpu_hours, '{:,.1f}')} | {r.note} |")
    total = sum(r.gpu_hours or 0 for r in rows)
    lines += ["", f"Estimated total: {total:,.0f} {opts.gpu}-hours at {opts.mfu:.0%} MFU.", ""]
    if left_out:
        lines += [f"Not rehearsed in this report (left out by --only): {len(left_out)} runs of the plan, "
                  f"{', '.join(left_out)}.", ""]
    if notes:
        lines += ["Stand-ins:", *[f"- {n}" for n in notes], ""]
    return "\n".join(lines)


def rehearse(spec: Spec, out: Path, opts: RehearsalOptions, only: list[str] | None = None,
             echo=print) -> int:
    """Rehearse ``spec`` into ``out``; returns 0 when every run rehearsed, else 1."""
    if opts.processes < 1:
        raise UserError(f"--processes must be >= 1, got {opts.processes}")
    t0 = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "RANK", "WORLD_SIZE", "LOCAL_RANK",
                                                                         "MASTER_", "CUDA_VISIBLE"))},
           "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // opts.processes)), "PYTHONUNBUFFERED": "1",
           "CUDA_VISIBLE_DEVICES": ""}
    r_spec, notes = rehearsal_spec(spec, out, opts)
    real = {r.id: r for r in build_plan(spec, Path("runs") / "bench" / spec.name)}
    plan = build_plan(r_spec, out)
    runs = select(plan, only)
    chosen = {r.id for r in runs}
    left_out = [r.id for r in plan if r.id not in chosen and r.kind != "data"]
    for n in notes:
        echo(f"stand-in: {n}")
    rows, sizes, flops = [], {}, {}
    failed: set[str] = set()
    for i, run in enumerate(runs, 1):
        prefix = f"[{i}/{len(runs)}] {run.id}"
        if run.kind == "data":
            g = run_guarded([opts.python, "-m", "droppos.cli", *run.args], env, run.log, opts.budget_gib,
                            timeout_s=opts.timeout_s)
            if g.returncode != 0:
                failed.add(run.id)
                echo(f"{prefix}: FAILED to build: {log_tail(run.log, 0, 3)}")
            else:
                echo(f"{prefix}: built in {g.seconds:.0f} s")
            continue
        row = Row(run.id, run.entry.kind)
        bad = [d for d in run.deps if d in failed]
        if bad:
            failed.add(run.id)
            row.result, row.error = "blocked", f"needs {', '.join(bad)}"
            rows.append(row)
            echo(f"{prefix}: blocked ({row.error})")
            continue
        size = None
        if run.kind in ("detect", "segment"):
            config = run.args[run.args.index("--config-file" if run.kind == "detect" else "--config") + 1]
            if config not in sizes:
                sizes[config] = _size_plan(run, config, out, opts, env, lambda: echo(
                    f"{prefix}: measuring memory at smaller inputs ..."))
            size = sizes[config]
            run = _with_size(run, config, size.used)
        row = _cached(run)
        if row is not None:
            echo(f"{prefix}: rehearsed before ({row.result}), kept")
        else:
            echo(f"{prefix}: ...")
            row = rehearse_run(run, opts, env)
            row.input = _input(run, size)
            row.batch = f"{_batch_here(run)} / {_real_batch(real[run.id], spec) if run.id in real else '?'}"
            if size is not None and size.note:
                row.note = size.note
            _estimate(row, run, real.get(run.id), spec, opts, flops)
            if row.result == "rehearsed":
                freed = drop_training_state(run.folder)
                if freed:
                    echo(f"{prefix}: its resume state deleted ({freed / 2**30:.1f} GiB; a rehearsal keeps no weights "
                         "but the encoders later runs read)")
            atomic_write_json(run.folder / "rehearsal.json", {"command": list(run.args), "row": asdict(row)})
        if row.result != "rehearsed":
            failed.add(run.id)
        rows.append(row)
        echo(f"{prefix}: {row.result}" + (f": {row.error}" if row.error else "") +
             f" ({row.seconds:.0f} s, {f'{row.s_per_iter:.2f} s/iter, ' if row.s_per_iter else ''}"
             f"peak {row.peak_gib} GiB/process)")
    seconds = time.monotonic() - t0
    md = report_markdown(rows, spec, opts, notes, seconds, left_out)
    atomic_write_text(out / "rehearsal.md", md)
    atomic_write_json(out / "rehearsal.json", {"spec": str(spec.file), "processes": opts.processes,
                                                "budget_gib": opts.budget_gib, "gpu": opts.gpu, "mfu": opts.mfu,
                                                "seconds": round(seconds, 1), "rows": [asdict(r) for r in rows]})
    echo(md)
    echo(f"report: {out / 'rehearsal.md'}")
    return 0 if all(r.result == "rehearsed" for r in rows) else 1


def _cached(run: PlannedRun) -> Row | None:
    """The row of an earlier rehearsal of this very command in this folder; one line when the folder holds a
    rehearsal of another command (a spec that names the same run differently)."""
    path = run.folder / "rehearsal.json"
    if not path.is_file():
        return None
    saved = read_json(path)
    if not isinstance(saved, dict) or "row" not in saved:
        return None  # unreadable (a write cut short): rehearsed again
    if saved.get("command") != list(run.args):
        raise UserError(f"{run.folder} holds a rehearsal of another command for {run.id}; rehearse this spec into "
                        "another --out (each spec has its own by default: runs/rehearse/<spec>)")
    return Row(**saved["row"]) if finished(run) else None


def _size_plan(run: PlannedRun, config: str, out: Path, opts: RehearsalOptions, env: dict, announce) -> SizePlan:
    """The input size of ``config``'s check, measured once per output folder, processes and budget."""
    path = out / "_probes" / f"{Path(config).stem}.json"
    key = {"processes": opts.processes, "budget_gib": opts.budget_gib}
    saved = read_json(path)
    if isinstance(saved, dict) and saved.get("key") == key:
        plan = SizePlan(**saved["plan"])
        plan.measured = {int(k): v for k, v in plan.measured.items()}
        return plan
    announce()
    plan = plan_size(run, out, opts, env)
    atomic_write_json(path, {"key": key, "plan": asdict(plan)})
    return plan


def _append_cfg_options(args: list[str], items: list[str]) -> list[str]:
    """``items`` after the last of ``--cfg-options``'s values (mmengine: the later of two equal keys wins)."""
    n = args.index("--cfg-options") + 1
    while n < len(args) and not args[n].startswith("--"):
        n += 1
    return [*args[:n], *items, *args[n:]]


def _with_size(run: PlannedRun, config: str, size: int) -> PlannedRun:
    from .commands import overrides

    opts = size_options(run.kind, config, size)
    args = list(run.args)
    extra = overrides(opts)
    if run.kind == "detect":
        args += extra
    else:
        args = _append_cfg_options(args, extra)
    return PlannedRun(**{**run.__dict__, "args": args})


def _input(run: PlannedRun, size: SizePlan | None) -> str:
    if size is not None:
        return f"{size.used}" + ("" if size.used == size.full else f" (of {size.full})")
    o = _options(run)
    if run.kind == "pretrain":
        return str(o.get("img_size", ""))
    if "img_size" in o:
        return o["img_size"]
    try:
        return str(json.loads((run.folder / "metrics.json").read_text()).get("img_size", ""))
    except (OSError, ValueError):
        return ""


def _batch_here(run: PlannedRun) -> str:
    o = _options(run)
    if run.kind == "detect":
        return "1"
    if run.kind == "segment":
        return str(o.get("train_dataloader.batch_size", 2))
    return str(o.get("batch_size", ""))


