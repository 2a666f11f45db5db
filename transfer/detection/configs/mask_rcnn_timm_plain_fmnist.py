"""Mask R-CNN on the embedded Fashion-MNIST scenes with a generic *plain* backbone (one stride).

``droppos detect --config-file mask_rcnn_timm_plain_fmnist --backbone timm:<model>[:<weights>]``:
any timm model (or plug-in) whose feature maps all have one stride (a ViT's patch grid: DINOv2,
EVA-02, CLIP, SigLIP, BEiT, DeiT ...) feeds ViTDet's ``SimpleFeaturePyramid`` from its last block,
as ViTDet does for its own ViT. Everything else is ``mask_rcnn_vitdet_fmnist``'s CPU recipe (heads,
data, schedule), without layer decay (a generic model names its layers its own way).

For a stride-16 model (patch 16) the pyramid scales are 4, 2, 1 (strides 4, 8, 16) and a max-pool
gives p5; for patch 8, ``model.backbone.scale_factors=[2.0,1.0,0.5]``; the model is built for the
padded 128-px square (``model.backbone.net.img_size``), its position table resampled by timm.
"""

from detectron2.config import LazyCall as L
from detectron2.modeling.backbone.vit import SimpleFeaturePyramid

from droppos.transfer.detection.generic import TimmBackbone
from droppos.transfer.detection.recipe import max_pool_top_block

from .mask_rcnn_vitdet_fmnist import channels, dataloader, datasets, image_size, lr_multiplier, model, optimizer, train

model.backbone = L(SimpleFeaturePyramid)(
    net=L(TimmBackbone)(source="timm:test_vit", img_size=image_size, drop_path_rate=0.1),
    in_feature="last_feat",
    out_channels=channels,
    scale_factors=(4.0, 2.0, 1.0),
    top_block=L(max_pool_top_block)(in_feature="p4"),
    norm="LN",
    square_pad=image_size,
)
optimizer.params.lr_factor_func = None
