"""``droppos detect``: ViTDet Mask R-CNN in detectron2, from any backbone checkpoint.

Examples::

    droppos data coco --out data/coco
    droppos detect --config-file mask_rcnn_vitdet_fmnist --backbone runs/pt/encoder.pth --output runs/det
    droppos detect --config-file mask_rcnn_vitdet_fmnist --backbone scratch --output runs/det_scratch
    droppos detect --config-file mask_rcnn_vitdet_b_100ep --backbone DropPos_pretrain_vit_base_patch16_800ep.pth \\
        --output runs/coco_b --num-gpus 8 dataloader.train.total_batch_size=64
    droppos detect --config-file mask_rcnn_vitdet_fmnist --output runs/det --eval-only   # last checkpoint
    droppos detect --config-file mask_rcnn_vitdet_fmnist --output runs/det --backbone scratch --resume

``--config-file`` is a LazyConfig file or the name of a shipped one (``transfer/detection/configs``:
``mask_rcnn_vitdet_b_100ep``, ``mask_rcnn_vitdet_l_100ep``, ``mask_rcnn_vitdet_fmnist``); trailing
``KEY=VALUE`` items override config fields (a key the config lacks is an error). ``--backbone``
and its flags (``--from --arch --part --trust-pickle --name --method --pretrain-epochs``, the same in
every command: :mod:`droppos.backbones.options`) take ``scratch`` (detectron2's random init), a
detectron2 checkpoint, or any layout the readers read (converted on the fly through the one init
path, :mod:`droppos.backbones.init`). Before training, the data are validated and the load report printed: a backbone
weight that does not land is an error. Multi-GPU / multi-node: ``--num-gpus`` processes per
machine, ``--num-machines``, ``--machine-rank``, ``--dist-url tcp://HOST:PORT`` (detectron2's
``launch``). The run folder gets ``config.yaml`` (the resolved config), checkpoints, ``log.txt``,
``events.json`` (detectron2's event lines), TensorBoard files, ``init.json`` (what ``--backbone``
resolved to; ``--resume`` and ``--eval-only`` reuse it) and ``metrics.json``.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = __doc__
    parser.add_argument("--config-file", required=True, metavar="CFG",
                        help="LazyConfig file, or a shipped config name (e.g. mask_rcnn_vitdet_fmnist)")
    from droppos.backbones.options import add_backbone_arguments

    add_backbone_arguments(parser, extra_help="; 'scratch' = detectron2's random init of every weight; a detectron2 "
                                              "file (convert output, a run's model_final.pth) is used as is; "
                                              "--eval-only defaults to the run's last checkpoint")
    parser.add_argument("--output", required=True, type=Path, metavar="DIR", help="run folder")
    parser.add_argument("--data", type=Path, default=None, metavar="DIR",
                        help="COCO-layout dataset folder (default: the config's datasets.root; "
                             "$DETECTRON2_DATASETS/coco for COCO)")
    parser.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    parser.add_argument("--eval-only", action="store_true", help="evaluate a trained detector, no training")
    parser.add_argument("--seed", type=int, default=0, help="seed (train.seed; default: %(default)s)")
    g = parser.add_argument_group("distributed (detectron2 launch)")
    g.add_argument("--num-gpus", type=int, default=1, help="processes per machine (GPUs; default: %(default)s)")
    g.add_argument("--num-machines", type=int, default=1, help="machines (default: %(default)s)")
    g.add_argument("--machine-rank", type=int, default=0, help="rank of this machine (default: %(default)s)")
    g.add_argument("--dist-url", default="auto",
                   help="rendezvous URL tcp://HOST:PORT of machine 0 ('auto': a free local port, one machine only)")
    parser.add_argument("opts", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.max_iter=100")


def prepare(args) -> dict:
    """Main-process work before ``launch``: config, data checks, initial weights.

    Returns what the run starts from, in ``init.json``'s shape (:func:`droppos.backbones.init.save`):
    ``{"source", "kind", "backbone", "checkpoint"}``.
    """
    from droppos.backbones import init as binit
    from droppos.backbones.options import backbone_options
    from droppos.utils.metrics import backbone_record

    from .config import load_config, resolve_config_file
    from .datasets import check_datasets
    from droppos.backbones.generic import is_generic

    from .init import InitError, generic_net, target

    if args.num_gpus < 1 or args.num_machines < 1 or not 0 <= args.machine_rank < args.num_machines:
        raise InitError("need --num-gpus >= 1, --num-machines >= 1 and 0 <= --machine-rank < --num-machines")
    if args.num_machines > 1 and args.dist_url == "auto":
        raise InitError("several machines need --dist-url tcp://HOST:PORT of machine 0")
    from droppos.utils.runfolder import claim

    args.config_file = str(resolve_config_file(args.config_file))  # a path, for every process
    cfg = load_config(args)
    claim(args.output, "detect")
    finished = [n for n in ("last_checkpoint", "metrics.json") if (args.output / n).is_file()]
    if finished and not (args.resume or args.eval_only):
        raise InitError(f"{args.output} already holds a detection run ({finished[0]}); pass --resume to continue it, "
                        "--eval-only to evaluate it, or choose another --output")
    for line in check_datasets(cfg.datasets.prefix, cfg.datasets.root, cfg.model.roi_heads.num_classes):
        print(line)
    state = binit.read(args.output)
    opts = backbone_options(args)
    net_key = generic_net(cfg)
    if net_key is not None or is_generic(opts.backbone or ""):
        return _prepare_generic(args, opts, cfg, net_key, state)
    tgt = target(cfg)
    if args.eval_only:
        if not opts.backbone:  # the run's own last checkpoint
            record = state.get("backbone") or backbone_record("unknown", tgt.arch, None, str(args.output))
            return {"source": state.get("source", ""), "kind": "run", "backbone": record, "checkpoint": ""}
        init = binit.resolve(opts, tgt)
        if init.kind != "native":
            raise InitError(f"--eval-only needs a trained detector in detectron2 names (e.g. a run's model_final.pth); "
                            f"{opts.backbone} is {'scratch' if init.kind == 'scratch' else 'a backbone'}")
        return {"source": init.source, "kind": init.kind, "backbone": init.record, "checkpoint": init.source}
    if args.resume and (args.output / "last_checkpoint").is_file() and state:
        print(f"resuming {args.output} (initialised from {state['source']}); --backbone is not used")
        return state
    if not opts.backbone:
        raise InitError("training needs --backbone SRC: a checkpoint, or 'scratch' for detectron2's random init")
    init = binit.resolve(opts, tgt)
    for line in init.notes:
        print(line)
    path = binit.save(args.output, init)
    return binit.read(args.output) | {"checkpoint": str(path) if path else (init.source if init.kind == "native" else "")}


def _prepare_generic(args, opts, cfg, net_key: str | None, state: dict) -> dict:
    """``--backbone timm:...`` / a plug-in with a ``mask_rcnn_timm_*`` config: the source goes into the
    config's ``TimmBackbone``, which reads and strictly loads the weights when the model is built."""
    from droppos.backbones import init as binit
    from droppos.backbones.generic import is_generic, load_generic

    from .init import InitError

    if net_key is None:
        raise InitError(f"{opts.backbone}: a generic backbone needs a generic config: mask_rcnn_timm_plain_fmnist "
                        "(one stride, e.g. ViTs) or mask_rcnn_timm_fpn_fmnist (strides 4-32), or their COCO versions")
    if args.resume and (args.output / "last_checkpoint").is_file() and state:
        print(f"resuming {args.output} (initialised from {state['source']}); --backbone is not used")
        args.opts = [*args.opts, f"{net_key}.source={state['source']}"]
        return state
    src = opts.backbone or str(cfg.model.backbone[net_key.rsplit(".", 1)[1]].source)
    if not is_generic(src):
        raise InitError(f"{src}: this config builds a generic backbone: give --backbone timm:<model>[:<weights>] or "
                        "<plugin>:<weights> (a ViT checkpoint goes with the mask_rcnn_vitdet_* configs)")
    bb = load_generic(src, trust_pickle=opts.trust_pickle, allow_nonfinite=opts.allow_nonfinite, name=opts.name,
                      method=opts.method, epochs=opts.pretrain_epochs)  # checked here once, one line if it fails
    args.opts = [*args.opts, f"{net_key}.source={src}", f"{net_key}.trust_pickle={opts.trust_pickle}"]
    init = binit.Init(src, "generic", bb.backbone, notes=bb.notes)
    if not args.eval_only:
        binit.save(args.output, init)
    return {"source": src, "kind": "generic", "backbone": bb.backbone, "checkpoint": "", "notes": bb.notes}


def run(args: argparse.Namespace) -> int:
    init = prepare(args)
    from detectron2.engine import launch

    from .train import worker

    launch(worker, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args, init))
    return 0
