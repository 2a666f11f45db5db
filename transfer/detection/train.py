"""Train and evaluate a LazyConfig detector with detectron2's own engine.

The contract of a config (as for detectron2's ``tools/lazyconfig_train_net.py``)::

    model                     instantiates to a GeneralizedRCNN
    dataloader.train / .test  instantiate to data loaders; dataloader.evaluator to COCOEvaluator
    optimizer                 instantiates to an optimizer once ``optimizer.params.model`` is set
    lr_multiplier             instantiates to an fvcore scheduler of the training fraction
    train                     output_dir, init_checkpoint, max_iter, amp.enabled, ddp, device,
                              checkpointer (period, max_to_keep), eval_period, log_period, seed
    datasets                  prefix and root of the COCO-layout data (see ``datasets.py``)

:func:`worker` runs in every process that ``detectron2.engine.launch`` starts: it registers the
datasets, calls ``default_setup`` (logger, ``config.yaml`` in the output folder, seeds), builds
the model, loads the initial weights with a load report (:mod:`.init`), and trains with
``SimpleTrainer`` (CPU, or AMP off) or ``AMPTrainer`` (GPU + ``train.amp.enabled``), with
detectron2's hooks: iteration timer, lr scheduler, ``PeriodicCheckpointer`` (``model_NNNNNNN.pth``,
``model_final.pth``, ``last_checkpoint`` for ``--resume``), ``EvalHook`` (every ``eval_period``
and after the last iteration) and the metric writers (``metrics.json`` event lines,
TensorBoard, console; the JSON event lines go to ``OUTPUT/events.json``). The final
COCOEvaluator results go to ``OUTPUT/metrics.json`` in this project's schema.
"""

from __future__ import annotations

import logging
import math
import os

logger = logging.getLogger("droppos.detect")

METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def flat_metrics(results: dict) -> dict[str, float]:
    """COCOEvaluator's ``{"bbox": {"AP": ..}, "segm": {..}}`` -> ``{"bbox_AP": .., "segm_AP50": ..}``.

    A metric COCOeval could not compute (NaN) is kept as NaN (written as null), never as 0. The tasks are those
    evaluated (a box-only config has no ``segm``); both when nothing was.
    """
    out = {}
    for task in [t for t in ("bbox", "segm") if t in (results or {})] or ["bbox", "segm"]:
        for name in METRIC_NAMES:
            value = (results or {}).get(task, {}).get(name, float("nan"))
            out[f"{task}_{name}"] = float(value)
    return out


def do_test(cfg, model) -> dict:
    """COCO evaluation of ``model`` on ``dataloader.test``; returns the evaluator's results."""
    from detectron2.config import instantiate
    from detectron2.evaluation import inference_on_dataset, print_csv_format

    results = inference_on_dataset(model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator))
    if results:
        print_csv_format(results)
    return results


def wrap_ddp(model, cfg, **kwargs):
    """detectron2's ``create_ddp_model`` (DDP when there are several processes); on CPU without
    ``device_ids``, which detectron2 always sets to the local GPU."""
    from detectron2.engine.defaults import create_ddp_model

    if not str(cfg.train.device).startswith("cuda"):
        kwargs["device_ids"] = None
    return create_ddp_model(model, **kwargs)


def do_train(cfg, args, init) -> dict:
    """Train ``cfg`` (resuming from ``cfg.train.output_dir`` with ``args.resume``); returns the last evaluation."""
    from detectron2.config import instantiate
    from detectron2.engine import AMPTrainer, SimpleTrainer, hooks
    from detectron2.utils import comm

    from droppos.backbones import into_engine

    from .checkpoint import checkpointer
    from .adapter import target

    model = instantiate(cfg.model)
    model.to(cfg.train.device)
    output_dir = cfg.train.output_dir
    resuming = bool(args.resume) and checkpointer(model, output_dir).has_checkpoint()
    load_report = None
    if resuming:
        logger.info("resuming from %s", os.path.join(output_dir, "last_checkpoint"))
    elif cfg.train.init_checkpoint:
        load_report = into_engine.load_file(model, cfg.train.init_checkpoint, target(cfg), trust_pickle=args.trust_pickle)
        if comm.is_main_process():
            print("\n".join(load_report.lines()))
            into_engine.record_load(output_dir, load_report)
    elif init.get("kind") == "generic":
        if comm.is_main_process():
            print("\n".join([f"init: generic backbone {init['source']}, weights loaded when it was built"]
                             + [f"  {n}" for n in init.get("notes", [])] + ["  random init: pyramid and heads"]))
    else:
        logger.info("no initial weights: the whole detector starts from detectron2's random init")

    cfg.optimizer.params.model = model
    optim = instantiate(cfg.optimizer)
    train_loader = instantiate(cfg.dataloader.train)
    model = wrap_ddp(model, cfg, **cfg.train.ddp)
    use_amp = bool(cfg.train.amp.enabled) and str(cfg.train.device).startswith("cuda")
    trainer = (AMPTrainer if use_amp else SimpleTrainer)(model, train_loader, optim)
    ckpt = checkpointer(model, output_dir, trust_pickle=args.trust_pickle, trainer=trainer)
    last = {}

    def evaluate():
        last["results"] = do_test(cfg, model)
        return last["results"]

    trainer.register_hooks([
        hooks.IterationTimer(),
        hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
        hooks.PeriodicCheckpointer(ckpt, **cfg.train.checkpointer) if comm.is_main_process() else None,
        hooks.EvalHook(cfg.train.eval_period, evaluate),
        hooks.PeriodicWriter(event_writers(output_dir, cfg.train.max_iter), period=cfg.train.log_period)
        if comm.is_main_process() else None,
    ])
    start_iter = 0
    if resuming:
        ckpt.resume_or_load("", resume=True)
        start_iter = trainer.iter + 1
    from droppos.errors import UserError

    try:
        trainer.train(start_iter, cfg.train.max_iter)
    except FloatingPointError as e:  # detectron2 checks the summed loss on the main process (the launcher stops the rest)
        raise UserError(f"the training loss diverged ({e}); lower optimizer.lr (an override: optimizer.lr=...), then "
                        "start over (--overwrite)") from None
    return {"results": last.get("results", {}), "load_report": load_report, "start_iter": start_iter,
            "cost": _backbone_cost(model, cfg)}


def _backbone_cost(model, cfg) -> dict:
    """The backbone's parameters and GFLOPs (its feature maps) at the detector's input size."""
    from droppos.utils.cost import backbone_cost

    target = model.module if hasattr(model, "module") else model
    size = cfg.model.backbone.get("square_pad") or cfg.dataloader.test.mapper.augmentations.get("image_size", 1024)
    return backbone_cost(target.backbone, int(size), pooled=False)


def do_eval_only(cfg, args) -> dict:
    """Evaluate ``train.init_checkpoint`` (or the run's last checkpoint) without training."""
    from detectron2.config import instantiate

    from droppos.backbones import into_engine

    from .checkpoint import checkpointer
    from .adapter import InitError, target

    model = instantiate(cfg.model)
    model.to(cfg.train.device)
    path = cfg.train.init_checkpoint
    if not path:
        ck = checkpointer(model, cfg.train.output_dir)
        if not ck.has_checkpoint():
            raise InitError(f"{cfg.train.output_dir}: no checkpoint to evaluate; pass --backbone MODEL.pth")
        path = ck.get_checkpoint_file()
    report = into_engine.load_file(model, path, target(cfg), require_full=True, trust_pickle=args.trust_pickle)
    print("\n".join(report.lines()))
    model = wrap_ddp(model, cfg)
    model.eval()
    return {"results": do_test(cfg, model), "load_report": report, "start_iter": None, "checkpoint": path,
            "cost": _backbone_cost(model, cfg)}


def event_writers(output_dir: str, max_iter: int) -> list:
    """detectron2's default writers, with the JSON event log in ``events.json``.

    (``default_writers`` would write it to ``metrics.json``, the name of this project's result file.)
    """
    from detectron2.utils.events import CommonMetricPrinter, JSONWriter, TensorboardXWriter

    return [CommonMetricPrinter(max_iter), JSONWriter(os.path.join(output_dir, "events.json")),
            TensorboardXWriter(output_dir)]


def worker(args) -> int:
    """Body of every process started by ``launch``: join the run (process 0 claims and prepares it), set up,
    train or evaluate, write metrics.json."""
    from detectron2.engine import default_setup
    from detectron2.utils import comm

    from droppos.runs import write_metrics

    from .config import load_config
    from .datasets import dataset_id, register_datasets

    init, device = join_run(args)
    cfg = load_config(args, init)
    register_datasets(cfg.datasets.prefix, cfg.datasets.root)
    default_setup(cfg, args)
    out = do_eval_only(cfg, args) if args.eval_only else do_train(cfg, args, init)
    if comm.is_main_process():
        metrics = flat_metrics(out["results"])
        if all(math.isnan(v) for v in metrics.values()):
            logger.warning("COCOEvaluator returned no AP (no detection above the score threshold?)")
        rep = out["load_report"]
        path = write_metrics(
            cfg.train.output_dir, task="detection", protocol="mask_rcnn", backbone=init["backbone"],
            dataset=dataset_id(cfg.datasets.prefix), metrics=metrics, seed=int(cfg.train.seed),
            data_root=cfg.datasets.root, cost=out.get("cost"),
            iterations=int(cfg.train.max_iter), config=str(args.config_file),
            eval_only=bool(args.eval_only), world_size=comm.get_world_size(),
            init={"source": init["source"], "kind": init["kind"], "checkpoint": out.get("checkpoint") or init["checkpoint"]},
            load_report=rep.to_dict() if rep is not None else None,
        )
        logger.info("wrote %s", path)
    from droppos.utils import dist as du

    du.barrier(device)
    return 0


def join_run(args):
    """Process 0 claims ``--output`` and prepares the run (:func:`.prepare.prepare`); every process gets what the
    run starts from and this process's device. A failure ends every process with the one line (printed once
    per machine); in a spawned process it is printed here and the process exits with 2."""
    import sys

    import torch
    from detectron2.utils import comm

    from droppos.errors import UserError, print_user_error
    from droppos.runs import JoinError, open_run
    from droppos.utils.dist import DistInfo

    from .prepare import prepare

    info = DistInfo(comm.get_rank(), comm.get_world_size(), comm.get_local_rank(), comm.get_local_size(),
                    args.machine_rank, "detectron2")
    device = torch.device("cuda", comm.get_local_rank()) if torch.cuda.is_available() else torch.device("cpu")
    try:
        init, extra = open_run(args.output, "detect", info, device, resume=args.resume or args.eval_only,
                               markers=("last_checkpoint", "metrics.json"), check=lambda: prepare(args),
                               continue_hint="pass --resume to continue it or --eval-only to evaluate it")
    except UserError as e:
        if info.world_size == 1:  # the launching process itself: the command prints it
            raise
        if not (isinstance(e, JoinError) and e.quiet):
            print_user_error("detect", e)
        sys.exit(UserError.exit_code)
    args.opts = [*args.opts, *extra]
    return init, device
