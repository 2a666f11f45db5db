"""Classification configs: options shared by every protocol, then one dataclass per protocol.

Defaults are the published recipes: fine-tuning as DropPos's ``scripts/finetune_base.sh`` (the MAE
recipe: 100 epochs, blr 1e-3 with layer decay 0.75, AdamW wd 0.05, drop path 0.1, RandAugment
``rand-m9-mstd0.5-inc1``, mixup 0.8, cutmix 1.0, label smoothing 0.1, random erasing 0.25, average
pooling + ``fc_norm``); linear probing as MAE's ``main_linprobe.py`` (90 epochs, LARS, blr 0.1, no
weight decay, 10 warm-up epochs, BatchNorm without affine + linear head on the [cls] token);
k-NN as DINO (k=20, temperature 0.07, cosine similarity).

Every field is a ``droppos classify <protocol> --flag``; ``--config FILE.yaml`` sets many at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from droppos.backbones.options import BackboneOptions
from droppos.utils.config import opt

PROTOCOLS = ("finetune", "linear", "knn")


@dataclass
class CommonConfig(BackboneOptions):
    # backbone: the fields of BackboneOptions (--backbone --from --arch --part --trust-pickle ... --name)
    # data
    data: str = opt("data/fmnist", "ImageFolder root with train/ and val/ (default: the embedded Fashion-MNIST, "
                                   "built on first use)")
    dataset: str = opt("", "dataset name for metrics.json (default: from dataset.json, else the folder name)")
    img_size: int | None = opt(None, "input size (default: the backbone's pretraining size); a multiple of the patch",
                               ge=1)
    crop_pct: float = opt(0.875, "evaluation: resize to img_size / crop_pct, then centre crop", gt=0.0, le=1.0)
    batch_size: int = opt(64, "images per process and step", ge=1)
    workers: int = opt(4, "data loader worker processes per process", ge=0)
    # system
    output: str = opt("runs/classify", "run folder: config, logs, checkpoints, metrics.json")
    device: str = opt("auto", "auto | cpu | cuda")
    precision: str = opt("auto", "auto = bf16 autocast on GPU, fp32 on CPU; fp16 = fp16 autocast with a gradient scaler "
                                 "(the official MAE / DropPos fine-tuning and linear probing)",
                         choices=["auto", "fp32", "bf16", "fp16"])
    seed: int = opt(0, "random seed (each process adds its rank)", ge=0)


@dataclass
class FinetuneConfig(CommonConfig):
    output: str = opt("runs/finetune", "run folder: config, logs, checkpoints, classifier.pth, metrics.json")
    epochs: int = opt(100, "training epochs", ge=1)
    warmup_epochs: float = opt(5.0, "linear warm-up epochs (then per-iteration cosine)", ge=0.0)
    blr: float = opt(1e-3, "base learning rate: lr = blr * effective_batch / 256", gt=0.0)
    lr: float | None = opt(None, "absolute learning rate (overrides blr)", gt=0.0)
    min_lr: float = opt(1e-6, "final learning rate of the cosine", ge=0.0)
    layer_decay: float = opt(0.75, "layer-wise lr decay (timm param_groups_layer_decay)", gt=0.0, le=1.0)
    weight_decay: float = opt(0.05, "AdamW weight decay (none on norms, biases, tokens, position embedding)", ge=0.0)
    drop_path: float = opt(0.1, "stochastic depth rate", ge=0.0, lt=1.0)
    clip_grad: float = opt(0.0, "gradient norm clipping (0 = off)", ge=0.0)
    smoothing: float = opt(0.1, "label smoothing", ge=0.0, lt=1.0)
    mixup: float = opt(0.8, "mixup alpha (0 = off)", ge=0.0)
    cutmix: float = opt(1.0, "cutmix alpha (0 = off)", ge=0.0)
    mixup_prob: float = opt(1.0, "probability of applying mixup or cutmix to a batch", ge=0.0, le=1.0)
    mixup_switch_prob: float = opt(0.5, "probability of cutmix instead of mixup when both are on", ge=0.0, le=1.0)
    min_scale: float = opt(0.08, "random resized crop: smallest crop, as a fraction of the image area (timm's "
                                 "--scale lower bound; 0.08 is the ImageNet recipe)", gt=0.0, le=1.0)
    aa: str = opt("rand-m9-mstd0.5-inc1", "timm auto-augment policy ('' = off)")
    reprob: float = opt(0.25, "random erasing probability", ge=0.0, le=1.0)
    global_pool: str = opt("avg", "'avg' (patch mean + fc_norm, MAE/DropPos) or 'token' ([cls] + norm)",
                           choices=["avg", "token"])
    train_pos_embed: bool = opt(True, "train the position embedding (MAE). The official DropPos fine-tuning "
                                      "freezes it by default (its fix_pos_emb flag reads the wrong way round)")
    head_init: str = opt("new", "'new' (MAE init) or 'source' (the backbone file's own classifier head)",
                         choices=["new", "source"])
    log_every: int = opt(20, "iterations between log lines", ge=1)


@dataclass
class LinearConfig(CommonConfig):
    output: str = opt("runs/linear", "run folder: config, logs, checkpoints, features.pth, metrics.json")
    batch_size: int = opt(512, "images (or cached features) per process and step", ge=1)
    epochs: int = opt(90, "training epochs", ge=1)
    warmup_epochs: float = opt(10.0, "linear warm-up epochs (then per-iteration cosine)", ge=0.0)
    blr: float = opt(0.1, "base learning rate: lr = blr * effective_batch / 256", gt=0.0)
    lr: float | None = opt(None, "absolute learning rate (overrides blr)", gt=0.0)
    min_lr: float = opt(0.0, "final learning rate of the cosine", ge=0.0)
    weight_decay: float = opt(0.0, "weight decay of the linear head", ge=0.0)
    optimizer: str = opt("lars", "LARS (MAE) or SGD with momentum 0.9", choices=["lars", "sgd"])
    cache_features: bool = opt(True, "extract frozen features once (evaluation transform, no augmentation) and "
                                     "train the head on them; false = MAE's random-resized-crop + flip every epoch")
    log_every: int = opt(20, "iterations between log lines", ge=1)


@dataclass
class KnnConfig(CommonConfig):
    output: str = opt("runs/knn", "run folder: config, log, metrics.json")
    batch_size: int = opt(256, "images per process and step of feature extraction", ge=1)
    k: int = opt(20, "neighbours", ge=1)
    temperature: float = opt(0.07, "temperature of the exp(similarity / T) vote weights", gt=0.0)


CONFIGS = {"finetune": FinetuneConfig, "linear": LinearConfig, "knn": KnnConfig}
