"""Each ``official``/``released`` value of the pretraining options against an independent
re-statement of the released DropPos code (engine_pretrain.py, models_DropPos_mae.py, util/utils.py,
main_pretrain.py with timm 0.3.2's add_weight_decay), written here from the released formulas."""

import math

import pytest
import torch
import torch.nn.functional as F

from droppos.errors import UserError
from droppos.models import build_vit
from droppos.pretrain.build import decay_groups
from droppos.pretrain.droppos import DropPos
from droppos.pretrain.smoothing import smoothing_map
from droppos.utils.optim import clip_gradients


def released_label_smoothing_map(num_patches: int, sigma: float) -> torch.Tensor:
    """engine_pretrain._get_label_smoothing_map: a sqrt(num_patches)-wide grid, divided by w.sum(-1) (columns)."""
    if sigma == 0.0:
        return torch.eye(num_patches)
    w = torch.zeros(num_patches, num_patches)
    side = int(math.sqrt(num_patches))
    for i in range(num_patches):
        for j in range(num_patches):
            w[i, j] = math.exp(-((i // side - j // side) ** 2 + (i % side - j % side) ** 2) / sigma**2)
    return w / w.sum(-1)


def released_targets(ids_keep: torch.Tensor, input_size: int, token_size: int, length: int, sigma: float):
    """train_one_epoch + forward_drop_pos_loss: the map for (input_size // token_size)^2 cells, rows gathered at
    the patch indices, first L columns."""
    smooth = released_label_smoothing_map((input_size // token_size) ** 2, sigma)
    n = ids_keep.shape[0]
    return torch.gather(smooth.repeat(n, 1, 1), 1, ids_keep.unsqueeze(-1).repeat(1, 1, length))


@pytest.mark.parametrize("sigma", [1.0, 0.5, 0.0])
def test_released_smoothing_equals_the_released_targets_for_vit_b16_at_224(sigma):
    ours = smoothing_map((14, 14), sigma, "released", img_size=224)
    torch.manual_seed(0)
    ids_keep = torch.stack([torch.randperm(196)[:49] for _ in range(4)])
    ref = released_targets(ids_keep, input_size=224, token_size=14, length=196, sigma=sigma)
    assert torch.allclose(ours[ids_keep], ref, atol=1e-6)


def test_released_smoothing_spreads_onto_the_wrong_neighbours():
    """Patch 14 is row 1, column 0 of the 14 x 14 grid; the released target treats it as row 0, column 14."""
    released = smoothing_map((14, 14), 1.0, "released", img_size=224)
    official = smoothing_map((14, 14), 1.0, "official")
    assert released[14, 13] > 0.1 and official[14, 13] < 1e-3  # its left neighbour on the 16-wide grid
    assert released[14, 28] < 1e-2 and official[14, 28] > 0.1  # the patch below it in the image
    # on a grid whose released side equals its own (patch 8 at 64 px: 64 // 8 == 8) nothing differs
    assert torch.equal(smoothing_map((8, 8), 1.0, "released", img_size=64), smoothing_map((8, 8), 1.0, "official"))


def test_released_smoothing_refuses_grids_the_release_cannot_build():
    with pytest.raises(UserError, match="--smooth-norm released"):
        smoothing_map((28, 28), 1.0, "released", img_size=224)  # patch 8 at 224: 8 x 8 = 64 < 784 cells


def test_droppos_uses_the_released_map_and_keeps_it_through_the_sigma_decay():
    enc = build_vit("tiny", patch_size=16, img_size=224, depth=1)
    m = DropPos(enc, smooth_norm="released", decoder_dim=32, decoder_depth=1, decoder_heads=2)
    assert torch.allclose(m.smooth, smoothing_map((14, 14), 1.0, "released", img_size=224))
    m.on_epoch(1, 4)
    ids = torch.arange(196)[None]
    assert torch.allclose(m.smooth, released_targets(ids, 224, 14, 196, 0.75)[0], atol=1e-6)


def released_acc1(logits, labels, mask_pos, attn, smooth, conf_ignore):
    """forward_drop_pos_loss's acc1: argmax hits weighted by mask_pos * conf mask * attentive weights."""
    w = mask_pos.float()
    if conf_ignore:
        prob = F.softmax(logits, -1)
        conf = prob.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
        w = w * (conf < torch.diag(smooth)[labels]).float()
    if attn is not None:
        w = w * attn
    return (((logits.argmax(-1) == labels).float() * w).sum() / w.sum()).item()


@pytest.mark.parametrize("conf_ignore", [False, True])
def test_both_position_accuracies_are_logged_and_the_released_one_is_weighted(conf_ignore):
    enc = build_vit("tiny", patch_size=8, img_size=32, depth=1)
    m = DropPos(enc, conf_ignore=conf_ignore, sigma=1.0, decoder_dim=32, decoder_depth=1, decoder_heads=2)
    torch.manual_seed(1)
    logits = torch.randn(3, 8, 16) * 4
    labels = torch.stack([torch.randperm(16)[:8] for _ in range(3)])
    logits[0, 0, labels[0, 0]] = 30.0  # a confident hit
    mask_pos = torch.rand(3, 8) < 0.7
    attn = torch.softmax(torch.randn(3, 8), -1)
    _, acc, acc_released = m.position_loss(logits, labels, mask_pos, attn)
    hits = (logits.argmax(-1) == labels) & mask_pos
    assert abs(acc.item() - hits.sum().item() / mask_pos.sum().item()) < 1e-6
    ref = released_acc1(logits, labels, mask_pos, attn, m.smooth, conf_ignore)
    assert abs(acc_released.item() - ref) < 1e-6
    out = m(torch.randn(2, 3, 32, 32))
    assert {"pos_acc", "pos_acc_released"} <= set(out)


@pytest.mark.parametrize("mask_token,aux,trained", [("zeros", "official", False), ("wrong_pos", "official", False),
                                                    ("param", "official", True), ("zeros", "trained", True)])
def test_multi_task_mask_token_as_the_release(mask_token, aux, trained):
    enc = build_vit("tiny", patch_size=8, img_size=32, depth=1)
    m = DropPos(enc, multi_task=True, mask_token=mask_token, aux_mask_token=aux, decoder_dim=32, decoder_depth=1,
                decoder_heads=2)
    assert m.pixel_decoder.mask_token.requires_grad is trained
    assert m.mask_pos_token.requires_grad is (mask_token == "param")  # the release's requires_grad rule
    assert m.pixel_decoder.mask_token.abs().sum() > 0  # N(0, 0.02) init either way, as the release


def add_weight_decay_0_3_2(model, skip_list=()):
    """timm 0.3.2 optim_factory.add_weight_decay, as main_pretrain.py calls it (no skip list)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if len(param.shape) == 1 or name.endswith(".bias") or name in skip_list:
            no_decay.append(param)
        else:
            decay.append(param)
    return {id(p) for p in no_decay}, {id(p) for p in decay}


def groups_by_decay(groups):
    no = {id(p) for g in groups if g["weight_decay"] == 0.0 for p in g["params"]}
    yes = {id(p) for g in groups if g["weight_decay"] > 0.0 for p in g["params"]}
    return no, yes


def test_official_weight_decay_groups_equal_timm_0_3_2():
    enc = build_vit("tiny", patch_size=8, img_size=32, depth=1)
    m = DropPos(enc, multi_task=True, decoder_dim=32, decoder_depth=1, decoder_heads=2)
    assert groups_by_decay(decay_groups(m, 0.05, "official")) == add_weight_decay_0_3_2(m)
    names = {id(p): n for n, p in m.named_parameters()}
    no, yes = groups_by_decay(decay_groups(m, 0.05, "official"))
    assert {"encoder.cls_token", "mask_pos_token"} <= {names[i] for i in yes}
    no, _ = groups_by_decay(decay_groups(m, 0.05, "tokens"))
    assert {"encoder.cls_token", "mask_pos_token", "pixel_decoder.mask_token"} <= {names[i] for i in no}


def test_official_clipping_equals_the_release_loop():
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s)) for s in [(4, 5), (7,), (3, 3, 2)]]
    for p, scale in zip(params, [10.0, 0.1, 3.0]):
        p.grad = torch.randn_like(p) * scale
    ref = [p.grad.clone() for p in params]
    for g in ref:  # util/utils.py clip_gradients
        norm = g.norm(2)
        coef = 5.0 / (norm + 1e-6)
        if coef < 1:
            g.mul_(coef)
    clip_gradients(params, 5.0, "official")
    for p, g in zip(params, ref):
        assert torch.allclose(p.grad, g, atol=1e-6)
