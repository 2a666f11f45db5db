"""COCO Mask R-CNN, ViTDet's B recipe with a generic hierarchical backbone and an FPN.

ViTDet's 100-epoch recipe (``mask_rcnn_vitdet_b_100ep``: 1024-px large-scale jitter, batch 64,
AdamW lr 1e-4, the same RPN and 4conv1fc heads), the setting in which the ViTDet paper compares its
plain backbones with Swin and MViTv2 + FPN, with ConvNeXt-B (``timm:convnext_base``) + detectron2's
``FPN`` (p2..p6) by default; any hierarchical model through ``--backbone timm:<model>[:<weights>]``.
No layer-wise lr decay (a generic model names its layers its own way).
"""

from detectron2.config import LazyCall as L
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool

from droppos.transfer.detection.generic import TimmBackbone

from .mask_rcnn_vitdet_b_100ep import dataloader, datasets, image_size, lr_multiplier, model, optimizer, train

model.backbone = L(FPN)(
    bottom_up=L(TimmBackbone)(source="timm:convnext_base", img_size=image_size, drop_path_rate=0.4),
    in_features=["res2", "res3", "res4", "res5"],
    out_channels=256,
    norm="LN",
    top_block=L(LastLevelMaxPool)(),
)
optimizer.params.lr_factor_func = None
