"""``droppos segment``: UperNet semantic segmentation in mmsegmentation from any ViT checkpoint.

    droppos segment --config upernet_vit_fmnist --init runs/pretrain/encoder.pth \\
        --data data/ade20k_fmnist --work-dir runs/seg/droppos
    droppos segment --config upernet_mae_b16_ade20k_512 --init mae_pretrain_vit_base.pth \\
        --trust-pickle --data data/ade/ADEChallengeData2016 --work-dir runs/seg/mae_b16 \\
        --launcher pytorch                      # under torchrun (or --launcher slurm under srun)

Steps: load the config (a shipped name or a path; ``--cfg-options`` override it), adapt it to
the machine (no GPU: plain ``OptimWrapper`` instead of AMP), check the dataset folders, resolve
``--init`` (``scratch``, an mmseg file, or any checkpoint the converter reads, converted for the
config's image size), build mmengine's Runner, load the weights strictly and print a load
report, train (or only evaluate with ``--eval-only``), and write ``WORK_DIR/metrics.json``
(mIoU, mAcc, aAcc in percent, per-class IoU/Acc). mmengine writes the resolved config, logs and
checkpoints into ``WORK_DIR``; ``--resume`` continues from its latest checkpoint.
"""

from __future__ import annotations

from droppos.errors import UserError

import argparse
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True,
                   help="config file, or a shipped config name: upernet_mae_b16_ade20k_512, "
                        "upernet_mae_l16_ade20k_512, upernet_vit_fmnist")
    p.add_argument("--init", required=True,
                   help="initial weights: 'scratch', a file in mmseg names (backbone or whole segmentor), "
                        "or any checkpoint `droppos convert` reads (converted on the fly)")
    p.add_argument("--from", dest="fmt", default=None,
                   choices=["mmseg", "encoder", "checkpoint", "droppos", "mae", "timm", "scratch"],
                   help="force the format of --init: 'mmseg' = already in mmseg names, the others as "
                        "`droppos convert --from` (default: detected)")
    p.add_argument("--arch", default=None,
                   help="architecture hint for a converted --init the converter cannot infer, e.g. num_heads=6 "
                        "(`droppos convert --arch` syntax)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow --init files that pickle Python objects (official MAE/DropPos releases); "
                        "unpickling runs code from the file, so only for sources you trust")
    p.add_argument("--work-dir", required=True, help="run folder: config, logs, checkpoints, metrics.json")
    p.add_argument("--data", default=None, help="dataset root (ADE20K layout); overrides the config's data_root")
    p.add_argument("--resume", action="store_true",
                   help="continue from the latest checkpoint in --work-dir (with --eval-only: evaluate it)")
    p.add_argument("--eval-only", action="store_true",
                   help="only evaluate: --init must be a whole segmentor, or use --resume for the run's checkpoint")
    p.add_argument("--launcher", default="none", choices=["none", "pytorch", "slurm"],
                   help="none = one process; pytorch = under torchrun; slurm = under srun")
    p.add_argument("--skip-data-check", action="store_true",
                   help="do not validate the dataset folders first (reading every label of ADE20K takes a minute)")
    p.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override config fields, e.g. train_cfg.max_iters=100 model.backbone.drop_path_rate=0.2")


def run(args: argparse.Namespace) -> int:
    from droppos.tools.data.idx import DataError

    from .weights import InitError

    try:
        return _run(args)
    except (InitError, DataError, FileNotFoundError, SegmentError) as e:
        print(f"droppos segment: error: {e}", file=sys.stderr)
        return 2


class SegmentError(UserError):
    """A one-line problem with the command's arguments."""


#: where a run folder records what it was initialised from (backbone record, load report)
INIT_RECORD = "init.json"


def _run(args: argparse.Namespace) -> int:
    import torch

    from .config import adapt_to_machine, dataset_name, load_config, parse_cfg_options, set_data_root
    from .data import check_data
    from .mmcv_ops import ensure_mmcv_ops
    from .safe_load import allow_mmengine_checkpoints
    from .weights import SCRATCH, InitWeights, backbone_info, load_init

    ensure_mmcv_ops()
    allow_mmengine_checkpoints()
    try:
        options = parse_cfg_options(args.cfg_options)
    except ValueError as e:
        raise SegmentError(str(e)) from None
    cfg = load_config(args.config, options)
    if args.data:
        set_data_root(cfg, args.data)
    work_dir = Path(args.work_dir)
    cfg.work_dir = str(work_dir)
    cfg.launcher = args.launcher
    changes = adapt_to_machine(cfg, torch.cuda.is_available())

    if not args.skip_data_check:
        changes += check_data(cfg, ("val",) if args.eval_only else ("train", "val"))

    latest = _latest_checkpoint(work_dir) if args.resume else None
    if not args.resume and not args.eval_only and _latest_checkpoint(work_dir) is not None:
        raise SegmentError(f"{work_dir} already holds a run ({_latest_checkpoint(work_dir).name}); pass --resume to "
                           "continue it, or choose another --work-dir")
    if args.resume and latest is None and args.eval_only:
        raise SegmentError(f"{work_dir}: --resume --eval-only, but there is no checkpoint in it (last_checkpoint)")
    stored = _read_json(work_dir / INIT_RECORD) if latest is not None else {}
    if stored:  # the run's checkpoint replaces every weight; the record says where the run started from
        init, record = InitWeights(kind=SCRATCH, source=str(latest)), stored
    else:
        init = _resolve(args, cfg)
        record = {"source": init.source, "kind": init.kind, "backbone": backbone_info(init, cfg.model.backbone)}
    if args.eval_only and latest is None and init.kind != "segmentor":
        raise SegmentError(f"--eval-only needs trained decode heads: give --init a whole-segmentor checkpoint "
                           f"(keys backbone.*, decode_head.*), or --resume with a run's --work-dir; got {init.kind} "
                           f"weights from {init.source}")
    if init.kind == "segmentor":  # e.g. another run's iter_N.pth: keep that run's backbone record
        record["backbone"] = _read_json(Path(init.source).parent / INIT_RECORD).get("backbone", record["backbone"])
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
    report = load_init(model, init, dict(cfg.model.backbone))
    if not stored:
        record["load_report"] = report.lines()
        if not args.eval_only and is_main_process():
            _write_json(work_dir / INIT_RECORD, record)
    for line in record.get("load_report", []):
        runner.logger.info(line)
    runner.logger.info("(mmengine's coming warning 'init_weights ... has been called more than once' is expected: "
                       "the Runner keeps the weights above)")
    if latest is not None:
        runner.logger.info(f"{'evaluating' if args.eval_only else 'resuming from'} {latest} (run started from "
                           f"{record.get('source', '?')}); --init {args.init} is not read")

    keep = KeepLastMetrics()
    runner.register_hook(keep, priority="LOWEST")
    if args.eval_only:
        metrics, iterations = runner.val(), None
    else:
        runner.train()
        iterations = runner.iter
        metrics = keep.metrics if keep.iter == iterations and keep.metrics else runner.val()

    if is_main_process():
        from droppos.utils.metrics import write_metrics

        summary = {k: round(float(metrics[k]), 4) for k in ("mIoU", "mAcc", "aAcc")}
        path = write_metrics(
            work_dir, task="segmentation", protocol="upernet", backbone=record["backbone"],
            dataset=dataset_name(cfg), metrics=summary, seed=int(cfg.get("randomness", {}).get("seed") or 0),
            per_class=runner.last_per_class(), iterations=iterations, eval_only=bool(args.eval_only),
            config=str(Path(cfg.filename).name), init=record.get("source"), load_report=record.get("load_report"))
        runner.logger.info(f"mIoU {summary['mIoU']:.2f}  mAcc {summary['mAcc']:.2f}  aAcc {summary['aAcc']:.2f} -> {path}")
    return 0


def _resolve(args: argparse.Namespace, cfg):
    """``--init`` as weights in mmseg names for this config (raises ``InitError`` with the fix)."""
    from .weights import check_arch, resolve_init

    bb_cfg = cfg.model.backbone
    img_size = bb_cfg.get("img_size", 224)
    img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    init = resolve_init(args.init, args.fmt, args.trust_pickle, img_size=img_size,
                        final_norm=bool(bb_cfg.get("final_norm", False)), arch=args.arch)
    check_arch(init, cfg)
    return init


def _read_json(path: Path) -> dict:
    import json

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_json(path: Path, data: dict) -> None:
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def _latest_checkpoint(work_dir: Path) -> Path | None:
    """The checkpoint mmengine's ``last_checkpoint`` file names, if it exists."""
    marker = work_dir / "last_checkpoint"
    if not marker.is_file():
        return None
    path = Path(marker.read_text().strip())
    return path if path.is_file() else None
