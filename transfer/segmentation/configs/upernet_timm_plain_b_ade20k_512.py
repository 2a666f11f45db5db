# ADE20K UperNet, the MAE ViT-B/16 recipe (./upernet_mae_b16_ade20k_512.py: 512x512, 160k iterations,
# batch 16, AdamW 1e-4, warm-up then poly, Feature2Pyramid + UPerHead + FCN auxiliary head) with a
# generic plain backbone: DINOv2-B/14 with registers (timm:vit_base_patch14_reg4_dinov2) by default,
# any plain timm model or plug-in through --backbone. Four evenly spaced blocks (3/6/9/12) feed the
# pyramid; at 512 px a patch-14 model gives 36 x 36 maps (the pyramid's x4..x0.5 then spans 144..18).
# No layer-wise lr decay (a generic model names its layers its own way): plain AdamW.
_base_ = ['./upernet_mae_b16_ade20k_512.py']

custom_imports = dict(imports=['droppos.transfer.segmentation.generic'], allow_failed_imports=False)

model = dict(
    backbone=dict(_delete_=True, type='TimmGenericBackbone', source='timm:vit_base_patch14_reg4_dinov2',
                  img_size=(512, 512), maps=4, drop_path_rate=0.1),
    neck=dict(embed_dim=768, rescales=[4, 2, 1, 0.5]),
    decode_head=dict(in_channels=[768, 768, 768, 768]),
    auxiliary_head=dict(in_channels=768))
optim_wrapper = dict(_delete_=True, type='AmpOptimWrapper',
                     optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05))
