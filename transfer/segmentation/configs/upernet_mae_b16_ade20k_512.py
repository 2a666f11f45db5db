# UperNet + ViT-B/16 (mmseg `MAE` backbone) on ADE20K, 512x512, 160k iterations.
#
# The published MAE/DropPos segmentation recipe, inherited from the config mmsegmentation ships
# (mmseg/.mim/configs/mae/mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py, resolved through
# mmengine's `mmseg::` prefix): 8 GPUs x 2 images, AdamW lr 1e-4 wd 0.05 with layer-wise lr decay
# 0.65 (LayerDecayOptimizerConstructor), linear warm-up 1500 iterations then poly (power 1),
# drop path 0.1, relative position bias on (zero-initialised) and layer scale 1.0, features of
# blocks 3/5/7/11 through Feature2Pyramid (x4, x2, x1, x0.5), UPerHead (768 channels) + FCN
# auxiliary head (weight 0.4), sliding-window test (512 crop, stride 341).
#
# Changes to the packaged file, all on purpose:
# - model.pretrained=None: weights come from `droppos segment --backbone`, which checks that every
#   backbone weight lands (mmseg's own Pretrained init loads with strict=False).
# - AMP is `AmpOptimWrapper` (mmseg 1.x ignores the `fp16` key, so it is cleared here);
#   `droppos segment` switches to the plain `OptimWrapper` on a machine without a GPU.
# - dataset_name / seed: recorded in metrics.json and the run folder.
_base_ = ['mmseg::mae/mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py']

dataset_name = 'ade20k'
data_root = 'data/ade/ADEChallengeData2016'

model = dict(
    pretrained=None,
    backbone=dict(
        img_size=(512, 512),
        patch_size=16,
        embed_dims=768,
        num_layers=12,
        num_heads=12,
        drop_path_rate=0.1,
        init_values=1.0,
        out_indices=[3, 5, 7, 11]),
    neck=dict(type='Feature2Pyramid', embed_dim=768, rescales=[4, 2, 1, 0.5]),
    decode_head=dict(type='UPerHead', in_channels=[768, 768, 768, 768], channels=768, num_classes=150),
    auxiliary_head=dict(type='FCNHead', in_channels=768, num_classes=150),
    test_cfg=dict(mode='slide', crop_size=(512, 512), stride=(341, 341)))

optim_wrapper = dict(
    type='AmpOptimWrapper',
    loss_scale='dynamic',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(num_layers=12, layer_decay_rate=0.65),
    constructor='LayerDecayOptimizerConstructor')
fp16 = None  # ignored by mmseg 1.x; AMP is the AmpOptimWrapper above

train_dataloader = dict(batch_size=2, dataset=dict(data_root=data_root))
val_dataloader = dict(batch_size=1, dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

randomness = dict(seed=0)
