# The frozen dense probe on the last four blocks of the ViT, concatenated (DINOv2's "boosted" linear
# head, without its multi-scale test): ./linear_vit_fmnist.py otherwise.
_base_ = ['./linear_vit_fmnist.py']

protocol = 'linear4'  # its own column in the results table

model = dict(
    backbone=dict(out_indices=[8, 9, 10, 11]),
    decode_head=dict(in_channels=[192, 192, 192, 192], in_index=[0, 1, 2, 3], channels=768))
