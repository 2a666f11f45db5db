# UperNet on the embedded Fashion-MNIST scenes with a generic *hierarchical* backbone (stages at
# strides 4, 8, 16, 32: Swin, ConvNeXt, ResNet ... any timm model or plug-in):
#   droppos segment --config upernet_timm_fpn_fmnist --backbone timm:<model>[:<weights>] ...
# The stages feed UPerHead directly (no neck), as mmseg's Swin and ConvNeXt UperNet configs do;
# `droppos segment` sets the heads' input channels from the backbone. Plain AdamW (no layer decay);
# the rest is upernet_vit_fmnist's CPU recipe.
_base_ = ['./upernet_vit_fmnist.py']

custom_imports = dict(imports=['droppos.transfer.segmentation.generic'], allow_failed_imports=False)

model = dict(
    backbone=dict(_delete_=True, type='TimmGenericBackbone', source='timm:test_convnext', img_size=(128, 128),
                  drop_path_rate=0.1),
    neck=None,
    decode_head=dict(in_channels=[24, 32, 48, 64]),
    auxiliary_head=dict(in_channels=48))
optim_wrapper = dict(_delete_=True, type='OptimWrapper',
                     optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=0.05))
