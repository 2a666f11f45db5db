# UperNet + ViT-L/16 (mmseg `MAE` backbone) on ADE20K, 512x512, 160k iterations.
#
# The ViT-B/16 recipe (./upernet_mae_b16_ade20k_512.py) with the ViT-L/16 architecture: 1024 wide,
# 24 blocks, 16 heads, features of blocks 7/11/15/23, UPerHead with 1024 channels (as mmseg's
# BEiT-L config). Learning rate, layer decay 0.65, drop path 0.1 and schedule are the B recipe:
# mmsegmentation ships no MAE ViT-L config, and the MAE/DropPos papers tune the rate per entry.
_base_ = ['./upernet_mae_b16_ade20k_512.py']

model = dict(
    backbone=dict(embed_dims=1024, num_layers=24, num_heads=16, out_indices=[7, 11, 15, 23]),
    neck=dict(embed_dim=1024),
    decode_head=dict(in_channels=[1024, 1024, 1024, 1024], channels=1024),
    auxiliary_head=dict(in_channels=1024))

optim_wrapper = dict(paramwise_cfg=dict(num_layers=24))
