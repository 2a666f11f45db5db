# ADE20K UperNet, the MAE ViT-B/16 recipe's data and schedule (./upernet_mae_b16_ade20k_512.py) with
# a generic hierarchical backbone: ConvNeXt-B (timm:convnext_base) by default, whose four stages
# (strides 4..32) feed UPerHead directly as in mmseg's own ConvNeXt / Swin UperNet configs; any
# hierarchical timm model or plug-in through --backbone. No layer-wise lr decay: plain AdamW.
_base_ = ['./upernet_mae_b16_ade20k_512.py']

custom_imports = dict(imports=['droppos.transfer.segmentation.generic'], allow_failed_imports=False)

model = dict(
    backbone=dict(_delete_=True, type='TimmGenericBackbone', source='timm:convnext_base', img_size=(512, 512),
                  drop_path_rate=0.4),
    neck=None,
    decode_head=dict(in_channels=[128, 256, 512, 1024]),
    auxiliary_head=dict(in_channels=512))
optim_wrapper = dict(_delete_=True, type='AmpOptimWrapper',
                     optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05))
