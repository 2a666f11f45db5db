"""``droppos segment``: UperNet semantic segmentation in mmsegmentation from any ViT checkpoint.

    droppos segment --config upernet_vit_fmnist --backbone runs/pretrain/encoder.pth \\
        --data data/ade20k_fmnist --output runs/seg/droppos
    droppos segment --config upernet_mae_b16_ade20k_512 --backbone mae_pretrain_vit_base.pth \\
        --data data/ade/ADEChallengeData2016 --output runs/seg/mae_b16 \\
        --launcher pytorch                      # under torchrun (or --launcher slurm under srun)

Steps: load the config (a shipped name or a path; ``--cfg-options`` override it), adapt it to
the machine (no GPU: plain ``OptimWrapper`` instead of AMP), check the dataset folders, resolve
``--backbone`` through the one init path (:mod:`droppos.backbones.into_engine`: ``scratch``, an mmseg
file, or any layout the readers read, converted for the config's image size), build mmengine's Runner, load the weights strictly and print a load
report, train (or only evaluate with ``--eval-only``), and write ``OUTPUT/metrics.json``
(mIoU, mAcc, aAcc in percent, per-class IoU/Acc). mmengine writes the resolved config, logs and
checkpoints into ``OUTPUT``; ``--resume`` continues from its latest checkpoint.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from droppos.errors import UserError
from droppos.utils.config import add_deprecated


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True,
                   help="config file, or a shipped config name: upernet_mae_b16_ade20k_512, "
                        "upernet_mae_l16_ade20k_512, upernet_vit_fmnist")
    from droppos.backbones.options import add_backbone_arguments

    add_backbone_arguments(p, extra_help="; 'scratch' = the recipe's random init; a file in mmseg names (a whole "
                                         "segmentor or an MAE backbone) is used as is")
    p.add_argument("--output", dest="output", help="run folder: config, logs, checkpoints, metrics.json")
    add_deprecated(p, "--work-dir", dest="output")
    p.add_argument("--data", default=None, help="dataset root (ADE20K layout); overrides the config's data_root")
    p.add_argument("--resume", action="store_true",
                   help="continue from the latest checkpoint in --output (with --eval-only: evaluate it)")
    p.add_argument("--eval-only", action="store_true",
                   help="only evaluate: --backbone must be a whole segmentor, or use --resume for the run's checkpoint")
    p.add_argument("--launcher", default="none", choices=["none", "pytorch", "slurm"],
                   help="none = one process; pytorch = under torchrun; slurm = under srun")
    p.add_argument("--skip-data-check", action="store_true",
                   help="do not validate the dataset folders first (reading every label of ADE20K takes a minute)")
    p.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override config fields, e.g. train_cfg.max_iters=100 model.backbone.drop_path_rate=0.2")


def run(args: argparse.Namespace) -> int:
    if not args.output:
        raise SegmentError("--output DIR is required: the run folder")
    return _run(args)


class SegmentError(UserError):
    """A one-line problem with the command's arguments."""


def _run(args: argparse.Namespace) -> int:
    import torch

    from droppos.backbones import into_engine
    from droppos.runs import open_run
    from droppos.utils import dist as du

    from .config import adapt_to_machine, dataset_name, load_config, parse_cfg_options, set_data_root
    from .mmcv_ops import ensure_mmcv_ops
    from .safe_load import allow_mmengine_checkpoints

    ensure_mmcv_ops()
    allow_mmengine_checkpoints()
    try:
        options = parse_cfg_options(args.cfg_options)
    except ValueError as e:
        raise SegmentError(str(e)) from None
    info = start_processes(args.launcher)
    device = du.get_device(info, "auto")
    cfg = load_config(args.config, options)
    if args.data:
        set_data_root(cfg, args.data)
    work_dir = Path(args.output)
    cfg.work_dir = str(work_dir)
    # the processes are up (the project's own launch step): mmengine joins the process group as it is
    cfg.launcher = "pytorch" if info.distributed else "none"
    changes = adapt_to_machine(cfg, torch.cuda.is_available())
    prepared: dict = {}
    changes += open_run(work_dir, "segment", info, device, resume=args.resume or args.eval_only,
                        markers=("last_checkpoint",), continue_hint="pass --resume to continue it",
                        check=lambda: _prepare(args, cfg, work_dir, info, prepared))
    init, head_lines, latest, stored = prepared.get("init") or _resolve(args, cfg, work_dir)
    changes += head_lines
    cfg.resume = bool(args.resume and not args.eval_only)
    cfg.load_from = str(latest) if (args.eval_only and latest is not None) else None

    from mmengine.dist import is_main_process
    from mmengine.model import is_model_wrapper

    from .engine import KeepLastMetrics, SegRunner
    from .adapter import target

    tgt = target(cfg)
    runner = SegRunner.from_cfg(cfg)
    for line in changes:
        runner.logger.info(line)
    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    model.init_weights()  # the Runner skips it later (mmengine initialises a module once)
    for tensor in model.state_dict().values():  # every process starts from process 0's random init
        du.broadcast_(tensor, device)
    report = into_engine.load(model, init, tgt)
    if not stored and not args.eval_only and is_main_process():
        into_engine.save(work_dir, init, report, world_size=info.world_size)
    for line in report.lines() if not stored else [f"init: {stored.get('kind')} weights from {stored.get('source')}"]:
        runner.logger.info(line)
    runner.logger.info("(mmengine's coming warning 'init_weights ... has been called more than once' is expected: "
                       "the Runner keeps the weights above)")
    if latest is not None:
        runner.logger.info(f"{'evaluating' if args.eval_only else 'resuming from'} {latest} (run started from "
                           f"{stored.get('source', '?')}); --backbone {args.backbone} is not read")

    keep = KeepLastMetrics()
    runner.register_hook(keep, priority="LOWEST")
    if args.eval_only:
        metrics, iterations = runner.val(), None
    else:
        runner.train()
        iterations = runner.iter
        metrics = keep.metrics if keep.iter == iterations and keep.metrics else runner.val()

    if is_main_process():
        from droppos.runs import write_metrics
        from droppos.utils.cost import backbone_cost

        summary = {k: round(float(metrics[k]), 4) for k in ("mIoU", "mAcc", "aAcc")}
        path = write_metrics(
            work_dir, task="segmentation", protocol=str(cfg.get("protocol", "upernet")), backbone=init.record,
            dataset=dataset_name(cfg), metrics=summary, seed=int(cfg.get("randomness", {}).get("seed") or 0),
            data_root=cfg.get("data_root") or "", cost=backbone_cost(model.backbone, cfg.get("crop_size") or 512,
                                                                     pooled=False),
            per_class=runner.last_per_class(), iterations=iterations, eval_only=bool(args.eval_only),
            world_size=info.world_size, config=str(Path(cfg.filename).name),
            init=stored.get("source") or init.source, load_report=stored.get("load_report") or report.to_dict())
        runner.logger.info(f"mIoU {summary['mIoU']:.2f}  mAcc {summary['mAcc']:.2f}  aAcc {summary['aAcc']:.2f} -> {path}")
    du.barrier(device)
    return 0


def start_processes(launcher: str):
    """The project's launch step for ``--launcher pytorch`` (under torchrun) and ``slurm`` (one srun task per
    process): the process group on this process's device (:func:`droppos.utils.dist.init_distributed`),
    before mmengine's Runner, which then uses it (its own launchers would bind a GPU unconditionally and read
    ``scontrol``). ``none``: one process."""
    from droppos.utils import dist as du

    info = du.env_dist_info()
    if launcher == "none":
        if info.distributed:
            raise SegmentError(f"this process is one of {info.world_size} ({info.launcher}); pass --launcher "
                               f"{'slurm' if info.launcher == du.SLURM else 'pytorch'} to run them as one job")
        return du.DistInfo()
    want = du.SLURM if launcher == "slurm" else du.TORCHRUN
    if info.launcher != want and not (launcher == "pytorch" and info.launcher == du.SINGLE):
        how = ("srun (one task per process, srun starting python itself)" if want == du.SLURM else "torchrun")
        raise SegmentError(f"--launcher {launcher}: this process was not started by {how}; start it so, or pass "
                           f"--launcher {'pytorch' if info.launcher == du.TORCHRUN else 'none'}")
    return du.init_distributed()


def _prepare(args, cfg, work_dir: Path, info, prepared: dict) -> list[str]:
    """Process 0's checks once the folder is claimed: the data, the checkpoint to resume, the initial weights.
    Returns the lines to log; what it resolved stays in ``prepared`` (the other processes resolve their own)."""
    from .data import check_data

    changes = [] if args.skip_data_check else check_data(cfg, ("val",) if args.eval_only else ("train", "val"))
    prepared["init"] = _resolve(args, cfg, work_dir, info.world_size)
    return changes


def _resolve(args, cfg, work_dir: Path, world_size: int | None = None):
    """(init, lines from fitting the heads, the checkpoint to resume or evaluate, the run's init.json)."""
    from droppos.backbones import into_engine
    from droppos.backbones.options import backbone_options
    from droppos.utils.checkpoint import safe_load

    from .adapter import fit_heads, generic_config, target

    latest = _latest_checkpoint(work_dir) if args.resume else None
    if args.resume and latest is None and args.eval_only:
        raise SegmentError(f"{work_dir}: --resume --eval-only, but there is no checkpoint in it (last_checkpoint)")
    if latest is not None:  # read it safely first: a truncated or hostile file is one line, before mmengine's load
        safe_load(latest)
    stored = into_engine.read(work_dir) if latest is not None else {}
    started = stored.get("world_size")
    if world_size is not None and latest is not None and started and started != world_size and not args.eval_only:
        raise SegmentError(f"{work_dir}: the run started on {started} process(es), this resume has {world_size}: "
                           f"resume with {started}, or start over in another --output")
    lines: list[str] = []
    if generic_config(cfg):  # timm: / plug-in backbones: built (with their weights) by the config's backbone
        init, generic = _generic_init(args, cfg, stored)
        lines = fit_heads(cfg, generic)
    elif stored:  # the run's checkpoint replaces every weight; the record says where the run started from
        init = into_engine.StartWeights(str(latest), "scratch", stored.get("backbone", {}))
    else:
        init = into_engine.resolve(backbone_options(args), target(cfg))
    if args.eval_only and latest is None and (init.kind != "native" or not any(
            k.startswith("decode_head.") for k in init.state_dict)):
        raise SegmentError(f"--eval-only needs trained decode heads: give --backbone a whole-segmentor checkpoint "
                           f"(keys backbone.*, decode_head.*), or --resume with a run's --output; got {init.kind} "
                           f"weights from {init.source}")
    return init, lines, latest, stored


def _generic_init(args, cfg, stored: dict):
    """The config's ``TimmGenericBackbone`` gets ``--backbone`` (or, resuming, the run's own source);
    returns the init record and the backbone as read (its feature maps fit the heads). mmseg reads the source
    again when it builds the model from the config, which holds the source, not the weights: read here first,
    a bad source or a refused file is one line before mmengine starts."""
    from droppos.backbones import into_engine
    from droppos.backbones.generic import load_generic
    from droppos.backbones.naming import parse_source
    from droppos.backbones.options import backbone_options

    opts = backbone_options(args)
    src = stored.get("source") or opts.backbone or str(cfg.model.backbone.source)
    if not parse_source(src).generic:
        raise SegmentError(f"{src}: this config builds a generic backbone: give --backbone timm:<model>[:<weights>] "
                           "or <plugin>:<weights> (a ViT checkpoint goes with the upernet_vit / upernet_mae configs)")
    bb = load_generic(src, trust_pickle=opts.trust_pickle, allow_nonfinite=opts.allow_nonfinite, name=opts.name,
                      method=opts.method, epochs=opts.pretrain_epochs)  # checked here once, one line if it fails
    cfg.model.backbone.source, cfg.model.backbone.trust_pickle = src, bool(opts.trust_pickle)
    return into_engine.StartWeights(src, "generic", stored.get("backbone") or bb.backbone, notes=bb.notes), bb


def _latest_checkpoint(work_dir: Path) -> Path | None:
    """The checkpoint mmengine's ``last_checkpoint`` file names, if it exists."""
    marker = work_dir / "last_checkpoint"
    if not marker.is_file():
        return None
    path = Path(marker.read_text().strip())
    return path if path.is_file() else None
