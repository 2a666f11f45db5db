"""A generic backbone (``timm:<model>[:<weights>]``, plug-ins) as a detectron2 ``Backbone``.

Plain models (one stride, e.g. a ViT's patch grid) give ``last_feat`` for ViTDet's
``SimpleFeaturePyramid`` (a stride that is no power of two, e.g. patch 14, is resampled to the
nearest one, 16, so that the pyramid's strides stay 4..32); hierarchical ones (Swin, ConvNeXt, ResNet) give ``res2``..``res5`` for an
``FPN``. The weights are read and loaded strictly when the model is built (the one load report is
printed by ``droppos detect``); ``configs/mask_rcnn_timm_*`` use it. This module imports detectron2.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from detectron2.modeling import Backbone

from droppos.backbones.generic import dense_features, dense_plan, load_generic


class TimmBackbone(Backbone):
    """``source``: ``timm:<model>[:<weights>]`` or ``<plugin>:<weights>``; ``img_size``: the input size
    models with a fixed position table are built for (the config's padded square)."""

    def __init__(self, source: str, img_size: int = 1024, drop_path_rate: float = 0.0, trust_pickle: bool = False):
        super().__init__()
        bb = load_generic(source, trust_pickle=trust_pickle)
        self.record, self.notes = bb.backbone, bb.notes
        self.model = bb.encoder(img_size=img_size, drop_path_rate=drop_path_rate)
        self.plan = dense_plan(self.model)
        strides = [2 ** round(math.log2(s)) for s in self.plan.strides]
        names = ["last_feat"] if self.plan.plain else [f"res{int(s).bit_length() - 1}" for s in strides]
        self._out_features = names
        self._out_feature_channels = dict(zip(names, self.plan.channels))
        self._out_feature_strides = dict(zip(names, strides))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        maps = dense_features(self.model, x, self.plan)
        out = {}
        for name, m in zip(self._out_features, maps):
            stride = self._out_feature_strides[name]
            size = (x.shape[-2] // stride, x.shape[-1] // stride)
            out[name] = m if tuple(m.shape[-2:]) == size else F.interpolate(m, size=size, mode="bilinear",
                                                                           align_corners=False)
        return out
