# UperNet on the embedded Fashion-MNIST scenes with a generic *plain* backbone (one stride: a ViT's
# patch grid; DINOv2, EVA-02, CLIP, BEiT, DeiT ... any timm model or plug-in):
#   droppos segment --config upernet_timm_plain_fmnist --backbone timm:<model>[:<weights>] ...
# Four evenly spaced blocks feed Feature2Pyramid (x4, x2, x1, x0.5: strides 4..32 for patch 16) and
# UPerHead, as upernet_vit_fmnist does for this project's ViT; `droppos segment` sets the heads'
# input channels from the backbone. The optimiser is plain AdamW (no layer decay: a generic model
# names its layers its own way); the rest is upernet_vit_fmnist's CPU recipe.
_base_ = ['./upernet_vit_fmnist.py']

custom_imports = dict(imports=['droppos.transfer.segmentation.generic'], allow_failed_imports=False)

model = dict(
    backbone=dict(_delete_=True, type='TimmGenericBackbone', source='timm:test_vit', img_size=(128, 128), maps=4,
                  drop_path_rate=0.1),
    neck=dict(embed_dim=64, rescales=[4, 2, 1, 0.5]),
    decode_head=dict(in_channels=[64, 64, 64, 64]),
    auxiliary_head=dict(in_channels=64))
optim_wrapper = dict(_delete_=True, type='OptimWrapper',
                     optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=0.05))
