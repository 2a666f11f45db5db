"""mmengine's Runner with two additions (the IoU metric keeps its per-class numbers; each run has its own
visualizer), and a hook.

mmseg's ``IoUMetric`` returns mIoU / mAcc / aAcc and only logs the per-class table.
:class:`SegRunner` builds every ``IoUMetric`` of the config as :class:`PerClassIoUMetric`, the
same computation that also keeps ``per_class = {class: {"IoU": %, "Acc": %}}`` of its last
evaluation (on rank 0), for ``metrics.json``. :class:`KeepLastMetrics` remembers the metrics of
the last validation, so the final numbers need no second evaluation. Nothing is registered in
mmengine's registries.

Import after :func:`droppos.transfer.segmentation.mmcv_ops.ensure_mmcv_ops` (mmseg needs it).
"""

from __future__ import annotations

import itertools
import math

from mmengine.evaluator import Evaluator
from mmengine.hooks import Hook
from mmengine.runner import Runner
from mmseg.evaluation import IoUMetric

_RUNNERS = itertools.count()  # runners made in this process: a visualizer name no earlier run holds


class PerClassIoUMetric(IoUMetric):
    """``IoUMetric`` that also stores ``per_class`` (percent, ``None`` for a class never seen)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.per_class: dict[str, dict[str, float | None]] = {}

    def compute_metrics(self, results: list) -> dict[str, float]:
        metrics = super().compute_metrics(results)
        if self.format_only or not results:
            return metrics
        inter, union, pred, label = (sum(col) for col in zip(*results))
        per = self.total_area_to_metrics(inter, union, pred, label, self.metrics, self.nan_to_num, self.beta)
        per.pop("aAcc", None)
        names = self.dataset_meta["classes"]
        self.per_class = {
            str(name): {k: (None if math.isnan(float(v[i])) else round(float(v[i]) * 100, 2)) for k, v in per.items()}
            for i, name in enumerate(names)
        }
        return metrics


def _is_iou(cfg) -> bool:
    return isinstance(cfg, dict) and cfg.get("type") in ("IoUMetric", "mmseg.IoUMetric")


class SegRunner(Runner):
    """``Runner`` whose evaluators use :class:`PerClassIoUMetric`; ``iou_metrics`` lists them."""

    def __init__(self, *args, **kwargs):
        self.iou_metrics: list[PerClassIoUMetric] = []
        super().__init__(*args, **kwargs)

    def build_visualizer(self, visualizer=None):
        """This run's own visualizer. mmengine keeps visualizers process-wide by name (``ManagerMixin``), and the
        configs name theirs ``'visualizer'``: a second run in one process (``droppos.cli.main`` called twice, a
        test session) got the first run's instance, its scalars written under the first run's folder. Named
        after this run, each run gets a new one whose ``save_dir`` is its own log folder."""
        if isinstance(visualizer, dict):
            visualizer = {**visualizer, "name": f"{self._experiment_name}#{next(_RUNNERS)}"}
        return super().build_visualizer(visualizer)

    def build_evaluator(self, evaluator):
        items = evaluator if isinstance(evaluator, list) else [evaluator]
        if isinstance(evaluator, dict) and "metrics" in evaluator:
            return super().build_evaluator(evaluator)
        if not any(_is_iou(m) for m in items):
            return super().build_evaluator(evaluator)
        metrics = []
        for m in items:
            if _is_iou(m):
                kwargs = {k: v for k, v in m.items() if k not in ("type", "_scope_")}
                metric = PerClassIoUMetric(**kwargs)
                self.iou_metrics.append(metric)
                metrics.append(metric)
            else:
                metrics.append(m)
        return Evaluator(metrics)

    def wrap_model(self, model_wrapper_cfg, model):
        """mmengine's wrapping, except that the default DDP wrapper gets this process's device: none on a CPU
        (mmengine would pass ``device_ids=[LOCAL_RANK]``, which DDP refuses for a CPU module), the visible
        GPU it runs on under ``srun --gpus-per-task=1`` (index 0, whatever the local rank)."""
        from mmengine.model import MMDistributedDataParallel, is_model_wrapper, revert_sync_batchnorm

        if not (self.distributed and model_wrapper_cfg is None and not is_model_wrapper(model)):
            return self._frozen(super().wrap_model(model_wrapper_cfg, model))
        from droppos.utils import dist as du

        device = du.get_device(du.env_dist_info(), "auto")
        model = model.to(device)
        if device.type == "cpu":  # torch's SyncBatchNorm refuses CPU tensors: each process normalises its own batch
            self.logger.info("no GPU: SyncBN -> BN (SyncBatchNorm runs on GPUs only; each process normalises its "
                             "own batch)")
            model = revert_sync_batchnorm(model)
        else:
            model = self._maybe_sync_bn(model)
        model = self._frozen(model)  # before DDP: it then registers only the trainable parameters
        return MMDistributedDataParallel(module=model, device_ids=[device.index] if device.type == "cuda" else None,
                                         broadcast_buffers=False,
                                         find_unused_parameters=self.cfg.get("find_unused_parameters", False))

    def _frozen(self, model):
        """``frozen_backbone=True`` (the dense probe, :mod:`.linear`): the backbone's parameters stop training."""
        if self.cfg.get("frozen_backbone"):
            from mmengine.model import is_model_wrapper

            from .linear import freeze

            n = freeze(model.module if is_model_wrapper(model) else model)
            self.logger.info(f"frozen backbone: its {n} parameters are not trained (the dense probe)")
        return model

    def _maybe_sync_bn(self, model):
        from mmengine.model import convert_sync_batchnorm

        sync_bn = self.cfg.get("sync_bn", None)
        return convert_sync_batchnorm(model, sync_bn) if sync_bn is not None else model

    def last_per_class(self) -> dict:
        """Per-class results of the most recent evaluation (empty if none or not rank 0)."""
        return next((m.per_class for m in reversed(self.iou_metrics) if m.per_class), {})


class KeepLastMetrics(Hook):
    """Remembers the metrics of the latest validation and the iteration it ran at."""

    def __init__(self):
        self.metrics: dict | None = None
        self.iter = -1

    def after_val_epoch(self, runner, metrics=None) -> None:
        self.metrics, self.iter = dict(metrics or {}), runner.iter
