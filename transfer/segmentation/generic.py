"""A generic backbone (``timm:<model>[:<weights>]``, plug-ins) as an mmseg backbone.

Registered in mmseg's ``MODELS`` as ``TimmGenericBackbone`` (configs import this module through
``custom_imports``). A plain model (one stride, e.g. a ViT) gives ``maps`` evenly spaced blocks for
``Feature2Pyramid``; a hierarchical one its stages at strides 4..32, read by ``UPerHead`` directly.
The weights are read and loaded strictly when the model is built; ``init_weights`` keeps them (it
does not run the timm model's own initialisation again).
"""

from __future__ import annotations

import torch
from mmengine.model import BaseModule
from mmseg.registry import MODELS

from droppos.backbones.generic import dense_features, dense_plan, load_generic


@MODELS.register_module()
class TimmGenericBackbone(BaseModule):
    """``source``: ``timm:<model>[:<weights>]`` or ``<plugin>:<weights>``; ``img_size``: the crop size models
    with a fixed position table are built for; ``maps``: feature maps taken from a plain model; ``last``: the
    last ``maps`` blocks (the dense probe) instead of evenly spaced ones."""

    def __init__(self, source: str, img_size=224, maps: int = 4, drop_path_rate: float = 0.0,
                 trust_pickle: bool = False, last: bool = False, init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        size = img_size[0] if isinstance(img_size, (list, tuple)) else img_size
        bb = load_generic(source, trust_pickle=trust_pickle)
        self.record, self.notes = bb.backbone, bb.notes
        self.model = bb.encoder(img_size=size, drop_path_rate=drop_path_rate)
        self.plan = dense_plan(self.model, maps=maps, last=last)

    def init_weights(self) -> None:
        self._is_init = True  # the weights were loaded when the model was built

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(dense_features(self.model, x, self.plan))
