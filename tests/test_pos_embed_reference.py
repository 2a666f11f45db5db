"""Position-table resampling against an independent construction (tests/pos_reference.py), in the function
and in every path that resamples: the converters to timm, mmseg and detectron2, and the encoders built from a
backbone file. A transposed grid, a moved [cls] row or another kernel fails here by value."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from convert_helpers import WIDTH, tiny_encoder
from pos_reference import check_conventions, distinguishable_table, reference_resample

from droppos.models.pos_embed import resample_pos_embed


@pytest.mark.parametrize("old,new,prefix", [((4, 4), (8, 8), 1), ((8, 8), (4, 4), 1), ((4, 6), (8, 3), 1),
                                            ((6, 4), (3, 9), 1), ((5, 5), (7, 7), 5), ((4, 4), (6, 6), 0)])
def test_resampling_equals_the_written_out_reference(old, new, prefix):
    table = distinguishable_table(old, prefix=prefix)
    out = resample_pos_embed(table, new, prefix, old)
    torch.testing.assert_close(out, reference_resample(table, old, new, prefix), atol=1e-5, rtol=1e-5)
    if prefix:
        check_conventions(out, new, prefix)


def test_the_reference_tells_a_transposed_grid():
    """The check itself: a table resampled as if its grid were transposed fails it."""
    table = distinguishable_table((4, 6))
    wrong = reference_resample(table, (6, 4), (8, 3))  # rows read as columns
    with pytest.raises(AssertionError):
        check_conventions(wrong, (8, 3))
    with pytest.raises(AssertionError):
        torch.testing.assert_close(resample_pos_embed(table, (8, 3), 1, (4, 6)), wrong)


def test_the_same_grid_is_returned_as_is():
    table = distinguishable_table((4, 4))
    assert resample_pos_embed(table, (4, 4), 1, (4, 4)) is table


@pytest.fixture
def backbone(tmp_path):
    """A backbone file whose 8x8 table is distinguishable (the tiny encoder: 32 px, patch 4)."""
    from droppos.backbones.source import load_backbone

    enc = tiny_encoder(seed=4)
    sd = enc.state_dict()
    sd["pos_embed"] = distinguishable_table((8, 8), WIDTH)
    torch.save(sd, tmp_path / "plain.pth")
    return load_backbone(tmp_path / "plain.pth", arch="num_heads=2"), sd["pos_embed"]


@pytest.mark.parametrize("target,key", [("timm", "pos_embed"), ("mmseg", "pos_embed"),
                                        ("detectron2", "backbone.net.pos_embed")])
def test_every_converter_resamples_as_the_reference(backbone, target, key):
    from droppos.backbones.convert import convert_backbone

    bb, table = backbone
    sd, report = convert_backbone(bb, target, img_size=48)
    torch.testing.assert_close(sd[key], reference_resample(table, (8, 8), (12, 12)), atol=1e-5, rtol=1e-5)
    check_conventions(sd[key], (12, 12))
    assert report.resampled == ["pos_embed: grid 8x8 -> 12x12 (bicubic)"]


def test_encoders_built_from_a_file_resample_as_the_reference(backbone):
    bb, table = backbone
    want = reference_resample(table, (8, 8), (6, 6))
    torch.testing.assert_close(bb.encoder(img_size=24).pos_embed.data, want, atol=1e-5, rtol=1e-5)
    clf = bb.classifier(img_size=24, num_classes=3)
    torch.testing.assert_close(clf.pos_embed.data, want, atol=1e-5, rtol=1e-5)
    check_conventions(clf.pos_embed.data, (6, 6))


def _mae_sincos_2d(dim: int, gh: int, gw: int) -> np.ndarray:
    """MAE's util/pos_embed.py get_2d_sincos_pos_embed written out in numpy for a (gh, gw) grid: grid[0] holds
    the column (w) coordinate and encodes the first half of the channels; each half is [sin | cos] of
    pos * 1 / 10000^(k / (dim/4)); a zero [cls] row first."""
    ws, hs = np.meshgrid(np.arange(gw, dtype=np.float64), np.arange(gh, dtype=np.float64))  # w first, as MAE
    def one(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)
    emb = np.concatenate([one(dim // 2, ws), one(dim // 2, hs)], axis=1)
    return np.concatenate([np.zeros([1, dim]), emb], axis=0)


@pytest.mark.parametrize("dim,grid", [(16, (4, 4)), (32, (3, 5)), (768, (14, 14))])
def test_the_fixed_table_equals_mae_s(dim, grid):
    from droppos.models.pos_embed import sincos_2d

    want = torch.from_numpy(_mae_sincos_2d(dim, *grid)).float()
    torch.testing.assert_close(sincos_2d(dim, grid), want, atol=1e-6, rtol=0)
    torch.testing.assert_close(sincos_2d(dim, grid, cls_token=False), want[1:], atol=1e-6, rtol=0)


@pytest.mark.parametrize("dim,match", [(6, "divisible by 4"), (10, "divisible by 4")])
def test_a_dimension_the_table_cannot_split_is_refused(dim, match):
    from droppos.models.pos_embed import sincos_1d, sincos_2d

    with pytest.raises(ValueError, match=match):
        sincos_2d(dim, (2, 2))
    with pytest.raises(ValueError, match="even dimension"):
        sincos_1d(dim + 1, torch.arange(3))


@pytest.mark.parametrize("prefix", [0, 1, 5])
def test_the_old_grid_is_inferred_only_when_square(prefix):
    table = distinguishable_table((6, 6), prefix=prefix)
    torch.testing.assert_close(resample_pos_embed(table, (4, 4), prefix),
                               reference_resample(table, (6, 6), (4, 4), prefix), atol=1e-5, rtol=1e-5)
    assert resample_pos_embed(table, (6, 6), prefix) is table
    for grid in ((5, 6), (5, 7)):  # 30 rounds down to 5 x 5, 35 up to 6 x 6: neither is square
        n = grid[0] * grid[1]
        with pytest.raises(ValueError, match=f"{n} patch tokens is not a square grid; give old_grid"):
            resample_pos_embed(distinguishable_table(grid, prefix=prefix), (4, 4), prefix)


def test_defaults_precision_and_large_grids():
    """One [cls] row by default; a half-precision table of the same grid comes back as is; grids past CPython's
    small-int cache (18 x 18 = 324 patches) are inferred as square by value."""
    table = distinguishable_table((6, 6))
    torch.testing.assert_close(resample_pos_embed(table, (4, 4)), reference_resample(table, (6, 6), (4, 4)),
                               atol=1e-5, rtol=1e-5)
    half = table.half()
    assert resample_pos_embed(half, [6, 6], 1, (6, 6)) is half  # grids compare by value, given as lists too
    big = distinguishable_table((18, 18))
    torch.testing.assert_close(resample_pos_embed(big, (9, 9)), reference_resample(big, (18, 18), (9, 9)),
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("odd", [5, 7, 9])
def test_every_odd_dimension_is_refused(odd):
    from droppos.models.pos_embed import sincos_1d

    with pytest.raises(ValueError, match="even dimension"):
        sincos_1d(odd, torch.arange(3))
