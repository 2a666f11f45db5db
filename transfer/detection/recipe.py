"""Building blocks of the ViTDet recipe that the LazyConfigs in ``configs/`` call with ``L(...)``.

They turn the recipe's few numbers (global blocks, step fractions, layer decay) into the
objects detectron2 expects, so that overriding ``train.max_iter`` or
``model.backbone.net.depth`` on the command line keeps the schedule and the layer decay
consistent (the configs pass those values by interpolation, e.g. ``"${train.max_iter}"``).

Nothing here imports detectron2 at module import; each function imports what it builds.
"""

from __future__ import annotations

from functools import partial

from droppos.errors import UserError

#: ViTDet's step schedule: lr x0.1 at 8/9 and again at 26/27 of training
#: (163889 and 177546 of 184375 iterations in the 100-epoch COCO recipe).
VITDET_STEPS = (8 / 9, 26 / 27)


def window_block_indexes(depth: int, global_blocks) -> list[int]:
    """Blocks that use window attention: every block of ``range(depth)`` not in ``global_blocks``.

    ``window_block_indexes(12, (2, 5, 8, 11)) -> [0, 1, 3, 4, 6, 7, 9, 10]``.
    """
    bad = [b for b in global_blocks if not 0 <= int(b) < depth]
    if bad:
        raise UserError(f"global attention blocks {bad} are outside a ViT of depth {depth}")
    return [i for i in range(depth) if i not in {int(b) for b in global_blocks}]


def step_milestones(max_iter: int, fractions=VITDET_STEPS) -> list[int]:
    """Iterations at which the lr drops: ``step_milestones(184375) -> [163889, 177546]``."""
    return [int(round(max_iter * f)) for f in fractions]


def warmup_step_schedule(max_iter: int, warmup_iters: int = 250, fractions=VITDET_STEPS,
                         warmup_factor: float = 0.001):
    """lr multiplier: linear warmup over ``warmup_iters`` then x1, x0.1, x0.01 at ``fractions``.

    Returns a ``detectron2.solver.WarmupParamScheduler`` (an fvcore scheduler of the training
    fraction in [0, 1]) that ``hooks.LRScheduler`` wraps.
    """
    from detectron2.solver import WarmupParamScheduler
    from fvcore.common.param_scheduler import MultiStepParamScheduler

    max_iter = int(max_iter)
    if max_iter <= 0:
        raise UserError(f"train.max_iter must be positive, got {max_iter}")
    # fvcore needs 0 < m1 < m2 < num_updates; a very short schedule (tests) is resolved on a grid
    # 100x finer than one iteration, which drops the lr at the same fractions of training.
    resolution = 1
    while True:
        milestones = step_milestones(max_iter * resolution, fractions)
        bounds = [0, *milestones, max_iter * resolution]
        if all(a < b for a, b in zip(bounds, bounds[1:])) or resolution > 1:
            break
        resolution = 100
    steps = MultiStepParamScheduler(values=[10.0 ** -i for i in range(len(milestones) + 1)],
                                    milestones=milestones, num_updates=max_iter * resolution)
    return WarmupParamScheduler(steps, warmup_factor=warmup_factor,
                                warmup_length=min(1.0, warmup_iters / max_iter))


def layer_decay(num_layers: int, decay_rate: float):
    """``lr_factor_func`` of ``get_default_optimizer_params``: ViTDet's layer-wise lr decay.

    Block ``i`` gets ``decay_rate ** (num_layers - i)``, the patch and position embeddings
    ``decay_rate ** (num_layers + 1)``, everything outside the backbone 1.
    """
    from detectron2.modeling.backbone.vit import get_vit_lr_decay_rate

    return partial(get_vit_lr_decay_rate, num_layers=int(num_layers), lr_decay_rate=float(decay_rate))


def lsj_train_augmentations(image_size: int, min_scale: float = 0.1, max_scale: float = 2.0):
    """Large-scale jitter: flip, resize to ``[min_scale, max_scale] x image_size``, crop ``image_size``.

    The crop is not padded: ``SimpleFeaturePyramid(square_pad=image_size)`` pads in the model.
    """
    import detectron2.data.transforms as T

    return [
        T.RandomFlip(horizontal=True),
        T.ResizeScale(min_scale=min_scale, max_scale=max_scale, target_height=image_size, target_width=image_size),
        T.FixedSizeCrop(crop_size=(image_size, image_size), pad=False),
    ]


def test_augmentations(image_size: int):
    """Evaluation: the longer side resized to ``image_size`` (keeping the aspect ratio)."""
    import detectron2.data.transforms as T

    return [T.ResizeShortestEdge(short_edge_length=image_size, max_size=image_size)]


def max_pool_top_block(in_feature: str = "p5"):
    """detectron2's ``LastLevelMaxPool`` (one extra level by stride-2 max pooling) reading ``in_feature``.

    ``LastLevelMaxPool`` always reads ``p5``; a pyramid that ends at ``p4`` (patch 8, scales
    2, 1, 0.5) needs it to read ``p4`` to produce ``p5``.
    """
    from detectron2.modeling.backbone.fpn import LastLevelMaxPool

    block = LastLevelMaxPool()
    block.in_feature = in_feature
    return block
