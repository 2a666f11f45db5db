"""``droppos segment``: UperNet semantic segmentation in mmsegmentation from any ViT checkpoint.

    droppos segment --config upernet_vit_fmnist --backbone runs/pretrain/encoder.pth \\
        --data data/ade20k_fmnist --output runs/seg/droppos
    droppos segment --config upernet_mae_b16_ade20k_512 --backbone mae_pretrain_vit_base.pth \\
        --data data/ade/ADEChallengeData2016 --output runs/seg/mae_b16 \\
        --launcher pytorch                      # under torchrun (or --launcher slurm under srun)

Steps: load the config (a shipped name or a path; ``--cfg-options`` override it), adapt it to
the machine (no GPU: plain ``OptimWrapper`` instead of AMP), check the dataset folders, resolve
``--backbone`` through the one init path (:mod:`droppos.backbones.init`: ``scratch``, an mmseg
file, or any layout the readers read, converted for the config's image size), build mmengine's Runner, load the weights strictly and print a load
report, train (or only evaluate with ``--eval-only``), and write ``OUTPUT/metrics.json``
(mIoU, mAcc, aAcc in percent, per-class IoU/Acc). mmengine writes the resolved config, logs and
checkpoints into ``OUTPUT``; ``--resume`` continues from its latest checkpoint.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from droppos.errors import UserError
from droppos.utils.config import DeprecatedAlias


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True,
                   help="config file, or a shipped config name: upernet_mae_b16_ade20k_512, "
                        "upernet_mae_l16_ade20k_512, upernet_vit_fmnist")
    from droppos.backbones.options import add_backbone_arguments

    add_backbone_arguments(p, extra_help="; 'scratch' = the recipe's random init; a file in mmseg names (a whole "
                                         "segmentor or an MAE backbone) is used as is")
    p.add_argument("--output", dest="output", help="run folder: config, logs, checkpoints, metrics.json")
    p.add_argument("--work-dir", dest="output", action=DeprecatedAlias, new="--output", help=argparse.SUPPRESS)
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

    from droppos.backbones import init as binit
    from droppos.backbones.options import backbone_options
    from droppos.utils.runfolder import claim

    from .config import adapt_to_machine, dataset_name, load_config, parse_cfg_options, set_data_root
    from .data import check_data
    from .mmcv_ops import ensure_mmcv_ops
    from .safe_load import allow_mmengine_checkpoints
    from .weights import fit_heads, generic_config, target

    ensure_mmcv_ops()
    allow_mmengine_checkpoints()
    try:
        options = parse_cfg_options(args.cfg_options)
    except ValueError as e:
        raise SegmentError(str(e)) from None
    cfg = load_config(args.config, options)
    if args.data:
        set_data_root(cfg, args.data)
    work_dir = Path(args.output)
    claim(work_dir, "segment", main_process=os.environ.get("RANK", "0") == "0")
    cfg.work_dir = str(work_dir)
    cfg.launcher = args.launcher
    changes = adapt_to_machine(cfg, torch.cuda.is_available())

    if not args.skip_data_check:
        changes += check_data(cfg, ("val",) if args.eval_only else ("train", "val"))

    latest = _latest_checkpoint(work_dir) if args.resume else None
    if not args.resume and not args.eval_only and _latest_checkpoint(work_dir) is not None:
        raise SegmentError(f"{work_dir} already holds a run ({_latest_checkpoint(work_dir).name}); pass --resume to "
                           "continue it, or choose another --output")
    if args.resume and latest is None and args.eval_only:
        raise SegmentError(f"{work_dir}: --resume --eval-only, but there is no checkpoint in it (last_checkpoint)")
    if latest is not None:  # read it safely first: a truncated or hostile file is one line, before mmengine's load
        from droppos.utils.checkpoint import safe_load

        safe_load(latest)
    tgt = target(cfg)
    stored = binit.read(work_dir) if latest is not None else {}
    if generic_config(cfg):  # timm: / plug-in backbones: built (with their weights) by the config's backbone
        init, generic = _generic_init(args, cfg, stored)
        changes += fit_heads(cfg, generic)
    elif stored:  # the run's checkpoint replaces every weight; the record says where the run started from
        init = binit.Init(str(latest), "scratch", stored.get("backbone", {}))
    else:
        init = binit.resolve(backbone_options(args), tgt)
    if args.eval_only and latest is None and (init.kind != "native" or not any(
            k.startswith("decode_head.") for k in init.state_dict)):
        raise SegmentError(f"--eval-only needs trained decode heads: give --backbone a whole-segmentor checkpoint "
                           f"(keys backbone.*, decode_head.*), or --resume with a run's --output; got {init.kind} "
                           f"weights from {init.source}")
    cfg.resume = bool(args.resume and not args.eval_only)
    cfg.load_from = str(latest) if (args.eval_only and latest is not None) else None

    from mmengine.dist import broadcast, is_main_process
    from mmengine.model import is_model_wrapper

    from .engine import KeepLastMetrics, SegRunner

    runner = SegRunner.from_cfg(cfg)
    for line in changes:
        runner.logger.info(line)
    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    model.init_weights()  # the Runner skips it later (mmengine initialises a module once)
    for tensor in model.state_dict().values():
        broadcast(tensor)
    report = binit.load(model, init, tgt)
    if not stored and not args.eval_only and is_main_process():
        binit.save(work_dir, init, report)
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
        from droppos.utils.cost import backbone_cost
        from droppos.utils.metrics import write_metrics

        summary = {k: round(float(metrics[k]), 4) for k in ("mIoU", "mAcc", "aAcc")}
        path = write_metrics(
            work_dir, task="segmentation", protocol="upernet", backbone=init.record,
            dataset=dataset_name(cfg), metrics=summary, seed=int(cfg.get("randomness", {}).get("seed") or 0),
            data_root=cfg.get("data_root") or "", cost=backbone_cost(model.backbone, cfg.get("crop_size") or 512,
                                                                     pooled=False),
            per_class=runner.last_per_class(), iterations=iterations, eval_only=bool(args.eval_only),
            config=str(Path(cfg.filename).name), init=stored.get("source") or init.source,
            load_report=stored.get("load_report") or report.to_dict())
        runner.logger.info(f"mIoU {summary['mIoU']:.2f}  mAcc {summary['mAcc']:.2f}  aAcc {summary['aAcc']:.2f} -> {path}")
    return 0


def _generic_init(args, cfg, stored: dict):
    """The config's ``TimmGenericBackbone`` gets ``--backbone`` (or, resuming, the run's own source);
    returns the init record and the backbone as read (its feature maps fit the heads)."""
    from droppos.backbones import init as binit
    from droppos.backbones.generic import is_generic, load_generic
    from droppos.backbones.options import backbone_options

    opts = backbone_options(args)
    src = stored.get("source") or opts.backbone or str(cfg.model.backbone.source)
    if not is_generic(src):
        raise SegmentError(f"{src}: this config builds a generic backbone: give --backbone timm:<model>[:<weights>] "
                           "or <plugin>:<weights> (a ViT checkpoint goes with the upernet_vit / upernet_mae configs)")
    bb = load_generic(src, trust_pickle=opts.trust_pickle, allow_nonfinite=opts.allow_nonfinite, name=opts.name,
                      method=opts.method, epochs=opts.pretrain_epochs)  # checked here once, one line if it fails
    cfg.model.backbone.source, cfg.model.backbone.trust_pickle = src, bool(opts.trust_pickle)
    return binit.Init(src, "generic", stored.get("backbone") or bb.backbone, notes=bb.notes), bb


def _latest_checkpoint(work_dir: Path) -> Path | None:
    """The checkpoint mmengine's ``last_checkpoint`` file names, if it exists."""
    marker = work_dir / "last_checkpoint"
    if not marker.is_file():
        return None
    path = Path(marker.read_text().strip())
    return path if path.is_file() else None
