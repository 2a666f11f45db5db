"""DropPos and MAE against independent, slow, per-sample reference computations."""

import math

import pytest
import torch
import torch.nn.functional as F

from droppos.models import build_vit
from droppos.pretrain.droppos import DropPos
from droppos.pretrain.mae import MAE
from droppos.pretrain.masking import num_kept, patchify, random_masking
from droppos.pretrain.smoothing import decayed_sigma, smoothing_map


def tiny_encoder(img=32, patch=8, depth=2):
    torch.manual_seed(0)
    return build_vit("tiny", patch_size=patch, img_size=img, depth=depth)


# --------------------------------------------------------------------------- masking
def test_random_masking_counts_and_restore():
    torch.manual_seed(0)
    ids_keep, ids_restore, mask = random_masking(5, 16, 4, "cpu")
    assert ids_keep.shape == (5, 4) and mask.shape == (5, 16)
    assert (mask.sum(1) == 12).all()
    for n in range(5):
        assert not mask[n, ids_keep[n]].any()  # kept ids are exactly the unmasked ones
        assert len(set(ids_keep[n].tolist())) == 4
    shuffled = torch.gather(torch.arange(16).expand(5, 16), 1, torch.argsort(ids_restore, 1))
    assert torch.equal(torch.gather(shuffled, 1, ids_restore), torch.arange(16).expand(5, 16))


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.1, 1.5])
def test_bad_ratios(ratio):
    with pytest.raises(ValueError, match="--mask-ratio must be in"):
        num_kept(196, ratio)


def test_droppos_counts():
    m = DropPos(tiny_encoder(img=224, patch=16), decoder_dim=32, decoder_depth=1, decoder_heads=2)
    assert m.n_keep == 49 and m.n_keep_pos == 12  # 196 -> 49 visible -> 37 positions dropped


def test_patchify_order():
    imgs = torch.arange(2 * 3 * 4 * 4, dtype=torch.float).reshape(2, 3, 4, 4)
    x = patchify(imgs, 2)
    assert x.shape == (2, 4, 12)
    # patch (row 0, col 1), pixel (0, 0), channel 2
    assert x[1, 1, 2] == imgs[1, 2, 0, 2]


# --------------------------------------------------------------------------- smoothing
def reference_map(gh, gw, sigma):
    length = gh * gw
    w = torch.zeros(length, length, dtype=torch.float64)
    for i in range(length):
        for j in range(length):
            d = (i // gw - j // gw) ** 2 + (i % gw - j % gw) ** 2
            w[i, j] = math.exp(-d / sigma**2)
    return w


def test_smoothing_rows_sum_to_one_and_match_formula():
    s = smoothing_map((5, 7), 1.5)
    assert torch.allclose(s.sum(-1), torch.ones(35), atol=1e-6)
    ref = reference_map(5, 7, 1.5)
    assert torch.allclose(s.double(), ref / ref.sum(1, keepdim=True), atol=1e-6)


def test_smoothing_sigma_zero_is_identity():
    assert torch.equal(smoothing_map((4, 4), 0.0), torch.eye(16))
    assert torch.allclose(smoothing_map((4, 4), 1e-3), torch.eye(16), atol=1e-6)


def test_smoothing_official_variant_divides_columns():
    ref = reference_map(4, 4, 1.0)
    rowsum = ref.sum(1)
    official = smoothing_map((4, 4), 1.0, norm="official").double()
    for j in range(16):
        assert torch.allclose(official[:, j], ref[:, j] / rowsum[j], atol=1e-6)
    assert not torch.allclose(official.sum(-1), torch.ones(16, dtype=torch.float64), atol=1e-3)


def test_sigma_decay_schedule():
    assert decayed_sigma(1.0, 0, 10, True) == 1.0
    assert decayed_sigma(1.0, 5, 10, True) == 0.5
    assert decayed_sigma(1.0, 5, 10, False) == 1.0


# --------------------------------------------------------------------------- attentive weights
def test_attentive_weights_reference():
    m = DropPos(tiny_encoder(), decoder_dim=32, decoder_depth=1, decoder_heads=2).eval()
    imgs = torch.randn(3, 3, 32, 32)
    ids_keep = torch.tensor([[0, 5], [3, 1], [15, 7]])
    w = m.attentive_weights(imgs, ids_keep)
    for n in range(3):
        f = m.encoder.forward_features(imgs[n : n + 1])[0]
        sims = torch.stack([F.cosine_similarity(f[0], f[1 + j], dim=0) for j in range(16)])
        p = torch.softmax(sims / 0.1, 0)[ids_keep[n]]
        assert torch.allclose(w[n], p / p.sum(), atol=1e-5)
    assert torch.allclose(w.sum(-1), torch.ones(3))


# --------------------------------------------------------------------------- position dropping
@pytest.mark.parametrize("token", ["param", "zeros", "wrong_pos"])
def test_drop_positions(token):
    """Against a per-sample restatement from the same draws: the positions dropped are the ones the draws pick
    (argsort of the first K draws, after the first n_keep_pos), and each option puts there what its name says
    (wrong_pos: dropped row j gets the embedding of dropped row perm[j], perm = argsort of the next draws)."""
    from pretrain.masking import SampleNoise

    m = DropPos(tiny_encoder(img=64), mask_token=token, decoder_dim=32, decoder_depth=1, decoder_heads=2)
    n, k, kp = 4, m.n_keep, m.n_keep_pos
    pos = torch.randn(n, k, 192)
    rows = torch.rand(n, k + (k - kp))
    new, mask_pos = m.drop_positions(pos, SampleNoise(rows))
    moved = 0
    for i in range(n):
        dropped = sorted(torch.argsort(rows[i, :k])[kp:].tolist())
        assert torch.nonzero(mask_pos[i]).flatten().tolist() == dropped
        kept = [j for j in range(k) if j not in dropped]
        assert torch.equal(new[i, kept], pos[i, kept])
        for r, j in enumerate(dropped):
            if token == "param":
                want = m.mask_pos_token[0, 0]
            elif token == "zeros":
                want = torch.zeros(192)
            else:
                src = dropped[torch.argsort(rows[i, k:])[r]]
                want = pos[i, src]
                moved += src != j
            assert torch.equal(new[i, j], want.to(new.dtype)), (i, j)
    if token == "wrong_pos":
        assert moved > n * (k - kp) // 2  # most dropped rows hold another patch's embedding


# --------------------------------------------------------------------------- full forward vs reference
def reference_droppos(m: DropPos, imgs, seed, sigma):
    """Per-sample restatement of the official algorithm from the same random draws."""
    enc = m.encoder
    n, length, k, kp = imgs.shape[0], enc.num_patches, m.n_keep, m.n_keep_pos
    torch.manual_seed(seed)
    noise = torch.rand(n, length)
    noise_pos = torch.rand(n, k)
    gh, gw = enc.grid_size
    if sigma == 0:
        ref = torch.eye(length, dtype=torch.float64)
    else:
        ref = reference_map(gh, gw, sigma)
        ref = ref / ref.sum(1, keepdim=True)
    num = den = 0.0
    hits = total = 0
    for i in range(n):
        keep = torch.argsort(noise[i])[:k]
        keep_pos = set(torch.argsort(noise_pos[i])[:kp].tolist())
        tokens = enc.patch_embed(imgs[i : i + 1])[0]
        rows = []
        for j, p in enumerate(keep.tolist()):
            pe = enc.pos_embed[0, 1 + p] if j in keep_pos else m.mask_pos_token[0, 0]
            rows.append(tokens[p] + pe)
        x = torch.stack(rows)[None]
        cls = enc.cls_token + enc.pos_embed[:, :1]
        h = enc.norm(enc.blocks(torch.cat([cls, x], 1)))
        logits = m.pos_decoder(h)[0, 1:]
        feats = enc.forward_features(imgs[i : i + 1])[0]
        sim = torch.stack([F.cosine_similarity(feats[0], feats[1 + q], dim=0) for q in range(length)])
        att = torch.softmax(sim / m.attn_tau, 0)[keep]
        att = att / att.sum()
        for j, p in enumerate(keep.tolist()):
            if j in keep_pos:
                continue
            ce = -(ref[p].float() * torch.log_softmax(logits[j], -1)).sum()
            num = num + att[j] * ce
            den = den + att[j]
            hits += int(logits[j].argmax() == p)
            total += 1
    return num / den, hits / total


@pytest.mark.parametrize("sigma", [0.0, 1.0])
def test_droppos_loss_matches_per_sample_reference(sigma):
    m = DropPos(tiny_encoder(), sigma=sigma, decoder_dim=32, decoder_depth=1, decoder_heads=2).eval()
    imgs = torch.randn(3, 3, 32, 32)
    torch.manual_seed(7)
    out = m(imgs)
    ref_loss, ref_acc = reference_droppos(m, imgs, 7, sigma)
    assert torch.allclose(out["loss"], ref_loss, atol=1e-5), (out["loss"], ref_loss)
    assert abs(out["pos_acc"].item() - ref_acc) < 1e-6


def test_shuffle_does_not_change_the_loss():
    m = DropPos(tiny_encoder(), decoder_dim=32, decoder_depth=1, decoder_heads=2).eval()
    imgs = torch.randn(2, 3, 32, 32)
    torch.manual_seed(3)
    a = m(imgs)["loss"]
    m.shuffle = True
    torch.manual_seed(3)
    b = m(imgs)["loss"]
    assert torch.allclose(a, b, atol=1e-5)


def test_conf_ignore_drops_confident_tokens():
    m = DropPos(tiny_encoder(), conf_ignore=True, attn_guide=False, sigma=0.0, decoder_dim=32, decoder_depth=1, decoder_heads=2)
    labels = torch.tensor([[0, 1, 2]])
    logits = torch.full((1, 3, 16), -20.0)
    logits[0, 0, 0] = 20.0  # confidently right: ignored
    logits[0, 1, 5] = 20.0  # confidently wrong: kept
    mask_pos = torch.tensor([[True, True, False]])
    loss, acc, _ = m.position_loss(logits, labels, mask_pos, None)
    expected = -torch.log_softmax(logits[0, 1], -1)[1]
    assert torch.allclose(loss, expected, atol=1e-4)
    assert acc.item() == 0.5


def test_multi_task_adds_weighted_pixel_loss():
    m = DropPos(tiny_encoder(), multi_task=True, pos_weight=0.05, decoder_dim=32, decoder_depth=1, decoder_heads=2)
    out = m(torch.randn(2, 3, 32, 32))
    assert torch.allclose(out["loss"], 0.05 * out["loss_pos"] + out["loss_mae"])
    out["loss"].backward()
    assert m.pixel_decoder.head.pred.weight.grad is not None and m.mask_pos_token.grad is not None


def test_bad_mask_token():
    with pytest.raises(ValueError, match="mask_token"):
        DropPos(tiny_encoder(), mask_token="nope")


# --------------------------------------------------------------------------- MAE
def test_mae_loss_matches_reference():
    enc = tiny_encoder()
    m = MAE(enc, decoder_dim=32, decoder_depth=1, decoder_heads=2).eval()
    imgs = torch.randn(2, 3, 32, 32)
    torch.manual_seed(5)
    loss = m(imgs)["loss"]
    torch.manual_seed(5)
    noise = torch.rand(2, 16)
    num = den = 0.0
    for i in range(2):
        order = torch.argsort(noise[i])
        keep = order[:4]
        x = (enc.patch_embed(imgs[i : i + 1])[0] + enc.pos_embed[0, 1:])[keep][None]
        cls = enc.cls_token + enc.pos_embed[:, :1]
        lat = enc.norm(enc.blocks(torch.cat([cls, x], 1)))
        dec = m.decoder
        h = dec.head.embed(lat)[0]
        seq = dec.mask_token[0, 0].expand(16, -1).clone()
        seq[keep] = h[1:]
        seq = torch.cat([h[:1], seq])[None] + dec.pos_embed
        pred = dec.head.pred(dec.head.norm(dec.head.blocks(seq)))[0, 1:]
        tgt = patchify(imgs[i : i + 1], 8)[0]
        tgt = (tgt - tgt.mean(-1, keepdim=True)) / (tgt.var(-1, keepdim=True) + 1e-6) ** 0.5
        for q in order[4:].tolist():
            num = num + ((pred[q] - tgt[q]) ** 2).mean()
            den += 1
    assert torch.allclose(loss, num / den, atol=1e-5)
