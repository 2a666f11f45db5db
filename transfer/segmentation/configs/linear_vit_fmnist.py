# The frozen dense probe (DINOv2's linear segmentation protocol) on the embedded Fashion-MNIST scenes:
# the ViT is frozen and a BatchNorm + 1x1 conv head (BNHead, droppos.transfer.segmentation.linear) is
# trained on its last block's patch features, through mmsegmentation's engine:
#   droppos segment --config linear_vit_fmnist --backbone runs/pretrain/encoder.pth --data data/ade20k ...
# linear4_vit_fmnist is the "boosted" variant: the last four blocks concatenated. No neck, no auxiliary
# head, no layer decay: only the head trains (AdamW, lr 1e-3, weight decay 1e-4 as DINOv2's linear
# heads), the backbone's features are those of eval mode, the last block's after the encoder's final
# norm (linear4: the three before it without it, as mmseg's MAE gives them; DINOv2 norms all four).
# The data pipeline and the 128 px whole-image test are upernet_vit_fmnist's; 400 iterations of
# batch 4 (minutes on a CPU: no backward through the backbone). metrics.json: protocol 'linear'.
_base_ = ['./upernet_vit_fmnist.py']

custom_imports = dict(imports=['droppos.transfer.segmentation.linear'], allow_failed_imports=False)
protocol = 'linear'
frozen_backbone = True

model = dict(
    backbone=dict(out_indices=[11], drop_path_rate=0.0, final_norm=True),  # the encoder's final norm on its last block
    neck=None,
    decode_head=dict(_delete_=True, type='BNHead', in_channels=[192], in_index=[0], input_transform='resize_concat',
                     channels=192, num_classes=10, dropout_ratio=0.0, norm_cfg=dict(type='SyncBN', requires_grad=True),
                     align_corners=False,
                     loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=None)
optim_wrapper = dict(_delete_=True, type='OptimWrapper',
                     optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=1e-4))
custom_hooks = [dict(type='FrozenBackboneHook')]
