"""Mask R-CNN on the embedded Fashion-MNIST scenes with a generic *hierarchical* backbone + FPN.

``droppos detect --config-file mask_rcnn_timm_fpn_fmnist --backbone timm:<model>[:<weights>]``:
any timm model (or plug-in) with feature maps at strides 4, 8, 16, 32 (Swin, ConvNeXt, ResNet,
MaxViT ...) feeds detectron2's ``FPN`` (p2..p5), as detectron2's Mask R-CNN R50-FPN does.
Everything else is ``mask_rcnn_vitdet_fmnist``'s CPU recipe (heads, data, schedule), without layer
decay.
"""

from detectron2.config import LazyCall as L
from detectron2.modeling.backbone.fpn import FPN

from droppos.transfer.detection.generic import TimmBackbone

from .mask_rcnn_vitdet_fmnist import channels, dataloader, datasets, image_size, lr_multiplier, model, optimizer, train

model.backbone = L(FPN)(
    bottom_up=L(TimmBackbone)(source="timm:test_convnext", img_size=image_size, drop_path_rate=0.1),
    in_features=["res2", "res3", "res4", "res5"],
    out_channels=channels,
    norm="LN",
)
optimizer.params.lr_factor_func = None
