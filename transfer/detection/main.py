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


def check_launch(args) -> None:
    """The launch flags, checked in every machine's parent before anything starts."""
    from .init import InitError

    if args.num_gpus < 1 or args.num_machines < 1 or not 0 <= args.machine_rank < args.num_machines:
        raise InitError("need --num-gpus >= 1, --num-machines >= 1 and 0 <= --machine-rank < --num-machines")
    if args.num_machines > 1 and args.dist_url == "auto":
        raise InitError("several machines need --dist-url tcp://HOST:PORT of machine 0")


def prepare(args) -> tuple[dict, list[str]]:
    """The main process's work once the folder is claimed: config, data checks, initial weights.

    Returns what the run starts from, in ``init.json``'s shape (:class:`droppos.runs.InitRecord`:
    ``source``, ``kind``, ``backbone``, ``checkpoint``), and the config overrides every process adds
    (a generic backbone's source).
    """
    from droppos.backbones import init as binit
    from droppos.backbones.options import backbone_options
    from droppos.utils.metrics import backbone_record

    from .config import load_config
    from .datasets import check_datasets
    from droppos.backbones.generic import is_generic

    from .init import InitError, generic_net, target

    cfg = load_config(args)
    for line in check_datasets(cfg.datasets.prefix, cfg.datasets.root, cfg.model.roi_heads.num_classes):
        print(line)
    state = binit.read(args.output)
    _check_world(args, state)
    opts = backbone_options(args)
    net_key = generic_net(cfg)
    if net_key is not None or is_generic(opts.backbone or ""):
        return _prepare_generic(args, opts, cfg, net_key, state)
    tgt = target(cfg)
    if args.eval_only:
        if not opts.backbone:  # the run's own last checkpoint
            record = state.get("backbone") or backbone_record("unknown", tgt.arch, None, str(args.output))
            return {"source": state.get("source", ""), "kind": "run", "backbone": record, "checkpoint": ""}, []
        init = binit.resolve(opts, tgt)
        if init.kind != "native":
            raise InitError(f"--eval-only needs a trained detector in detectron2 names (e.g. a run's model_final.pth); "
                            f"{opts.backbone} is {'scratch' if init.kind == 'scratch' else 'a backbone'}")
        return {"source": init.source, "kind": init.kind, "backbone": init.record, "checkpoint": init.source}, []
    if args.resume and (args.output / "last_checkpoint").is_file() and state:
        print(f"resuming {args.output} (initialised from {state['source']}); --backbone is not used")
        return state, []
    if not opts.backbone:
        raise InitError("training needs --backbone SRC: a checkpoint, or 'scratch' for detectron2's random init")
    init = binit.resolve(opts, tgt)
    for line in init.notes:
        print(line)
    # detectron2 starts its model from a file (train.init_checkpoint, read by its checkpointer in every
    # process): the converted weights are written once, here, and every process reads them back
    path = binit.save(args.output, init, world_size=world_size(args))
    return binit.read(args.output) | {"checkpoint": str(path) if path else (init.source if init.kind == "native" else "")}, []


def world_size(args) -> int:
    return args.num_gpus * args.num_machines


def _check_world(args, state: dict) -> None:
    """A run resumes with the processes it started with (detectron2 splits the global batch over them and
    draws per process): else one line naming both."""
    from .init import InitError

    started = state.get("world_size")
    if args.resume and started and started != world_size(args) and (args.output / "last_checkpoint").is_file():
        raise InitError(f"{args.output}: the run started on {started} process(es), this resume has "
                        f"{world_size(args)} (--num-gpus x --num-machines): resume with {started}, or start over "
                        "in another --output")


def _prepare_generic(args, opts, cfg, net_key: str | None, state: dict) -> tuple[dict, list[str]]:
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
        return state, [f"{net_key}.source={state['source']}"]
    src = opts.backbone or str(cfg.model.backbone[net_key.rsplit(".", 1)[1]].source)
    if not is_generic(src):
        raise InitError(f"{src}: this config builds a generic backbone: give --backbone timm:<model>[:<weights>] or "
                        "<plugin>:<weights> (a ViT checkpoint goes with the mask_rcnn_vitdet_* configs)")
    bb = load_generic(src, trust_pickle=opts.trust_pickle, allow_nonfinite=opts.allow_nonfinite, name=opts.name,
                      method=opts.method, epochs=opts.pretrain_epochs)  # checked here once, one line if it fails
    extra = [f"{net_key}.source={src}", f"{net_key}.trust_pickle={opts.trust_pickle}"]
    init = binit.Init(src, "generic", bb.backbone, notes=bb.notes)
    if not args.eval_only:
        binit.save(args.output, init, world_size=world_size(args))
    return {"source": src, "kind": "generic", "backbone": bb.backbone, "checkpoint": "", "notes": bb.notes}, extra


def run(args: argparse.Namespace) -> int:
    """Start the processes (detectron2's ``launch``); in them, process 0 claims the run folder and prepares
    the run (:func:`prepare`), the others join it (:func:`droppos.runs.open_run`)."""
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
        if e.exit_code == USER_ERROR_EXIT:
            return USER_ERROR_EXIT
        raise
    return 0


USER_ERROR_EXIT = 2
