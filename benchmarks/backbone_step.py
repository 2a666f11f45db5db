"""The generic backbone path costs no more than the ViT path: forward + backward, side by side.

    python benchmarks/backbone_step.py                  # ViT-B/16 at 224 px, batch 8, CPU fp32
    python benchmarks/backbone_step.py --repeats 5 --batch 8

Two models of the same ViT-B/16, built as the transfer tasks build them:

* ``vit``: this project's ``VisionTransformer`` from ``scratch:base_p16_224`` (the ViT path);
* ``timm``: ``--backbone timm:vit_base_patch16_224`` through ``droppos.backbones.generic`` (the
  generic path: the timm model itself).

Each step is a forward of ``forward_head(forward_features(x), pre_logits=True)``, a mean, and a
backward. The two are timed in alternation (``--repeats`` rounds of ``--steps`` steps each, after a
warm-up) so that a noisy machine slows both alike; the table gives the median step time of each
and their ratio (generic / ViT).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def build(kind: str):
    from droppos.backbones.source import load_backbone

    from droppos.backbones.generic import load_generic

    if kind == "vit":
        return load_backbone("scratch:base_p16_224").encoder()
    return load_generic("timm:vit_base_patch16_224").encoder()


def step(model, x) -> None:
    out = model.forward_head(model.forward_features(x), pre_logits=True)
    out.float().mean().backward()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=2, help="steps per timed round")
    p.add_argument("--repeats", type=int, default=4, help="alternating rounds per model")
    args = p.parse_args()
    torch.manual_seed(0)
    models = {k: build(k).train() for k in ("vit", "timm")}
    params = {k: sum(q.numel() for q in m.parameters()) for k, m in models.items()}
    x = torch.randn(args.batch, 3, 224, 224)
    for m in models.values():  # warm-up
        step(m, x)
    times: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(args.repeats):
        for k, m in models.items():
            t = time.perf_counter()
            for _ in range(args.steps):
                m.zero_grad(set_to_none=True)
                step(m, x)
            times[k].append((time.perf_counter() - t) / args.steps)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"| path | model | params (M) | s/step (median of {args.repeats}) | img/s |")
    print("|---|---|---|---|---|")
    for k, name in (("vit", "this project's ViT-B/16"), ("timm", "timm:vit_base_patch16_224")):
        print(f"| {k} | {name} | {params[k] / 1e6:.1f} | {med[k]:.3f} | {args.batch / med[k]:.2f} |")
    print(f"\nratio generic / ViT: {med['timm'] / med['vit']:.3f} (all rounds: vit {[round(t, 3) for t in times['vit']]}, "
          f"timm {[round(t, 3) for t in times['timm']]})")


if __name__ == "__main__":
    main()
