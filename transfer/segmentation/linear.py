"""The frozen dense probe (DINOv2's linear segmentation protocol) as mmsegmentation parts.

``BNHead``: BatchNorm over the patch features, then the 1x1 convolution of mmseg's ``BaseDecodeHead``
(``cls_seg``); with several inputs (``input_transform='resize_concat'``) the maps are resized to the
first one's size and concatenated first (DINOv2's "linear" is the last block, its "boosted linear"
the last four). mmseg ships no head that is only BatchNorm + 1x1 conv, so this is that head on
mmseg's base class; unlike DINOv2 the [cls] token is not appended to each patch feature.

``frozen_backbone=True`` in a config (read by :class:`.engine.SegRunner`) makes the backbone's
parameters not trainable before the model is wrapped (DDP then ignores them, and no backward pass
runs through the backbone); :class:`FrozenBackboneHook` keeps the backbone in eval mode at every
training iteration (a BatchNorm in a generic backbone keeps its statistics).
"""

from __future__ import annotations

import torch
from mmcv.cnn import build_norm_layer
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.registry import HOOKS, MODELS


@MODELS.register_module()
class BNHead(BaseDecodeHead):
    """BatchNorm + 1x1 conv on (the concatenation of) the backbone's maps; ``channels`` is their total width."""

    def __init__(self, **kwargs):
        kwargs.setdefault("norm_cfg", dict(type="SyncBN", requires_grad=True))
        super().__init__(**kwargs)
        self.bn = build_norm_layer(self.norm_cfg, self.channels)[1]

    def forward(self, inputs) -> torch.Tensor:
        return self.cls_seg(self.bn(self._transform_inputs(inputs)))


def freeze(model: torch.nn.Module) -> int:
    """Make ``model.backbone`` untrainable; returns how many parameters it holds."""
    backbone = model.backbone
    backbone.requires_grad_(False)
    return sum(p.numel() for p in backbone.parameters())


@HOOKS.register_module()
class FrozenBackboneHook(Hook):
    """Eval mode for the frozen backbone at every training iteration (mmengine's loop sets train mode)."""

    priority = "VERY_LOW"

    def before_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        trainable = [n for n, p in model.backbone.named_parameters() if p.requires_grad]
        if trainable:  # frozen_backbone missing from the config: the probe would fine-tune the backbone
            from droppos.errors import UserError

            raise UserError(f"{runner.cfg.filename}: FrozenBackboneHook with a trainable backbone ({trainable[0]} ...): "
                            "set frozen_backbone=True in the config (the dense probe trains its head only)")

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        model.backbone.eval()
