"""The task registry: every kind of run the project makes, and what each needs to be launched and resumed.

One :class:`TaskKind` per run kind, read by the run folders (which kind a folder holds), the bench
(command lines, launchers, resume flags, schedules, data kinds) and the results (which metrics a
run writes). A new task is one entry here plus its engine.

Launchers:

* ``torchrun``: ``python -m torch.distributed.run ... -m droppos.cli ARGS`` (pretrain, classify);
* ``mmengine``: the same, with ``--launcher pytorch`` added before ``--cfg-options`` (segment);
* ``detectron2``: detectron2's own ``--num-gpus / --num-machines / --machine-rank / --dist-url`` (detect);
* ``single``: one process whatever the allocation (probes, dataset builds).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TaskKind:
    kind: str  # the run kind: "classify finetune", "detect", ... (the run folder's droppos-run.json)
    spec_kind: str  # the bench spec's task kind: pretrain | classify | probe | detect | segment | data
    metrics_task: str  # metrics.json "task"
    protocol: str | None  # metrics.json "protocol" (None: the run's own, e.g. the pretraining method)
    launcher: str  # torchrun | mmengine | detectron2 | single
    resume_flag: str | None  # the flag that continues a run (None: it starts again)
    data_kind: str  # the dataset it reads: imagefolder | coco | ade20k
    schedule_unit: str | None = None  # "epochs" | "iters": how the engine log counts its schedule
    schedule_option: str | None = None  # the option that sets it (a flag name or a config key)
    batch_option: str | None = None  # the option of the batch (per process, or global for detectron2)
    batch_scope: str = "process"  # "process" (each process takes batch) | "global" (split over processes)
    seeded: bool = True  # False: the result does not depend on the seed (the bench runs it once)

    @property
    def command(self) -> list[str]:
        """The ``droppos`` subcommand words (``["classify", "finetune"]``)."""
        return self.kind.split()

    @property
    def single_process(self) -> bool:
        return self.launcher == "single"


_KINDS = [
    TaskKind("data", "data", "", None, "single", None, ""),
    TaskKind("pretrain", "pretrain", "pretrain", None, "torchrun", "--resume", "imagefolder", "epochs", "epochs",
             "batch_size"),
    TaskKind("classify finetune", "classify", "classification", "finetune", "torchrun", "--resume", "imagefolder",
             "epochs", "epochs", "batch_size"),
    TaskKind("classify linear", "classify", "classification", "linear", "torchrun", "--resume", "imagefolder",
             "epochs", "epochs", "batch_size"),
    # k-NN: fixed features of un-augmented images and a deterministic vote: no draw depends on the seed
    TaskKind("classify knn", "classify", "classification", "knn", "torchrun", "--resume", "imagefolder", None, None,
             "batch_size", seeded=False),
    TaskKind("probe position", "probe", "probe", "position", "single", None, "imagefolder", "epochs", "epochs"),
    TaskKind("probe order", "probe", "probe", "order", "single", None, "imagefolder", "epochs", "epochs"),
    TaskKind("detect", "detect", "detection", "mask_rcnn", "detectron2", "--resume", "coco", "iters",
             "train.max_iter", "dataloader.train.total_batch_size", "global"),
    TaskKind("segment", "segment", "segmentation", "upernet", "mmengine", "--resume", "ade20k", "iters",
             "train_cfg.max_iters", "train_dataloader.batch_size"),
]
TASKS: dict[str, TaskKind] = {t.kind: t for t in _KINDS}


def task_kind(kind: str, protocol: str | None = None) -> TaskKind:
    """The entry of a run kind (``"detect"``), or of a spec kind and protocol (``"classify", "linear"``)."""
    key = f"{kind} {protocol}" if protocol and f"{kind} {protocol}" in TASKS else kind
    try:
        return TASKS[key]
    except KeyError:
        raise KeyError(f"no task kind {key!r}; known: {sorted(TASKS)}") from None


def kind_of_metrics(task: str | None, protocol: str | None) -> str | None:
    """The run kind a ``metrics.json`` of (task, protocol) belongs to (folders made before droppos-run.json)."""
    for t in _KINDS:
        if t.metrics_task == task and (t.protocol is None or t.protocol == protocol):
            return t.kind
    return None


def spec_kinds() -> dict[str, str]:
    """Spec task kind -> the data kind it reads (the downstream tasks a spec may name)."""
    return {t.spec_kind: t.data_kind for t in _KINDS if t.spec_kind not in ("data", "pretrain")}


def protocols(spec_kind: str) -> tuple[str, ...]:
    """The protocols of a spec kind (``classify`` -> finetune, linear, knn); () when it has none."""
    return tuple(t.protocol for t in _KINDS if t.spec_kind == spec_kind and " " in t.kind)
