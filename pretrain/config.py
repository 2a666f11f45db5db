"""Pretraining configuration: one flat dataclass, every option with a one-line help.

Defaults are the official DropPos ViT-B/16 recipe (800 epochs in the paper; 200 here as the
shorter published setting), with ``method=mae`` switching to MAE's decoder. Every field is a
``droppos pretrain --flag``; ``--config FILE.yaml`` sets many at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from droppos.errors import UserError
from droppos.utils.config import opt

#: defaults that differ per method (DeiT-B for supervised: lr 5e-4 at batch 512, 300 epochs, 5 warm-up
#: epochs, drop path 0.1, crops of 0.08-1); given options and config files override them
METHOD_DEFAULTS: dict[str, dict] = {
    "supervised": {"blr": 2.5e-4, "epochs": 300, "warmup_epochs": 5.0, "weight_decay": 0.05, "drop_path": 0.1,
                   "min_scale": 0.08},
}


@dataclass
class PretrainConfig:
    # data and run folder
    data: str = opt("data/fmnist", "ImageFolder root (its train/ subfolder is used when present)")
    output: str = opt("runs/pretrain", "run folder: config, logs, checkpoints, encoder weights")
    name: str | None = opt(None, "the backbone's name, its row in the results table (default: the readable id that a "
                                 "transfer run of OUTPUT/encoder.pth gives it)")
    # method
    method: str = opt("droppos", "pretraining method (supervised: the DeiT recipe on a labelled ImageFolder)",
                      choices=["droppos", "mae", "supervised"])
    model: str = opt("base", "ViT size", choices=["tiny", "small", "base", "large", "huge"])
    patch_size: int = opt(16, "patch size in pixels", ge=1)
    img_size: int = opt(224, "input size in pixels (a multiple of patch_size)", ge=1)
    min_scale: float = opt(0.2, "random resized crop: smallest crop, as a fraction of the image area (official "
                                "0.2, the release's mask_transform.py:80; supervised default 0.08, DeiT)", gt=0.0, le=1.0)
    mask_ratio: float = opt(0.75, "fraction of patches removed before the encoder", gt=0.0, lt=1.0)
    decoder_dim: int = opt(512, "decoder width", ge=1)
    decoder_depth: int | None = opt(None, "decoder blocks (default: 2 for droppos, 8 for mae)", ge=1)
    decoder_heads: int = opt(16, "decoder attention heads", ge=1)
    norm_pix_loss: bool = opt(True, "MAE pixel target normalised per patch (mae, droppos multi_task)")
    # DropPos knobs (ignored by mae: see method_kwargs)
    pos_mask_ratio: float = opt(0.75, "droppos: fraction of visible patches whose position is dropped", gt=0.0, lt=1.0)
    mask_token: str = opt("param", "droppos: position mask token", choices=["param", "zeros", "wrong_pos"])
    sigma: float = opt(1.0, "droppos: Gaussian position smoothing std in patches (0 = hard labels)", ge=0.0)
    sigma_decay: bool = opt(True, "droppos: decay sigma linearly to 0 over the epochs (official: per epoch)")
    smooth_norm: str = opt("row", "droppos: smoothing target: 'row' (rows sum to 1), 'official' (the released column "
                                  "division), 'released' (the released targets exactly: column division on the "
                                  "(img_size // patches per side)-wide grid, 16 x 16 for ViT-B/16 at 224 px)",
                           choices=["row", "official", "released"])
    attn_guide: bool = opt(True, "droppos: attentive reconstruction (weights from a full-image [cls] similarity)")
    attn_tau: float = opt(0.1, "droppos: temperature of the attentive weights", gt=0.0)
    conf_ignore: bool = opt(False, "droppos: ignore tokens already placed above the target's peak probability")
    shuffle: bool = opt(False, "droppos: shuffle token order before the encoder")
    multi_task: bool = opt(False, "droppos: add MAE's pixel loss (loss = pos_weight * pos + mae)")
    pos_weight: float = opt(1.0, "droppos: weight of the position loss in multi_task mode", ge=0.0)
    aux_mask_token: str = opt("trained", "droppos multi_task: the pixel decoder's mask token is 'trained', or "
                                         "'official' (the release: frozen unless --mask-token param)",
                              choices=["trained", "official"])
    # supervised (DeiT recipe; ignored by droppos and mae)
    smoothing: float = opt(0.1, "supervised: label smoothing", ge=0.0, lt=1.0)
    mixup: float = opt(0.8, "supervised: mixup alpha (0 = off)", ge=0.0)
    cutmix: float = opt(1.0, "supervised: cutmix alpha (0 = off)", ge=0.0)
    aa: str = opt("rand-m9-mstd0.5-inc1", "supervised: timm auto-augment policy ('' = off)")
    reprob: float = opt(0.25, "supervised: random erasing probability", ge=0.0, le=1.0)
    drop_path: float = opt(0.0, "stochastic depth of the encoder (supervised default 0.1, DeiT-B)", ge=0.0, lt=1.0)
    # optimisation
    epochs: int = opt(200, "training epochs", ge=1)
    warmup_epochs: float = opt(10.0, "linear warm-up epochs (then per-iteration cosine)", ge=0.0)
    batch_size: int = opt(64, "images per process per iteration", ge=1)
    accum_iter: int = opt(1, "gradient accumulation steps (effective batch = batch * accum * processes)", ge=1)
    blr: float = opt(1.5e-4, "base learning rate: lr = blr * effective_batch / 256", gt=0.0)
    lr: float | None = opt(None, "absolute learning rate (overrides blr)", gt=0.0)
    min_lr: float = opt(0.0, "final learning rate of the cosine", ge=0.0)
    weight_decay: float = opt(0.05, "AdamW weight decay (what it skips: --decay-exempt)", ge=0.0)
    decay_exempt: str = opt("tokens", "parameters without weight decay: 'tokens' (1-D parameters, biases, tokens, "
                                      "position embeddings) or 'official' (the release, timm 0.3.2 add_weight_decay: "
                                      "1-D parameters and biases only, so [cls] and the position mask token decay)",
                            choices=["tokens", "official"])
    clip_grad: float = opt(0.0, "gradient clipping threshold (0 = off)", ge=0.0)
    clip_mode: str = opt("global", "'global' norm, or 'official': every parameter's gradient to norm <= --clip-grad "
                                   "on its own, as the release's util/utils.py clip_gradients (vectorised)",
                         choices=["global", "official"])
    precision: str = opt("auto", "auto = bf16 autocast on GPU, fp32 on CPU", choices=["auto", "fp32", "bf16", "fp16"])
    compile: bool = opt(False, "torch.compile the model")
    # system
    data_backend: str = opt("torch", "input pipeline: 'torch' (PIL, float in the workers: the official one), 'fast' "
                                     "(libjpeg-turbo decodes the crop window only, uint8 batches, flip and "
                                     "normalisation on the device), "
                                     "'dali' (NVIDIA DALI: only the crop window decoded, on the GPU)",
                            choices=["torch", "fast", "dali"])
    device: str = opt("auto", "auto | cpu | cuda")
    workers: int = opt(4, "data loader worker processes per process", ge=0)
    seed: int = opt(0, "random seed (each process adds its rank)", ge=0)
    log_every: int = opt(20, "iterations between log lines (the only host syncs)", ge=1)
    save_every_iters: int = opt(0, "also checkpoint every N optimiser steps (0 = at epoch ends only)", ge=0)
    keep_every_epochs: int = opt(0, "keep a numbered encoder snapshot every N epochs (0 = final only)", ge=0)
    stop_after: int = opt(0, "stop this process after N optimiser steps; the run stays resumable (0 = off)", ge=0)

    def resolved_decoder_depth(self) -> int:
        if self.decoder_depth is not None:
            return self.decoder_depth
        return 2 if self.method == "droppos" else 8

    def arch(self) -> dict:
        from droppos.models.vit import vit_arch_args

        return vit_arch_args(self.model, patch_size=self.patch_size, img_size=self.img_size)

    def validate(self) -> None:
        """One-line errors naming the option and the fix (types and ranges: the fields' own bounds)."""
        from droppos.utils.config import check_fields

        check_fields(self)
        if self.decoder_dim % self.decoder_heads:
            raise UserError(f"--decoder-dim {self.decoder_dim} is not divisible by --decoder-heads {self.decoder_heads}; "
                            "choose heads that divide the width")
        if self.img_size % self.patch_size:
            raise UserError(f"--img-size {self.img_size} is not divisible by --patch-size {self.patch_size}; "
                             f"use a multiple of {self.patch_size}")
        for name in ("mask_ratio", "pos_mask_ratio"):
            v = getattr(self, name)
            if not 0.0 < v < 1.0:
                raise UserError(f"--{name.replace('_', '-')} must be in (0, 1), got {v}")
        for name in ("epochs", "batch_size", "accum_iter"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be >= 1")
        if self.warmup_epochs < 0 or self.warmup_epochs > self.epochs:
            raise UserError(f"--warmup-epochs must be in [0, epochs={self.epochs}], got {self.warmup_epochs}")
