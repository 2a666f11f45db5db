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
path, :mod:`droppos.backbones.into_engine`). Before training, the data are validated and the load report printed: a backbone
weight that does not land is an error. Multi-GPU / multi-node: ``--num-gpus`` processes per
machine, ``--num-machines``, ``--machine-rank``, ``--dist-url tcp://HOST:PORT`` (detectron2's
``launch``). The run folder gets ``config.yaml`` (the resolved config), checkpoints, ``log.txt``,
``events.json`` (detectron2's event lines), TensorBoard files, ``init.json`` (what ``--backbone``
resolved to; ``--resume`` and ``--eval-only`` reuse it) and ``metrics.json``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from droppos.errors import UserError


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


def check_launch(args) -> None:
    """The launch flags, checked in every machine's parent before anything starts."""
    from .adapter import InitError

    if args.num_gpus < 1 or args.num_machines < 1 or not 0 <= args.machine_rank < args.num_machines:
        raise InitError("need --num-gpus >= 1, --num-machines >= 1 and 0 <= --machine-rank < --num-machines")
    if args.num_machines > 1 and args.dist_url == "auto":
        raise InitError("several machines need --dist-url tcp://HOST:PORT of machine 0")


def run(args: argparse.Namespace) -> int:
    """Start the processes (detectron2's ``launch``); in them, process 0 claims the run folder and prepares
    the run (:func:`.prepare.prepare`), the others join it (:func:`droppos.runs.open_run`)."""
    from .config import resolve_config_file

    check_launch(args)
    args.config_file = str(resolve_config_file(args.config_file))  # a path, for every process
    from detectron2.engine import launch

    from .train import worker

    return launch_workers(launch, worker, args)


def launch_workers(launch, worker, args) -> int:
    """detectron2's ``launch``; a one-line failure of a spawned process (printed there) ends this one with its code."""
    from torch.multiprocessing.spawn import ProcessExitedException

    try:
        launch(worker, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
               dist_url=args.dist_url, args=(args,))
    except ProcessExitedException as e:
        if e.exit_code == UserError.exit_code:
            return UserError.exit_code
        raise
    return 0

