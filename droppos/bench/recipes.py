"""The published recipes, field by field, each value with its source: what a recipe card compares against.

A recipe is named in a spec (``recipe:`` on a pretraining backbone or a task, per backbone under
``per_backbone:``). Its fields are spelled as this project's settings: a ``droppos pretrain`` /
``droppos classify`` option, or a dotted key of the detection LazyConfig / segmentation mmengine
config; ``effective_batch`` is images per optimiser step over all processes (the spec's ``gpus``).
Sources are files of the released code at the commits read here (DropPos 9cbc5fe, MAE main,
detectron2 main, mmsegmentation 1.x as installed) with their line, or a section of a paper.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DP = "Haochen-Wang409/DropPos@9cbc5fe "
MAE = "facebookresearch/mae@efb2a80 "
D2 = "facebookresearch/detectron2 "
VITDET_B = D2 + "projects/ViTDet/configs/COCO/mask_rcnn_vitdet_b_100ep.py"
VITDET_L = D2 + "projects/ViTDet/configs/COCO/mask_rcnn_vitdet_l_100ep.py"
MMSEG_MAE = "open-mmlab/mmsegmentation 1.x configs/mae/mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py"


@dataclass(frozen=True)
class Published:
    value: Any
    source: str
    #: other official sources that state another value for the same field (a spec following one of them
    #: must say which and why: the card shows them all)
    others: tuple[Published, ...] = ()

    def all(self) -> tuple[Published, ...]:
        return (self, *self.others)


@dataclass(frozen=True)
class Recipe:
    name: str
    kind: str  # pretrain | classify | detect | segment
    title: str
    fields: dict[str, Published]
    note: str = ""  # what the card says under the recipe's table
    protocol: str = ""  # classify: finetune | linear
    derived: bool = field(default=False)  # no published file: values carried over from another recipe


def _p(value, source: str, *others: Published) -> Published:
    return Published(value, source, tuple(others))


_DROPPOS_PRETRAIN_B = {
    "method": _p("droppos", DP + "scripts/pretrain_base.sh:7 (--drop_pos_type mae_pos_target)"),
    "model": _p("base", DP + "scripts/pretrain_base.sh:5 (DropPos_mae_vit_base_patch16_dec512d2b)"),
    "patch_size": _p(16, DP + "models_DropPos_mae.py:456"),
    "img_size": _p(224, DP + "scripts/pretrain_base.sh:15"),
    "decoder_dim": _p(512, DP + "models_DropPos_mae.py:457"),
    "decoder_depth": _p(2, DP + "models_DropPos_mae.py:457"),
    "decoder_heads": _p(16, DP + "models_DropPos_mae.py:457"),
    "mask_token": _p("param", DP + "scripts/pretrain_base.sh:8"),
    "pos_mask_ratio": _p(0.75, DP + "scripts/pretrain_base.sh:9"),
    "mask_ratio": _p(0.75, DP + "scripts/pretrain_base.sh:17"),
    "min_scale": _p(0.2, DP + "mask_transform.py:80 (RandomResizedCrop scale (0.2, 1.0), bicubic)"),
    "sigma": _p(1.0, DP + "scripts/pretrain_base.sh:11"),
    "sigma_decay": _p(True, DP + "scripts/pretrain_base.sh:12; engine_pretrain.py:44 (per epoch)"),
    "smooth_norm": _p("released", DP + "engine_pretrain.py:45 ((input_size // token_size)^2 cells) and :149 "
                                       "(w / w.sum(-1)); models_DropPos_mae.py:398 (first L columns)"),
    "attn_guide": _p(True, DP + "scripts/pretrain_base.sh:13"),
    "attn_tau": _p(0.1, DP + "models_DropPos_mae.py:239"),
    "conf_ignore": _p(False, DP + "main_pretrain.py:96 (not set by the script)"),
    "shuffle": _p(False, DP + "main_pretrain.py:86 (not set by the script)"),
    "multi_task": _p(False, DP + "scripts/pretrain_base.sh:7 (mae_pos_target, not multi_task)"),
    "epochs": _p(800, DP + "scripts/pretrain_base.sh:18"),
    "warmup_epochs": _p(10, DP + "scripts/pretrain_base.sh:19"),
    "blr": _p(1.5e-4, DP + "scripts/pretrain_base.sh:20"),
    "min_lr": _p(0.0, DP + "main_pretrain.py:117"),
    "weight_decay": _p(0.05, DP + "scripts/pretrain_base.sh:20"),
    "decay_exempt": _p("official", DP + "main_pretrain.py:259 (timm 0.3.2 add_weight_decay, no skip list)"),
    "clip_grad": _p(5.0, DP + "main_pretrain.py:108 (default, not changed by the script)"),
    "clip_mode": _p("official", DP + "util/utils.py:271 (every parameter on its own) via engine_pretrain.py:86"),
    "precision": _p("fp32", DP + "main_pretrain.py:104 (use_fp16 False; no script turns it on)"),
    # Three official statements disagree. The released engine cannot turn one into another by accumulation:
    # it steps the optimiser on every iteration and only zeroes the gradients every accum_iter
    # (engine_pretrain.py:88 and :95 against :98), so --accum_iter k is not a k-times larger batch.
    "effective_batch": _p(4096, "DropPos paper, Sec. 4 implementation details (ViT-B/16 pretrained on 64 GPUs) x "
                                + DP + "scripts/pretrain_base.sh:3 (64 per GPU)",
                          _p(2048, DP + "PRETRAIN.md:4 (32 GPUs, 4 nodes x 8) and :9 (--batch_size 64)"),
                          _p(512, DP + "scripts/pretrain_base.sh:1 (--nproc_per_node=8 --nnodes 1: 8 GPUs) and "
                                       ":3 (64 per GPU)")),
}

_DROPPOS_PRETRAIN_L = {
    **{k: Published(v.value, v.source.replace("pretrain_base.sh", "pretrain_large.sh"))
       for k, v in _DROPPOS_PRETRAIN_B.items() if k != "effective_batch"},  # the large script has the base script's layout, line for line
    "mask_token": _p("param", DP + "main_pretrain.py:83 (default; scripts/pretrain_large.sh:8 passes --use_mask_token "
                              "instead, which is not an option)"),
    "patch_size": _p(16, DP + "models_DropPos_mae.py:477"),
    "model": _p("large", DP + "scripts/pretrain_large.sh:5 (DropPos_mae_vit_large_patch16_dec512d2b)"),
    "decoder_dim": _p(512, DP + "models_DropPos_mae.py:478"),
    "decoder_depth": _p(2, DP + "models_DropPos_mae.py:478"),
    "decoder_heads": _p(16, DP + "models_DropPos_mae.py:478"),
    "warmup_epochs": _p(40, DP + "scripts/pretrain_large.sh:19"),
    "effective_batch": _p(4096, "DropPos paper, Sec. 4 implementation details (ViT-L/16 pretrained on 32 GPUs) x "
                                + DP + "scripts/pretrain_large.sh:3 (128 per GPU)",
                          _p(1024, DP + "scripts/pretrain_large.sh:1 (--nproc_per_node=8 --nnodes 1: 8 GPUs) and "
                                        ":3 (128 per GPU)")),
}

_FINETUNE_COMMON = {
    "warmup_epochs": _p(5, MAE + "main_finetune.py:76"),
    "weight_decay": _p(0.05, MAE + "FINETUNE.md:73"),
    "min_lr": _p(1e-6, MAE + "main_finetune.py:73"),
    "smoothing": _p(0.1, MAE + "main_finetune.py:84"),
    "aa": _p("rand-m9-mstd0.5-inc1", MAE + "main_finetune.py:82"),
    "reprob": _p(0.25, MAE + "FINETUNE.md:73"),
    "mixup": _p(0.8, MAE + "FINETUNE.md:73"),
    "cutmix": _p(1.0, MAE + "FINETUNE.md:73"),
    "min_scale": _p(0.08, MAE + "util/datasets.py (timm create_transform, default scale (0.08, 1))"),
    "global_pool": _p("avg", MAE + "main_finetune.py:115 (global_pool True)"),
    "clip_grad": _p(0.0, MAE + "main_finetune.py:61 (None: no clipping)"),
    "train_pos_embed": _p(True, MAE + "models_vit.py (timm's learnable pos_embed, loaded from the checkpoint)"),
    "effective_batch": _p(1024, MAE + "FINETUNE.md:77 (32 per GPU x 32 GPUs)"),
    "precision": _p("fp16", MAE + "engine_finetune.py:55 (torch.cuda.amp.autocast: fp16) with a loss scaler, "
                            "main_finetune.py:288 (NativeScaler)"),
}

_MAE_FINETUNE_B = {
    **_FINETUNE_COMMON,
    "epochs": _p(100, MAE + "FINETUNE.md:71"),
    "blr": _p(5e-4, MAE + "FINETUNE.md:72"),
    "layer_decay": _p(0.65, MAE + "FINETUNE.md:72"),
    "drop_path": _p(0.1, MAE + "FINETUNE.md:73"),
}

_MAE_FINETUNE_L = {
    **_FINETUNE_COMMON,
    "epochs": _p(50, MAE + "FINETUNE.md:90"),
    "blr": _p(1e-3, MAE + "FINETUNE.md:91"),
    "layer_decay": _p(0.75, MAE + "FINETUNE.md:91"),
    "drop_path": _p(0.2, MAE + "FINETUNE.md:92"),
    "effective_batch": _p(1024, MAE + "FINETUNE.md:87 (--batch_size 32) and :86 (--nodes 4, 8 GPUs each as the "
                                      "ViT-B note at :77 says)"),
}

_DROPPOS_FINETUNE_B = {
    **_FINETUNE_COMMON,
    "epochs": _p(100, DP + "scripts/finetune_base.sh:8"),
    "warmup_epochs": _p(5, DP + "scripts/finetune_base.sh:9"),
    "blr": _p(1e-3, DP + "scripts/finetune_base.sh:10"),
    "layer_decay": _p(0.75, DP + "scripts/finetune_base.sh:10"),
    "weight_decay": _p(0.05, DP + "scripts/finetune_base.sh:10"),
    "drop_path": _p(0.1, DP + "scripts/finetune_base.sh:11"),
    "reprob": _p(0.25, DP + "scripts/finetune_base.sh:11"),
    "mixup": _p(0.8, DP + "scripts/finetune_base.sh:11"),
    "cutmix": _p(1.0, DP + "scripts/finetune_base.sh:11"),
    "min_lr": _p(1e-6, DP + "main_finetune.py:80"),
    "smoothing": _p(0.1, DP + "main_finetune.py:91"),
    "aa": _p("rand-m9-mstd0.5-inc1", DP + "main_finetune.py:89"),
    "min_scale": _p(0.08, DP + "util/datasets.py:65 (timm create_transform, default scale (0.08, 1))"),
    "global_pool": _p("avg", DP + "main_finetune.py:122"),
    "clip_grad": _p(0.0, DP + "main_finetune.py:68 (None: no clipping)"),
    "train_pos_embed": _p(False, DP + "models_vit.py:34 (fix_pos_emb False freezes the sin-cos table)"),
    "precision": _p("fp16", DP + "engine_finetune.py:59 (torch.cuda.amp.autocast: fp16) with a loss scaler, "
                            "main_finetune.py:312 (NativeScaler)"),
    "effective_batch": _p(1024, "DropPos paper, Sec. 4 (fine-tuning ViT-B/16 on 32 GPUs) x "
                                + DP + "scripts/finetune_base.sh:3 (32 per GPU)"),
}

_DROPPOS_FINETUNE_L = {
    **{k: Published(v.value, v.source.replace("finetune_base.sh", "finetune_large.sh"))
       for k, v in _DROPPOS_FINETUNE_B.items()},  # the same lines of the ViT-L script
    "epochs": _p(50, DP + "scripts/finetune_large.sh:8"),
    "effective_batch": _p(1024, "DropPos paper, Sec. 4 (fine-tuning ViT-L/16 on 16 GPUs) x "
                                + DP + "scripts/finetune_large.sh:3 (64 per GPU)"),
}

_MAE_LINEAR_B = {
    "epochs": _p(90, MAE + "FINETUNE.md:145"),
    "warmup_epochs": _p(10, MAE + "main_linprobe.py:66"),
    "blr": _p(0.1, MAE + "FINETUNE.md:146"),
    "min_lr": _p(0.0, MAE + "main_linprobe.py:63"),
    "weight_decay": _p(0.0, MAE + "FINETUNE.md:147"),
    "optimizer": _p("lars", MAE + "main_linprobe.py:252"),
    "cache_features": _p(False, MAE + "main_linprobe.py:133 (RandomResizedCrop + flip every epoch)"),
    "precision": _p("fp16", MAE + "engine_finetune.py:55 (torch.cuda.amp.autocast: fp16; main_linprobe.py trains "
                            "with engine_finetune's loop) with a loss scaler, main_linprobe.py:254 (NativeScaler)"),
    "effective_batch": _p(16384, MAE + "FINETUNE.md:150 (512 per GPU x 32 GPUs)"),
}

_MAE_LINEAR_L = {**_MAE_LINEAR_B, "epochs": _p(50, MAE + "FINETUNE.md:155")}

_VITDET_B = {
    "train.max_iter": _p(184375, VITDET_B + ":25"),
    "optimizer.lr": _p(1e-4, D2 + "configs/common/optim.py:25"),
    "optimizer.betas": _p([0.9, 0.999], D2 + "configs/common/optim.py:26"),
    "optimizer.weight_decay": _p(0.1, D2 + "configs/common/optim.py:27"),
    "optimizer.params.lr_factor_func.decay_rate": _p(0.7, VITDET_B + ":39"),
    "lr_multiplier.warmup_iters": _p(250, VITDET_B + ":33"),
    "model.backbone.net.drop_path_rate": _p(0.1, D2 + "configs/common/models/mask_rcnn_vitdet.py:15 (dp; drop_path_rate=dp at line 24)"),
    "model.backbone.net.window_size": _p(14, D2 + "configs/common/models/mask_rcnn_vitdet.py:25"),
    "model.backbone.square_pad": _p(1024, D2 + "configs/common/models/mask_rcnn_vitdet.py:49"),
    "train.amp.enabled": _p(True, VITDET_B + ":16"),
    "effective_batch": _p(64, D2 + "projects/ViTDet/configs/common/coco_loader_lsj.py:16"),
}

_VITDET_L = {
    **_VITDET_B,
    "model.backbone.net.embed_dim": _p(1024, VITDET_L + ":16"),
    "model.backbone.net.depth": _p(24, VITDET_L + ":17"),
    "model.backbone.net.num_heads": _p(16, VITDET_L + ":18"),
    "model.backbone.net.drop_path_rate": _p(0.4, VITDET_L + ":19"),
    "optimizer.params.lr_factor_func.decay_rate": _p(0.8, VITDET_L + ":25"),
}

_UPERNET_B = {
    "optim_wrapper.optimizer.lr": _p(1e-4, MMSEG_MAE + ":31"),
    "optim_wrapper.optimizer.betas": _p([0.9, 0.999], MMSEG_MAE + ":31"),
    "optim_wrapper.optimizer.weight_decay": _p(0.05, MMSEG_MAE + ":31"),
    "optim_wrapper.paramwise_cfg.layer_decay_rate": _p(0.65, MMSEG_MAE + ":32"),
    "optim_wrapper.type": _p("OptimWrapper", MMSEG_MAE + ":29 (its fp16= at :49 is ignored by mmseg 1.x)"),
    "model.backbone.drop_path_rate": _p(0.1, MMSEG_MAE + ":19"),
    "crop_size": _p([512, 512], MMSEG_MAE + ":5"),
    "model.test_cfg.mode": _p("slide", MMSEG_MAE + ":25"),
    "model.test_cfg.crop_size": _p([512, 512], MMSEG_MAE + ":25"),
    "model.test_cfg.stride": _p([341, 341], MMSEG_MAE + ":25 (mmsegmentation 1.2.2, the pinned release)"),
    "train_cfg.max_iters": _p(160000, "mmsegmentation 1.x configs/_base_/schedules/schedule_160k.py:16"),
    "param_scheduler.0.end": _p(1500, MMSEG_MAE + ":37"),
    "param_scheduler.1.end": _p(160000, MMSEG_MAE + ":43"),
    "effective_batch": _p(16, MMSEG_MAE + ":52 (2 per GPU x 8 GPUs, the file's 8xb2)"),
}

_UPERNET_L = {
    **_UPERNET_B,
    "model.backbone.embed_dims": _p(1024, "ViT-L/16 architecture (ViT paper, Dosovitskiy et al. 2021, Table 1)"),
    "model.backbone.num_layers": _p(24, "ViT-L/16 architecture (ViT paper, Dosovitskiy et al. 2021, Table 1)"),
}

RECIPES: dict[str, Recipe] = {r.name: r for r in [
    Recipe("droppos_pretrain_b16", "pretrain", "DropPos ViT-B/16 pretraining, 800 epochs (released code)",
           _DROPPOS_PRETRAIN_B,
           note="scripts/pretrain_base.sh:10 also passes --pos_weight 0.05, used only by multi_task (off)."),
    Recipe("droppos_pretrain_l16", "pretrain", "DropPos ViT-L/16 pretraining, 800 epochs (released code)",
           _DROPPOS_PRETRAIN_L,
           note="scripts/pretrain_large.sh:8 passes --use_mask_token, which main_pretrain.py does not define: "
                "the released ViT-L script stops at argument parsing; the values are read without it. Its "
                "--pos_weight 0.1 (:10) is used only by multi_task (off)."),
    Recipe("droppos_finetune_b16", "classify", "DropPos ViT-B/16 ImageNet-1K fine-tuning (scripts/finetune_base.sh)",
           _DROPPOS_FINETUNE_B, protocol="finetune"),
    Recipe("droppos_finetune_l16", "classify", "DropPos ViT-L/16 ImageNet-1K fine-tuning (scripts/finetune_large.sh)",
           _DROPPOS_FINETUNE_L, protocol="finetune"),
    Recipe("mae_finetune_b16", "classify", "MAE ViT-B/16 ImageNet-1K fine-tuning (FINETUNE.md)", _MAE_FINETUNE_B,
           protocol="finetune"),
    Recipe("mae_finetune_l16", "classify", "MAE ViT-L/16 ImageNet-1K fine-tuning (FINETUNE.md)", _MAE_FINETUNE_L,
           protocol="finetune"),
    Recipe("mae_linear_b16", "classify", "MAE linear probing, ViT-B/16 (FINETUNE.md, main_linprobe.py)",
           _MAE_LINEAR_B, protocol="linear"),
    Recipe("mae_linear_l16", "classify", "MAE linear probing, ViT-L/16 (FINETUNE.md: 50 epochs suffice)",
           _MAE_LINEAR_L, protocol="linear"),
    Recipe("vitdet_b_100ep", "detect", "ViTDet Mask R-CNN ViT-B, COCO 100 epochs (detectron2)", _VITDET_B),
    Recipe("vitdet_l_100ep", "detect", "ViTDet Mask R-CNN ViT-L, COCO 100 epochs (detectron2)", _VITDET_L),
    Recipe("upernet_mae_b16", "segment", "UperNet ViT-B/16, ADE20K 160k (mmsegmentation's MAE config)", _UPERNET_B),
    Recipe("upernet_mae_l16", "segment", "UperNet ViT-L/16, ADE20K 160k (derived: no published config)",
           _UPERNET_L, derived=True,
           note="mmsegmentation ships no MAE ViT-L config and the MAE paper does not list its ViT-L "
                "segmentation hyper-parameters: every value but the architecture is the B recipe's."),
]}


def recipe(name: str) -> Recipe:
    from droppos.errors import UserError

    if name not in RECIPES:
        raise UserError(f"no published recipe named {name!r}; known: {', '.join(sorted(RECIPES))}")
    return RECIPES[name]
