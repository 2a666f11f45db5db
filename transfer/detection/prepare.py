"""What the main process of a detection run does once its folder is claimed: the config, the data checks
and the initial weights (:func:`prepare`); run by detectron2's process 0 (:mod:`.train`)."""

from __future__ import annotations

from droppos.backbones import into_engine
from droppos.backbones.generic import load_generic
from droppos.backbones.naming import parse_source
from droppos.backbones.options import backbone_options
from droppos.utils.metrics import backbone_record

from .config import load_config
from .datasets import check_datasets
from .adapter import InitError, generic_net, target


def prepare(args) -> tuple[dict, list[str]]:
    """The main process's work once the folder is claimed: config, data checks, initial weights.

    Returns what the run starts from, in ``init.json``'s shape (:class:`droppos.runs.InitRecord`:
    ``source``, ``kind``, ``backbone``, ``checkpoint``), and the config overrides every process adds
    (a generic backbone's source).
    """
    cfg = load_config(args)
    heads = cfg.model.roi_heads
    for line in check_datasets(cfg.datasets.prefix, cfg.datasets.root, heads.num_classes,
                               masks=heads.get("mask_in_features") is not None):
        print(line)
    state = into_engine.read(args.output)
    _check_world(args, state)
    opts = backbone_options(args)
    net_key = generic_net(cfg)
    if net_key is not None or opts.source.generic:
        return _prepare_generic(args, opts, cfg, net_key, state)
    tgt = target(cfg)
    if args.eval_only:
        if not opts.backbone:  # the run's own last checkpoint
            record = state.get("backbone") or backbone_record("unknown", tgt.arch.to_dict() if tgt.arch else "unknown", None, str(args.output))
            return {"source": state.get("source", ""), "kind": "run", "backbone": record, "checkpoint": ""}, []
        init = into_engine.resolve(opts, tgt)
        if init.kind != "native":
            raise InitError(f"--eval-only needs a trained detector in detectron2 names (e.g. a run's model_final.pth); "
                            f"{opts.backbone} is {'scratch' if init.kind == 'scratch' else 'a backbone'}")
        return {"source": init.source, "kind": init.kind, "backbone": init.record, "checkpoint": init.source}, []
    if args.resume and (args.output / "last_checkpoint").is_file() and state:
        print(f"resuming {args.output} (initialised from {state['source']}); --backbone is not used")
        return state, []
    if not opts.backbone:
        raise InitError("training needs --backbone SRC: a checkpoint, or 'scratch' for detectron2's random init")
    init = into_engine.resolve(opts, tgt)
    for line in init.notes:
        print(line)
    # detectron2 starts its model from a file (train.init_checkpoint, read by its checkpointer in every
    # process): the converted weights are written once, here, and every process reads them back
    path = into_engine.save(args.output, init, world_size=world_size(args))
    return into_engine.read(args.output) | {"checkpoint": str(path) if path else (init.source if init.kind == "native" else "")}, []


def world_size(args) -> int:
    return args.num_gpus * args.num_machines


def _check_world(args, state: dict) -> None:
    """A run resumes with the processes it started with (detectron2 splits the global batch over them and
    draws per process): else one line naming both."""
    started = state.get("world_size")
    if args.resume and started and started != world_size(args) and (args.output / "last_checkpoint").is_file():
        raise InitError(f"{args.output}: the run started on {started} process(es), this resume has "
                        f"{world_size(args)} (--num-gpus x --num-machines): resume with {started}, or start over "
                        "in another --output")


def _prepare_generic(args, opts, cfg, net_key: str | None, state: dict) -> tuple[dict, list[str]]:
    """``--backbone timm:...`` / a plug-in with a ``mask_rcnn_timm_*`` config: the source goes into the
    config's ``TimmBackbone``, which reads and strictly loads the weights when the model is built.

    It is read here as well, once, in process 0: a bad source or a refused file is then one line before
    detectron2 starts its workers. Each worker reads it again, because detectron2 builds the model in every
    worker from the config, and a config holds the source, not the weights (as with ``train.init_checkpoint``)."""
    if net_key is None:
        raise InitError(f"{opts.backbone}: a generic backbone needs a generic config: mask_rcnn_timm_plain_fmnist "
                        "(one stride, e.g. ViTs) or mask_rcnn_timm_fpn_fmnist (strides 4-32), or their COCO versions")
    if args.resume and (args.output / "last_checkpoint").is_file() and state:
        print(f"resuming {args.output} (initialised from {state['source']}); --backbone is not used")
        return state, [f"{net_key}.source={state['source']}"]
    src = opts.backbone or str(cfg.model.backbone[net_key.rsplit(".", 1)[1]].source)
    if not parse_source(src).generic:
        raise InitError(f"{src}: this config builds a generic backbone: give --backbone timm:<model>[:<weights>] or "
                        "<plugin>:<weights> (a ViT checkpoint goes with the mask_rcnn_vitdet_* configs)")
    bb = load_generic(src, trust_pickle=opts.trust_pickle, allow_nonfinite=opts.allow_nonfinite, name=opts.name,
                      method=opts.method, epochs=opts.pretrain_epochs)  # checked here once, one line if it fails
    extra = [f"{net_key}.source={src}", f"{net_key}.trust_pickle={opts.trust_pickle}"]
    init = into_engine.StartWeights(src, "generic", bb.backbone, notes=bb.notes)
    if not args.eval_only:
        into_engine.save(args.output, init, world_size=world_size(args))
    return {"source": src, "kind": "generic", "backbone": bb.backbone, "checkpoint": "", "notes": bb.notes}, extra
