"""ViTDet Mask R-CNN, ViT-B/16, COCO 2017, 100 epochs: the recipe of the ViTDet paper.

Hyperparameters as in detectron2's ``projects/ViTDet/configs/COCO/mask_rcnn_vitdet_b_100ep.py``
and ``projects/ViTDet/configs/common/coco_loader_lsj.py`` (MAE ViT-B: 51.6 AP^box, 45.9 AP^mask):

- backbone: plain ViT-B/16 (768-d, 12 blocks, 12 heads), 1024-px input, window attention
  (14 x 14) in all blocks but the global ones 2, 5, 8, 11, decomposed relative position
  (``rel_pos_h/w``, zero-initialised: the pretrained checkpoint has none), absolute position
  embedding of the 224-px pretraining grid interpolated on the fly, drop path 0.1;
  SimpleFeaturePyramid (scales 4, 2, 1, 0.5 + max-pool p6, LN, 256 channels, square pad 1024);
- heads: Mask R-CNN with LN in the 4-conv + 1-fc box head and the mask head, 2-conv RPN head;
- data: large-scale jitter (flip, resize x0.1..2.0 of 1024, 1024 crop), RGB, batch 64;
  evaluation at longer side 1024;
- optimisation: AdamW (lr 1e-4, betas 0.9/0.999, weight decay 0.1, none on norms and on the
  position embedding), layer-wise lr decay 0.7, 184375 iterations (100 epochs of 118k images at
  batch 64), linear warmup over 250 iterations from x0.001, lr x0.1 at 8/9 and at 26/27 of
  training, AMP and fp16 gradient compression in DDP.

``train.init_checkpoint`` is set by ``droppos detect --backbone SRC`` (it converts any checkpoint the
converter reads). COCO is read from ``datasets.root`` (default ``$DETECTRON2_DATASETS/coco``).
The learning rate is for batch 64; scale it if you change ``dataloader.train.total_batch_size``.
"""

from detectron2 import model_zoo
from detectron2.config import LazyCall as L

from droppos.transfer.detection.recipe import (
    layer_decay,
    lsj_train_augmentations,
    test_augmentations,
    warmup_step_schedule,
    window_block_indexes,
)

image_size = 1024

# ---------------------------------------------------------------- model
model = model_zoo.get_config("common/models/mask_rcnn_vitdet.py").model
net = model.backbone.net
net.img_size = image_size
net.patch_size = 16
net.embed_dim, net.depth, net.num_heads = 768, 12, 12
net.drop_path_rate = 0.1
net.window_size = 14
net.use_rel_pos = True
net.pretrain_img_size = 224  # grid of the pretrained absolute position embedding
net.window_block_indexes = L(window_block_indexes)(depth="${..depth}", global_blocks=[2, 5, 8, 11])
model.backbone.square_pad = image_size
model.roi_heads.num_classes = 80

# ---------------------------------------------------------------- data
# Dataset names are registered by droppos.transfer.detection.datasets from ``datasets`` below.
datasets = dict(
    prefix="coco_2017",  # registers coco_2017_train and coco_2017_val
    root="",  # "" = $DETECTRON2_DATASETS/coco (detectron2's convention; "datasets/coco" if unset)
)
dataloader = model_zoo.get_config("common/data/coco.py").dataloader
dataloader.train.dataset.names = "coco_2017_train"
dataloader.test.dataset.names = "coco_2017_val"
dataloader.train.mapper.augmentations = L(lsj_train_augmentations)(image_size=image_size, min_scale=0.1, max_scale=2.0)
dataloader.train.mapper.image_format = "RGB"
dataloader.train.mapper.recompute_boxes = True  # boxes from the cropped masks
dataloader.train.total_batch_size = 64
dataloader.test.mapper.augmentations = L(test_augmentations)(image_size=image_size)

# ---------------------------------------------------------------- training
train = model_zoo.get_config("common/train.py").train
train.init_checkpoint = ""
train.max_iter = 184375
train.amp.enabled = True  # AMPTrainer on GPU; droppos detect falls back to SimpleTrainer on CPU
train.ddp.fp16_compression = True
train.device = "cuda"  # droppos detect switches to "cpu" when no GPU is visible
train.checkpointer.period = 5000
train.eval_period = 5000

lr_multiplier = L(warmup_step_schedule)(max_iter="${train.max_iter}", warmup_iters=250, fractions=[8 / 9, 26 / 27])

optimizer = model_zoo.get_config("common/optim.py").AdamW  # lr 1e-4, betas (0.9, 0.999), wd 0.1
optimizer.lr = 1e-4
optimizer.weight_decay = 0.1
optimizer.params.lr_factor_func = L(layer_decay)(num_layers="${model.backbone.net.depth}", decay_rate=0.7)
optimizer.params.overrides = {"pos_embed": {"weight_decay": 0.0}}

del net
