"""Pretraining step speed: img/s, step time, peak memory (and MFU on a GPU).

Compares, on the same weights and inputs, this project's DropPos step against a straightforward
re-statement of the official code (``official_restatement.py``), and MAE. Prints a Markdown table.

    python benchmarks/pretrain_step.py                          # ViT-B/16, CPU fp32, batch 8
    python benchmarks/pretrain_step.py --batch 256 --device cuda  # bf16 autocast, MFU on a GPU

FLOPs are counted with ``torch.utils.flop_counter`` on one training step (forward + backward of
the trained path, plus the no-grad attentive forward), MFU = FLOPs / step time / peak FLOP/s.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from droppos.models import build_vit
from droppos.pretrain.droppos import DropPos
from droppos.pretrain.mae import MAE
from droppos.utils.optim import clip_gradients

try:
    from official_restatement import official_clip, official_forward
except ImportError:  # run as a module
    from benchmarks.official_restatement import official_clip, official_forward

PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense bf16


def build(kind: str, args):
    torch.manual_seed(0)
    enc = build_vit(args.model, patch_size=args.patch, img_size=args.img)
    if kind == "mae":
        return MAE(enc)
    return DropPos(enc, decoder_depth=2, attn_guide=True, sigma=1.0)


def make_step(kind: str, m, opt, params, amp, clip: float):
    dev = next(m.parameters()).device.type

    def step(imgs):
        with torch.autocast(dev, dtype=torch.bfloat16, enabled=amp):
            if kind == "official":
                loss, _ = official_forward(m, imgs)
                _ = loss.item()  # the official loop reads the loss every step
            else:
                loss = m(imgs)["loss"]
        loss.backward()
        if clip:
            official_clip(params, clip) if kind == "official" else clip_gradients(params, clip, "official")
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def count_flops(step, imgs) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        step(imgs)
    return float(fc.get_total_flops())


def measure(kind: str, args, device: torch.device) -> dict:
    m = build(kind if kind == "mae" else "droppos", args).to(device)
    params = [p for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.95), fused=device.type == "cuda")
    amp = device.type == "cuda"
    step = make_step(kind, m, opt, params, amp, args.clip)
    imgs = torch.randn(args.batch, 3, args.img, args.img, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(args.warmup):
        step(imgs)
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(args.iters):
        step(imgs)
    sync()
    dt = (time.perf_counter() - t0) / args.iters
    flops = count_flops(step, imgs)
    row = {"method": kind, "step_s": dt, "img_s": args.batch / dt, "gflop_step": flops / 1e9}
    if device.type == "cuda":
        row["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
        name = torch.cuda.get_device_name()
        peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
        row["mfu"] = flops / dt / (peak * 1e12) if peak else float("nan")
    else:
        row["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="base")
    ap.add_argument("--patch", type=int, default=16)
    ap.add_argument("--img", type=int, default=224)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--clip", type=float, default=5.0, help="per-parameter clipping as the official default")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--methods", nargs="*", default=["official", "droppos", "mae"])
    ap.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    if args.json:
        print(json.dumps(measure(args.methods[0], args, device)))
        return
    rows = []
    for kind in args.methods:  # one process per method: peak memory is per method
        argv = [a for a in sys.argv[1:] if a != "--json"]
        out = subprocess.run([sys.executable, __file__, *argv, "--methods", kind, "--json"],
                             capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    cols = list(rows[0])
    print(f"\nViT-{args.model}/{args.patch} {args.img}px, batch {args.batch}, {device.type}"
          f"{' bf16' if device.type == 'cuda' else ' fp32'}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")


if __name__ == "__main__":
    main()
