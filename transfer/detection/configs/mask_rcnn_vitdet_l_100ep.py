"""ViTDet Mask R-CNN, ViT-L/16, COCO 2017, 100 epochs: the B recipe with a larger backbone.

Changes against ``mask_rcnn_vitdet_b_100ep.py`` (as in detectron2's
``projects/ViTDet/configs/COCO/mask_rcnn_vitdet_l_100ep.py``; MAE ViT-L: 55.5 AP^box,
49.2 AP^mask): 1024-d, 24 blocks, 16 heads, global attention in blocks 5, 11, 17, 23,
drop path 0.4, layer-wise lr decay 0.8. Everything else (data, schedule, optimiser) is inherited.
"""

from detectron2.config import LazyCall as L

from droppos.transfer.detection.recipe import layer_decay, window_block_indexes

from .mask_rcnn_vitdet_b_100ep import dataloader, datasets, lr_multiplier, model, optimizer, train

model.backbone.net.embed_dim = 1024
model.backbone.net.depth = 24
model.backbone.net.num_heads = 16
model.backbone.net.drop_path_rate = 0.4
model.backbone.net.window_block_indexes = L(window_block_indexes)(depth="${..depth}", global_blocks=[5, 11, 17, 23])
optimizer.params.lr_factor_func = L(layer_decay)(num_layers="${model.backbone.net.depth}", decay_rate=0.8)
