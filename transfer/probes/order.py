"""Order sensitivity: how much a frozen feature and a classifier's accuracy change when the patches
of an image are shuffled.

Each val image gets one random permutation π of its L patches (seeded). With ``x_i`` the content
of patch i and ``p_i`` the position embedding of cell i (see :mod:`.tokens`):

* ``cos_dist`` (headline): mean cosine distance ``1 - cos(f(x_i + p_i), f(x_π(i) + p_i))`` of the
  frozen ``--pool`` feature (normed [cls] or mean of the normed patch tokens) between the image
  and its patches reassembled at random, the position embeddings staying on the grid (the
  content moves). Near 0: the backbone treats the image as a bag of patches; large: where a
  patch sits changes the representation.
* ``cos_dist_images`` (scale) and ``cos_dist_rel``: the mean cosine distance between the
  features of two different val images (each paired with another by a seeded random
  permutation), and ``cos_dist / cos_dist_images``: how far shuffling moves the feature relative
  to the spread of the backbone's features (raw cosine distances of backbones whose features
  share a large common component are all small; the ratio compares backbones).
* ``cos_dist_token_order`` (control): the same with the tokens permuted *after* adding their
  position embeddings, ``x_π(i) + p_π(i)`` (each patch keeps its position, only the sequence
  order changes). A ViT is invariant to this: 0 up to float rounding.
* ``acc`` / ``acc_shuffled`` / ``acc_drop``: top-1 (percent) of a classifier on the val images
  and on the same images with their content shuffled as for ``cos_dist``; ``acc_drop = acc -
  acc_shuffled`` (percentage points). The classifier is either the fine-tuned model of a
  ``droppos classify finetune`` run (``--classifier``: its own weights, position embedding,
  pooling and input size) or, by default, a linear classifier trained here on the frozen
  ``--pool`` features of unshuffled train images. ``metrics.json`` says which (``classifier``).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from droppos.transfer.classification.common import Setup
from droppos.transfer.classification.errors import InputError
from droppos.transfer.classification.features import pool_tokens

from . import tokens
from .common import features, finish, image_subset
from .config import OrderConfig
from .head import predict, train_head


class Views:
    """``fn(model, images)`` for ``extract_features``: the same per-image permutations for every view.

    ``out(model, tokens_out) -> (B, ...)`` maps the encoder output of one view (N, 1 + L, D) to what
    is kept; the call returns (B, len(views), ...). Permutations come from a generator seeded
    once, so a pass over an unshuffled loader is reproducible.
    """

    def __init__(self, views: tuple[str, ...], out, seed: int):
        self.views, self.out = views, out
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, model, imgs: torch.Tensor) -> torch.Tensor:
        perm = tokens.permutations(imgs.shape[0], model.num_patches, self.generator, imgs.device)
        return torch.stack([self.out(model, tokens.encode(model, imgs, v, perm)) for v in self.views], dim=1)


def cos_dist(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean cosine distance of rows of a, b: (N, D)."""
    return (1.0 - F.cosine_similarity(a.double(), b.double(), dim=-1)).mean().item()


def between_images(f: torch.Tensor, seed: int) -> float:
    """Mean cosine distance between rows of f: (N, D) and other rows (a seeded random pairing, no self-pairs)."""
    other = torch.randperm(f.shape[0], generator=torch.Generator().manual_seed(seed))
    keep = other != torch.arange(f.shape[0])
    if not keep.any():
        raise InputError(f"{f.shape[0]} val image(s): the order probe needs at least two; raise --val-images")
    return cos_dist(f[keep], f[other[keep]])


def top1(pred: torch.Tensor, target: torch.Tensor) -> float:
    return 100.0 * (pred == target).float().mean().item()


def classifier_file(path: str) -> Path:
    """``classifier.pth`` of a fine-tuning run folder, or the file itself."""
    p = Path(path)
    f = p / "classifier.pth" if p.is_dir() else p
    if not f.is_file():
        raise InputError(f"{f}: no such classifier file; pass the run folder of a finished `droppos classify "
                         "finetune` (it holds classifier.pth) or leave --classifier empty for a linear probe")
    return f


def finetuned_accuracy(s: Setup, path: str) -> tuple[dict[str, float], dict]:
    """acc / acc_shuffled of a fine-tuned classifier file on the val subset; and its description."""
    from droppos.transfer.classification.classifier import load_classifier

    cfg: OrderConfig = s.cfg  # type: ignore[assignment]
    f = classifier_file(path)
    try:
        model, meta = load_classifier(f)
    except ValueError as e:
        raise InputError(str(e)) from None
    if list(meta["classes"]) != list(s.classes):
        raise InputError(f"{f}: classifier classes {meta['classes'][:5]} differ from {s.data_root}'s "
                         f"{s.classes[:5]}; pass the data it was fine-tuned on")
    mine, theirs = s.backbone.backbone.get("id"), (meta.get("backbone") or {}).get("id")
    if mine != theirs:
        raise InputError(f"{f}: fine-tuned from backbone {theirs!r}, but --backbone is {mine!r}; pass the backbone "
                         "the classifier was fine-tuned from")
    size = int(meta["arch"]["img_size"][0])
    model = model.to(s.device).requires_grad_(False)
    views = Views(("original", "shuffle_content"), lambda m, t: m.forward_head(t), cfg.seed + 2)
    out, y = features(s, model, image_subset(s, "val", cfg.val_images, img_size=size), views)
    pred = out.argmax(dim=-1)  # (N, 2)
    acc = {"acc": top1(pred[:, 0], y), "acc_shuffled": top1(pred[:, 1], y)}
    desc = {"kind": "finetuned", "path": str(f), "global_pool": meta["global_pool"], "img_size": size,
            "backbone": meta.get("backbone")}
    return acc, desc


def linear_accuracy(s: Setup, encoder, val_feats: torch.Tensor, val_y: torch.Tensor,
                    pool: str | None = None) -> tuple[dict[str, float], dict]:
    """Train a linear classifier on frozen train features; acc / acc_shuffled on val_feats.

    val_feats: (N, 2, D), the val images' features [original, content shuffled]; val_y: (N,).
    ``pool``: ``--pool`` (a token of this project's ViT), or ``'feature'`` (the model's pooled feature).
    """
    from droppos.transfer.classification.features import pooled_feature

    cfg: OrderConfig = s.cfg  # type: ignore[assignment]
    pool = pool or cfg.pool
    train_ds = image_subset(s, "train", cfg.train_images)
    print(f"order probe: linear classifier on frozen {pool} features of {len(train_ds)} train images")
    fn = pooled_feature if pool == "feature" else (lambda m, im: pool_tokens(m.forward_features(im), pool))
    x, y = features(s, encoder, train_ds, fn)
    head, history = train_head(x, y, len(s.classes), epochs=cfg.epochs, lr=cfg.lr, weight_decay=cfg.weight_decay,
                               batch_size=cfg.head_batch_size, seed=cfg.seed, device=s.device, logger=s.logger,
                               tag="classifier")
    acc = {"acc": top1(predict(head, val_feats[:, 0], s.device), val_y),
           "acc_shuffled": top1(predict(head, val_feats[:, 1], s.device), val_y)}
    desc = {"kind": "linear_probe", "pool": pool, "train_images": len(train_ds), "epochs": cfg.epochs,
            "lr": cfg.lr, "weight_decay": cfg.weight_decay, "history": history}
    return acc, desc


class Jigsaw:
    """``fn(model, images)``: the pooled feature of the images and of their jigsaw (:mod:`.generic`), (B, 2, D)."""

    def __init__(self, cell: int, cells: int, seed: int):
        self.cell, self.cells = cell, cells
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, model, imgs: torch.Tensor) -> torch.Tensor:
        from droppos.transfer.classification.features import pooled_feature

        from .generic import jigsaw

        perm = tokens.permutations(imgs.shape[0], self.cells, self.generator, imgs.device)
        return torch.stack([pooled_feature(model, imgs), pooled_feature(model, jigsaw(imgs, perm, self.cell))], dim=1)


def run_order_generic(s: Setup, encoder) -> dict[str, float]:
    """The order probe of a generic backbone: its pooled feature on images and their jigsaws."""
    from .generic import jigsaw_cell

    cfg: OrderConfig = s.cfg  # type: ignore[assignment]
    if cfg.classifier:
        raise InputError("--classifier reads this project's fine-tuned ViT classifiers; for a generic backbone leave "
                         "it empty (a linear probe on its frozen pooled feature is trained here)")
    cell = jigsaw_cell(encoder)
    cells = (s.img_size // cell) ** 2
    if cells < 2:
        raise InputError(f"--img-size {s.img_size}: the jigsaw needs at least 2 cells of {cell} px; raise --img-size")
    val_ds = image_subset(s, "val", cfg.val_images)
    print(f"order probe: pooled features of {len(val_ds)} val images and of their {cells}-cell jigsaws ({cell} px)")
    f, y = features(s, encoder, val_ds, Jigsaw(cell, cells, cfg.seed + 2))
    metrics = {"cos_dist": cos_dist(f[:, 0], f[:, 1]), "cos_dist_images": between_images(f[:, 0], cfg.seed + 3)}
    metrics["cos_dist_rel"] = metrics["cos_dist"] / max(metrics["cos_dist_images"], 1e-12)
    acc, desc = linear_accuracy(s, encoder, f, y, pool="feature")
    metrics.update(acc, acc_drop=acc["acc"] - acc["acc_shuffled"])
    finish(s, metrics, classifier=desc, pool="feature", val_images=len(val_ds), num_tokens=cells, jigsaw_cell=cell)
    return metrics


def run_order(s: Setup) -> dict[str, float]:
    cfg: OrderConfig = s.cfg  # type: ignore[assignment]
    encoder = s.backbone.encoder(img_size=s.img_size).to(s.device).eval().requires_grad_(False)
    if not tokens.has_token_entry_points(encoder):  # shuffled as an image (a jigsaw of the model's cells)
        return run_order_generic(s, encoder)
    val_ds = image_subset(s, "val", cfg.val_images)
    print(f"order probe: frozen {cfg.pool} features of {len(val_ds)} val images, original and shuffled")
    views = Views(("original", "shuffle_content", "shuffle_order"), lambda m, t: pool_tokens(t, cfg.pool), cfg.seed + 2)
    f, y = features(s, encoder, val_ds, views)  # (N, 3, D)
    metrics = {"cos_dist": cos_dist(f[:, 0], f[:, 1]), "cos_dist_images": between_images(f[:, 0], cfg.seed + 3),
               "cos_dist_token_order": cos_dist(f[:, 0], f[:, 2])}
    metrics["cos_dist_rel"] = metrics["cos_dist"] / max(metrics["cos_dist_images"], 1e-12)
    if cfg.classifier:
        acc, desc = finetuned_accuracy(s, cfg.classifier)
    else:
        acc, desc = linear_accuracy(s, encoder, f[:, :2], y)
    metrics.update(acc, acc_drop=acc["acc"] - acc["acc_shuffled"])
    finish(s, metrics, classifier=desc, pool=cfg.pool, val_images=len(val_ds), num_tokens=encoder.num_patches)
    return metrics
