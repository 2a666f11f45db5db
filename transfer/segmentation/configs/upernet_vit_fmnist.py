# UperNet + a tiny ViT on the embedded default: Fashion-MNIST scenes in ADE20K format, 128x128,
# 10 classes (`droppos data ade20k --out data/ade20k_fmnist`). Trains on a CPU in minutes.
#
# The ViT-B/16 ADE20K recipe (./upernet_mae_b16_ade20k_512.py: AdamW, layer decay 0.65, linear
# warm-up then poly, drop path 0.1, Feature2Pyramid, UPerHead + FCN auxiliary head) with:
# - backbone: ViT-Tiny/16 (192 wide, 12 blocks, 3 heads, features of blocks 3/5/7/11) at 128 px,
#   the size of the canvases; decode heads narrowed to 64 / 32 channels (UPerHead's 3x3 convs at
#   the x4 level dominate the cost otherwise);
# - data: `BaseSegDataset` with the ten Fashion-MNIST classes (mmseg's ADE20KDataset only accepts
#   subsets of ADE20K's 150 names), reduce_zero_label=True as ADE20K: label 0 (background) is
#   ignored, label k is class k-1;
# - schedule: 400 iterations of batch 4 (about 5 epochs of the 300 training scenes), lr 1e-3 (the
#   recipe's 1e-4 is for 160k iterations: at 400, from scratch, it reached 5.5 mIoU, 1e-3 9.4),
#   warm-up 40, validation and checkpoint at the end, whole-image test (the canvas is one crop).
# Another pretrained architecture: override the backbone (a mismatching --backbone prints the exact
# options), e.g. the ViT-tiny/8 of pretrain/configs/fmnist_tiny.yaml (16 x 16 tokens, about 2.5x
# the cost; the neck rescaled to keep strides 4..32):
#   --cfg-options model.backbone.patch_size=8 model.neck.rescales=[2,1,0.5,0.25]
# or a ViT-Small/16:
#   --cfg-options model.backbone.embed_dims=384 model.backbone.num_heads=6 model.neck.embed_dim=384 \
#                 model.decode_head.in_channels=[384,384,384,384] model.auxiliary_head.in_channels=384
_base_ = ['./upernet_mae_b16_ade20k_512.py']

dataset_name = 'fmnist'
data_root = 'data/ade20k_fmnist'
crop_size = (128, 128)
classes = ('t-shirt_top', 'trouser', 'pullover', 'dress', 'coat',
           'sandal', 'shirt', 'sneaker', 'bag', 'ankle_boot')  # droppos.tools.data.idx.CLASSES
palette = [[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189],
           [140, 86, 75], [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207]]
max_iters = 400

model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(img_size=crop_size, patch_size=16, embed_dims=192, num_layers=12, num_heads=3,
                  out_indices=[3, 5, 7, 11]),
    neck=dict(embed_dim=192),
    decode_head=dict(in_channels=[192, 192, 192, 192], channels=64, num_classes=10),
    auxiliary_head=dict(in_channels=192, channels=32, num_classes=10),
    test_cfg=dict(mode='whole'))  # crop_size/stride are unused in 'whole' mode

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=crop_size, ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
dataset = dict(
    type='BaseSegDataset',
    data_root=data_root,
    metainfo=dict(classes=classes, palette=palette),
    img_suffix='.jpg',
    seg_map_suffix='.png',
    reduce_zero_label=True)
train_dataloader = dict(
    batch_size=4, num_workers=2, persistent_workers=True,
    dataset=dict(dataset, data_prefix=dict(img_path='images/training', seg_map_path='annotations/training'),
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8, num_workers=2, persistent_workers=True,
    dataset=dict(dataset, data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation'),
                 pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=40),
    dict(type='PolyLR', eta_min=0.0, power=1.0, by_epoch=False, begin=40, end=max_iters),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=20, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters, max_keep_ckpts=1))
