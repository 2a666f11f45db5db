"""COCO Mask R-CNN, ViTDet's B recipe (``mask_rcnn_vitdet_b_100ep``) with a generic plain backbone.

The recipe of detectron2's ``projects/ViTDet/configs/COCO/mask_rcnn_vitdet_b_100ep.py`` (1024-px
large-scale jitter, batch 64, AdamW lr 1e-4, 100 epochs, ``SimpleFeaturePyramid`` + ``p6``) with
the backbone built by timm: DINOv2-B/14 with registers (``timm:vit_base_patch14_reg4_dinov2``) by
default; any plain model through ``--backbone timm:<model>[:<weights>]``. Differences from ViTDet's
own ViT, said here as the recipe's: global attention in every block (timm's ViT has no window
attention), no relative position, no layer-wise lr decay (a generic model names its layers its own
way); a patch-14 map (73 x 73 at 1024 px) is resampled to stride 16 (64 x 64) for the pyramid.
"""

from detectron2.config import LazyCall as L
from detectron2.modeling.backbone.vit import SimpleFeaturePyramid

from droppos.transfer.detection.generic import TimmBackbone

from .mask_rcnn_vitdet_b_100ep import dataloader, datasets, image_size, lr_multiplier, model, optimizer, train

model.backbone = L(SimpleFeaturePyramid)(
    net=L(TimmBackbone)(source="timm:vit_base_patch14_reg4_dinov2", img_size=image_size, drop_path_rate=0.1),
    in_feature="last_feat",
    out_channels=256,
    scale_factors=(4.0, 2.0, 1.0, 0.5),
    top_block=model.backbone.top_block,
    norm="LN",
    square_pad=image_size,
)
optimizer.params.lr_factor_func = None
