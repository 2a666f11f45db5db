"""Weighted k-NN on frozen features (DINO's protocol): cosine similarity, k=20, T=0.07.

Each validation sample's k most similar training samples vote for their class with weight
``exp(similarity / T)``; the class scores rank the predictions (top-1, top-5). Features are the
normed [cls] token, L2-normalised, both splits with the evaluation transform.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

from .common import Setup, finish
from .config import KnnConfig
from .data import build_transform, eval_loader, image_folder
from .features import extract_features


@torch.no_grad()
def knn_classify(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                 num_classes: int, k: int = 20, temperature: float = 0.07, chunk: int = 1024) -> dict[str, float]:
    """Top-1/top-5 (percent) of a weighted k-NN. x: (N, D) features (normalised here), y: (N,) labels."""
    if train_x.shape[0] == 0 or test_x.shape[0] == 0:
        raise ValueError("k-NN needs at least one training and one test sample")
    k = min(k, train_x.shape[0])
    train_x, test_x = F.normalize(train_x.float(), dim=1), F.normalize(test_x.float(), dim=1)
    top = min(5, num_classes)
    hits = torch.zeros(2)
    for i in range(0, test_x.shape[0], chunk):
        sim = test_x[i:i + chunk] @ train_x.T  # (b, N)
        s, idx = sim.topk(k, dim=1)
        votes = torch.zeros(sim.shape[0], num_classes).scatter_add_(1, train_y[idx], (s / temperature).exp())
        pred = votes.topk(top, dim=1).indices
        correct = pred.eq(test_y[i:i + chunk, None])
        hits += torch.stack([correct[:, 0].sum(), correct.any(dim=1).sum()]).float()
    n = test_x.shape[0]
    return {"top1": 100.0 * hits[0].item() / n, "top5": 100.0 * hits[1].item() / n}


def run_knn(s: Setup) -> dict[str, float]:
    cfg: KnnConfig = s.cfg  # type: ignore[assignment]
    encoder = s.backbone.encoder(img_size=s.img_size).to(s.device).eval()
    tf = build_transform("eval", s.img_size, cfg.crop_pct)
    feats = {}
    for split in ("train", "val"):
        ds = image_folder(s.data_root, split, tf, s.classes)
        loader = eval_loader(ds, cfg.batch_size, cfg.workers, s.info.rank, s.info.world_size, s.pin)
        feats[split] = extract_features(encoder, loader, s.device, "feature", s.amp)
    n_train = feats["train"][0].shape[0]
    k = min(cfg.k, n_train)
    if k < cfg.k and s.info.is_main:
        print(f"warning: knn: --k {cfg.k} is more than the {n_train} training samples; every sample votes (k={k}, "
              "recorded as k, beside k_requested); use more training data or a smaller --k", file=sys.stderr)
    metrics = knn_classify(*feats["train"], *feats["val"], num_classes=len(s.classes), k=k,
                           temperature=cfg.temperature)
    if s.info.is_main:
        s.logger.log(0, **{f"val_{name}": v for name, v in metrics.items()})
    finish(s, metrics, k=k, k_requested=cfg.k, temperature=cfg.temperature, epochs=0)
    return metrics
