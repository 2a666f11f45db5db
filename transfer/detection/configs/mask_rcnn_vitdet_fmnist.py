"""ViTDet Mask R-CNN on the embedded Fashion-MNIST scenes: the B recipe shrunk to train on a CPU.

Built by ``droppos data coco --out data/coco`` (128-px canvases, 10 categories; or
``droppos data all --out data``); give another folder with ``droppos detect --data DIR``.
What changes against ``mask_rcnn_vitdet_b_100ep.py``, and why:

- backbone: ViT-tiny/8 (192-d, 12 blocks, 3 heads; ``droppos pretrain --model tiny
  --patch-size 8``) on 128-px input: a 16 x 16 grid, window attention 8 x 8 with the same
  global blocks 2, 5, 8, 11, relative position, drop path 0.1; ``pretrain_img_size`` 128: the
  converter resamples the pretrained absolute position embedding to the 16 x 16 input grid
  (ViTDet instead keeps the 224-px table and interpolates it inside the model);
- pyramid: with patch 8 the ViT map has stride 8, so the scales are 2, 1, 0.5 (strides 4, 8,
  16) and the max-pool top block gives p5 (stride 32); RPN and RoI heads read p2..p5; anchors
  16..128 px for items of 16..115 px; for speed on a CPU: 128 pyramid channels instead of 256,
  64-channel box and mask heads (still 4 conv + 1 fc with LN), 64 RoIs per image instead of 512,
  fewer proposals;
- data: jitter x0.5..1.5 of 128 px (objects are already small), batch 4, evaluation at 128 px;
- schedule: 300 iterations (1200 images, 4 epochs of the default 300 training scenes), warmup
  30, the recipe's steps at 8/9 and 26/27; AdamW lr 2e-4 (for a short schedule), weight decay
  0.1, layer decay 0.75;
- CPU: no AMP there (``droppos detect`` uses SimpleTrainer without a GPU), no data workers.

The architecture must match the ``--backbone`` checkpoint (the load report says what does not);
e.g. for a ViT-tiny/16 pretraining: ``model.backbone.net.patch_size=16`` and the scale factors
``model.backbone.scale_factors=[4.0,2.0,1.0,0.5]``.
"""

from detectron2.config import LazyCall as L
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator

from droppos.transfer.detection.recipe import (
    layer_decay,
    lsj_train_augmentations,
    max_pool_top_block,
    test_augmentations,
)

from .mask_rcnn_vitdet_b_100ep import dataloader, datasets, lr_multiplier, model, optimizer, train

image_size = 128
levels = ["p2", "p3", "p4", "p5"]
channels = 128

# ---------------------------------------------------------------- model
net = model.backbone.net
net.img_size = image_size
net.patch_size = 8
net.embed_dim, net.depth, net.num_heads = 192, 12, 3
net.window_size = 8
net.pretrain_img_size = image_size
net.window_block_indexes.global_blocks = [2, 5, 8, 11]
model.backbone.scale_factors = (2.0, 1.0, 0.5)
model.backbone.top_block = L(max_pool_top_block)(in_feature="p4")
model.backbone.square_pad = image_size
model.backbone.out_channels = channels

rpn = model.proposal_generator
rpn.in_features = levels
rpn.head.in_channels = channels
rpn.anchor_generator = L(DefaultAnchorGenerator)(
    sizes=[[16], [32], [64], [128]], aspect_ratios=[0.5, 1.0, 2.0], strides=[4, 8, 16, 32], offset=0.0
)
rpn.pre_nms_topk = (1000, 500)
rpn.post_nms_topk = (200, 100)  # a canvas holds at most 5 items

heads = model.roi_heads
heads.num_classes = 10
heads.batch_size_per_image = 64
heads.box_in_features = heads.mask_in_features = levels
heads.box_head.input_shape.channels = channels
heads.box_head.conv_dims = [64] * 4  # 4 conv (LN) + 1 fc, as ViTDet, but narrower
heads.box_head.fc_dims = [256]
heads.box_predictor.input_shape.channels = 256
heads.mask_head.input_shape.channels = channels
heads.mask_head.conv_dims = [64] * 5  # 4 conv + the deconv

# ---------------------------------------------------------------- data
datasets.prefix = "fmnist_coco"  # registers fmnist_coco_train and fmnist_coco_val
datasets.root = "data/coco"
dataloader.train.dataset.names = "fmnist_coco_train"
dataloader.test.dataset.names = "fmnist_coco_val"
dataloader.train.mapper.augmentations = L(lsj_train_augmentations)(image_size=image_size, min_scale=0.5, max_scale=1.5)
dataloader.test.mapper.augmentations = L(test_augmentations)(image_size=image_size)
dataloader.train.total_batch_size = 4
dataloader.train.num_workers = 0
dataloader.test.num_workers = 0

# ---------------------------------------------------------------- training
train.max_iter = 300
train.checkpointer.period = 100
train.checkpointer.max_to_keep = 2
train.eval_period = 0  # evaluate once, at the end
train.log_period = 20
lr_multiplier.warmup_iters = 30
optimizer.lr = 2e-4
optimizer.params.lr_factor_func = L(layer_decay)(num_layers="${model.backbone.net.depth}", decay_rate=0.75)

del net, rpn, heads
