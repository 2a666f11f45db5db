"""A straightforward re-statement of the official DropPos training step, for speed comparison only.

It runs on this project's modules and weights (so both sides do the same arithmetic) but follows
the released code's structure line by line: the position mask tokens are built for the whole
batch in every sample (``mask_pos.sum()`` tokens, N times too many), the position table and the
smoothing map are repeated over the batch before gathering, accuracy and the loss are read back
with ``.item()`` every step, and gradients are clipped parameter by parameter with a host sync
each. Not used by the library.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from droppos.pretrain.droppos import DropPos


def _masking(x, ratio):
    n, length, _ = x.shape
    keep = int(length * (1 - ratio))
    noise = torch.rand(n, length, device=x.device)
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    mask = torch.ones([n, length], device=x.device)
    mask[:, :keep] = 0
    mask = torch.gather(mask, dim=1, index=ids_restore)
    return ids_shuffle[:, :keep], mask, ids_restore, ids_shuffle[:, keep:]


def official_forward(m: DropPos, imgs: torch.Tensor):
    enc = m.encoder
    x = enc.patch_embed(imgs)
    n, length, d = x.shape
    ids_keep, mask, ids_restore, _ = _masking(x, m.mask_ratio)
    x = torch.gather(x, 1, ids_keep.unsqueeze(-1).repeat(1, 1, d))
    pos_all = enc.pos_embed[:, 1:, :].data.repeat(n, 1, 1)
    pos_vis = torch.gather(pos_all, 1, ids_keep.unsqueeze(-1).repeat(1, 1, d)).detach()
    ids_keep_pos, mask_pos, ids_restore_pos, _ = _masking(x, m.pos_mask_ratio)
    pos = torch.gather(pos_vis, 1, ids_keep_pos.unsqueeze(-1).repeat(1, 1, d))
    n_tokens = int(mask_pos.sum().item())  # host sync; the whole batch's count, per sample
    pos = torch.cat([pos, m.mask_pos_token.repeat(n, n_tokens, 1)], dim=1)
    pos = torch.gather(pos, 1, ids_restore_pos.unsqueeze(-1).repeat(1, 1, d))
    x = x + pos
    attn = None
    if m.attn_guide:
        with torch.no_grad():
            f = enc.forward_features(imgs)
            sim = F.cosine_similarity(f[:, :1], f[:, 1:], dim=-1)
            attn = torch.gather(F.softmax(sim / 0.1, dim=-1), 1, ids_keep)
            attn = attn / attn.sum(-1, keepdims=True)
    latent = enc.forward_tokens(x)
    pred = m.pos_decoder(latent)[:, 1:]
    labels = torch.gather(torch.arange(length, device=x.device).repeat(n, 1), 1, ids_keep)
    smooth = torch.gather(m.smooth.repeat(n, 1, 1), 1, ids_keep.unsqueeze(-1).repeat(1, 1, length))
    log_prob = F.log_softmax(pred.float(), dim=-1)
    w = mask_pos * attn if attn is not None else mask_pos
    loss = ((-smooth * log_prob).sum(-1) * w).sum() / w.sum()
    acc = (((pred.argmax(-1) == labels) * w).sum() / w.sum()).item()  # host sync
    return loss, acc


def official_clip(params, clip: float) -> None:
    for p in params:
        if p.grad is not None:
            norm = p.grad.data.norm(2)
            coef = clip / (norm + 1e-6)
            if coef < 1:  # host sync per parameter
                p.grad.data.mul_(coef)

