# The frozen dense probe (./linear_vit_fmnist.py) with a generic backbone: timm:<model>[:<weights>] or a
# plug-in. A plain model gives its last block, a hierarchical one its deepest stage (maps=4 with last=True:
# the last four blocks or stages, concatenated); `droppos segment` sets the head's channels from the model.
_base_ = ['./linear_vit_fmnist.py']

custom_imports = dict(imports=['droppos.transfer.segmentation.linear', 'droppos.transfer.segmentation.generic'],
                      allow_failed_imports=False)

model = dict(
    backbone=dict(_delete_=True, type='TimmGenericBackbone', source='timm:test_vit', img_size=(128, 128), maps=1,
                  last=True, drop_path_rate=0.0))
