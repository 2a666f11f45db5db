"""``droppos detect``: ViTDet Mask R-CNN in detectron2, from any backbone checkpoint.

Examples::

    droppos data coco --out data/coco
    droppos detect --config-file mask_rcnn_vitdet_fmnist --init runs/pt/encoder.pth --output runs/det
    droppos detect --config-file mask_rcnn_vitdet_fmnist --init scratch --output runs/det_scratch
    droppos detect --config-file mask_rcnn_vitdet_b_100ep --init DropPos_pretrain_vit_base_patch16_800ep.pth \\
        --trust-pickle --output runs/coco_b --num-gpus 8 dataloader.train.total_batch_size=64
    droppos detect --config-file mask_rcnn_vitdet_fmnist --output runs/det --eval-only   # last checkpoint
    droppos detect --config-file mask_rcnn_vitdet_fmnist --output runs/det --init scratch --resume

``--config-file`` is a LazyConfig file or the name of a shipped one (``transfer/detection/configs``:
``mask_rcnn_vitdet_b_100ep``, ``mask_rcnn_vitdet_l_100ep``, ``mask_rcnn_vitdet_fmnist``); trailing
``KEY=VALUE`` items override config fields. ``--init`` takes ``scratch`` (detectron2's random
init), a detectron2 checkpoint, or any source ``droppos convert`` reads (converted on the fly; see
:mod:`.init`). Before training, the data are validated and the load report printed: a backbone
weight that does not land is an error. Multi-GPU / multi-node: ``--num-gpus`` processes per
machine, ``--num-machines``, ``--machine-rank``, ``--dist-url tcp://HOST:PORT`` (detectron2's
``launch``). The run folder gets ``config.yaml`` (the resolved config), checkpoints, ``log.txt``,
``events.json`` (detectron2's event lines), TensorBoard files, ``init.json`` (what ``--init``
resolved to; ``--resume`` and ``--eval-only`` reuse it) and ``metrics.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

INIT_STATE = "init.json"  # what the run was initialised from, for --resume and --eval-only
INIT_FORMATS = ("detectron2", "encoder", "checkpoint", "droppos", "mae", "timm", "scratch")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = __doc__
    parser.add_argument("--config-file", required=True, metavar="CFG",
                        help="LazyConfig file, or a shipped config name (e.g. mask_rcnn_vitdet_fmnist)")
    parser.add_argument("--init", default=None, metavar="SRC",
                        help="initial weights: 'scratch', a detectron2 checkpoint, or any source droppos convert "
                             "reads (required for training; --eval-only defaults to the run's last checkpoint)")
    parser.add_argument("--from", dest="fmt", choices=INIT_FORMATS, default=None,
                        help="force the format of --init instead of detecting it")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="allow --init files that pickle Python objects (official MAE 'args'); unpickling "
                             "can run code, use only for files you trust")
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


def prepare(args):
    """Main-process work before ``launch``: config, data checks, init weights. Returns the InitSource."""
    from droppos.utils.metrics import backbone_record

    from .config import load_config, resolve_config_file
    from .datasets import check_datasets
    from .init import InitSource, arch_of_config, prepare_init

    if args.num_gpus < 1 or args.num_machines < 1 or not 0 <= args.machine_rank < args.num_machines:
        raise ValueError("need --num-gpus >= 1, --num-machines >= 1 and 0 <= --machine-rank < --num-machines")
    if args.num_machines > 1 and args.dist_url == "auto":
        raise ValueError("several machines need --dist-url tcp://HOST:PORT of machine 0")
    args.config_file = str(resolve_config_file(args.config_file))  # a path, for every process
    cfg = load_config(args)
    for line in check_datasets(cfg.datasets.prefix, cfg.datasets.root, cfg.model.roi_heads.num_classes):
        print(line)
    net = cfg.model.backbone.net
    state = read_init_state(args.output)
    if args.eval_only:
        if args.init is None:  # the run's own last checkpoint
            backbone = state["backbone"] if state else backbone_record("unknown", arch_of_config(net), None, str(args.output))
            return InitSource("", "detectron2", backbone, source=state["source"] if state else "")
        init = prepare_init(args.init, net, args.output, fmt=args.fmt, trust_pickle=args.trust_pickle)
        if init.kind == "scratch":
            raise ValueError("--eval-only --init scratch would evaluate an untrained detector; give a trained checkpoint")
        return init
    if args.resume and (args.output / "last_checkpoint").is_file() and state:
        print(f"resuming {args.output} (initialised from {state['source']}); --init is not used")
        return InitSource(state["checkpoint"], state["kind"], state["backbone"], state.get("conversion", {}),
                          source=state["source"])
    if args.init is None:
        raise ValueError("training needs --init SRC: a checkpoint, or 'scratch' for random init")
    init = prepare_init(args.init, net, args.output, fmt=args.fmt, trust_pickle=args.trust_pickle)
    write_init_state(args.output, init)
    return init


def read_init_state(output: Path) -> dict | None:
    """What an earlier run in ``output`` was initialised from (``OUTPUT/init.json``), if any."""
    import json

    try:
        return json.loads((output / INIT_STATE).read_text())
    except (OSError, ValueError):
        return None


def write_init_state(output: Path, init) -> None:
    import json

    output.mkdir(parents=True, exist_ok=True)
    state = {"source": init.source, "kind": init.kind, "checkpoint": init.path, "backbone": init.backbone,
             "conversion": init.conversion}
    (output / INIT_STATE).write_text(json.dumps(state, indent=2) + "\n")


def run(args: argparse.Namespace) -> int:
    from .init import InitError

    try:
        init = prepare(args)
    except (InitError, ValueError, FileNotFoundError) as e:
        print(f"droppos detect: error: {e}", file=sys.stderr)
        return 2
    from detectron2.engine import launch

    from .train import worker

    try:
        launch(worker, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
               dist_url=args.dist_url, args=(args, init))
    except InitError as e:
        print(f"droppos detect: error: {e}", file=sys.stderr)
        return 2
    return 0
