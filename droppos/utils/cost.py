"""What a run cost: the backbone's parameters and GFLOPs at the task's input size, and the run's wall
time and peak memory. Every ``metrics.json`` carries them under ``cost``; the results table shows them.

GFLOPs are counted with fvcore's ``FlopCountAnalysis`` on one image (a fused multiply-add counts as
one: the convention of the ViTDet and DINOv2 tables) through the part of the model the task uses:
the pooled feature (``forward_head(forward_features(x), pre_logits=True)``) for classification, the
backbone's feature maps for detection and segmentation.
"""

from __future__ import annotations

import os
import resource
import time

import torch


class _Pooled(torch.nn.Module):
    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)


def _sdpa_flops(inputs, outputs) -> int:
    """fvcore has no handle for PyTorch's fused attention: its two matmuls, q k^T and (attention) v."""
    import math

    from fvcore.nn.jit_handles import get_shape

    q, k, v = (get_shape(inputs[i]) for i in range(3))
    batch_heads = math.prod(q[:-2])
    return batch_heads * q[-2] * k[-2] * (q[-1] + v[-1])


def backbone_cost(model: torch.nn.Module, img_size, pooled: bool = True) -> dict:
    """``{"params_M", "GFLOPs", "input"}`` of ``model`` (its pooled feature, or its ``forward`` when not
    ``pooled``) on one ``img_size`` image; GFLOPs None when fvcore is missing or cannot trace it."""
    h, w = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    params = sum(p.numel() for p in model.parameters())
    out = {"params_M": round(params / 1e6, 3), "GFLOPs": None, "input": [int(h), int(w)]}
    try:
        from fvcore.nn import FlopCountAnalysis
    except ImportError:
        return out
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            counter = FlopCountAnalysis(_Pooled(model) if pooled else model, (torch.zeros(1, 3, h, w, device=device),))
            counter.set_op_handle("aten::scaled_dot_product_attention", _sdpa_flops)
            counter.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            out["GFLOPs"] = round(counter.total() / 1e9, 3)
    except Exception:  # noqa: BLE001 - a model fvcore cannot trace keeps its parameter count
        pass
    finally:
        model.train(was_training)
    return out


def run_cost() -> dict:
    """Wall time since this process started and its peak memory (CPU resident; GPU allocated if any)."""
    out = {"wall_s": None, "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)}
    try:
        with open(f"/proc/{os.getpid()}/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        out["wall_s"] = round(uptime - start_ticks / os.sysconf("SC_CLK_TCK"), 1)
    except (OSError, ValueError, IndexError):
        out["wall_s"] = round(time.process_time(), 1)  # no /proc: the CPU time, said as such below
        out["wall_is_cpu_time"] = True
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["peak_cuda_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    return out
