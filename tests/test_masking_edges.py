"""The bookkeeping of pretrain/masking.py at the edges of each rule: how many tokens are kept, which subset
sizes are allowed, and how a batch's noise rows are handed out (in order, never past their end, only to a batch
of their own size). The mutation run of this module found these edges untested."""

from __future__ import annotations

import pytest
import torch

from droppos.errors import UserError
from droppos.pretrain.masking import SampleNoise, num_kept, random_masking


@pytest.mark.parametrize("length, ratio, kept", [(10, 0.25, 7), (10, 0.75, 2), (196, 0.75, 49), (4, 0.5, 2)])
def test_num_kept_is_mae_rounding(length, ratio, kept):
    assert num_kept(length, ratio) == kept  # int(L * (1 - r)), below and above r = 0.5


def test_a_ratio_that_keeps_no_token_is_refused_and_one_token_is_kept():
    with pytest.raises(UserError, match="keeps no token of 3"):
        num_kept(3, 0.9)
    assert num_kept(2, 0.5) == 1  # exactly one token: the smallest that passes


@pytest.mark.parametrize("n_keep", [-1, 0, 17])
def test_random_masking_refuses_sizes_outside_1_to_length(n_keep):
    with pytest.raises(ValueError, match=f"cannot keep {n_keep} of 16"):
        random_masking(2, 16, n_keep, "cpu")


def test_random_masking_may_keep_every_token():
    keep, restore, mask = random_masking(2, 16, 16, "cpu")
    assert not mask.any() and sorted(keep[0].tolist()) == list(range(16))
    assert torch.equal(torch.gather(keep, 1, restore), torch.arange(16).expand(2, 16))


def test_noise_rows_are_handed_out_in_order():
    rows = torch.arange(2 * 7, dtype=torch.float32).reshape(2, 7)
    noise = SampleNoise(rows)
    assert torch.equal(noise.rand(2, 1, device="cpu"), rows[:, :1].reshape(2, 1))
    assert torch.equal(noise.rand(2, 3, device="cpu"), rows[:, 1:4])
    assert torch.equal(noise.rand(2, 3, device="cpu"), rows[:, 4:7])
    with pytest.raises(ValueError, match=r"noise rows \(2, 7\) cannot give 2 x \(1,\) after 7 draws"):
        noise.rand(2, 1, device="cpu")


def test_noise_rows_are_not_drawn_past_their_end():
    noise = SampleNoise(torch.rand(2, 3))
    noise.rand(2, 2, device="cpu")
    with pytest.raises(ValueError, match=r"cannot give 2 x \(2,\) after 2 draws"):
        noise.rand(2, 2, device="cpu")


@pytest.mark.parametrize("n", [1, 3])
def test_noise_rows_serve_a_batch_of_their_own_size_only(n):
    with pytest.raises(ValueError, match=rf"noise rows \(2, 5\) cannot give {n} x"):
        SampleNoise(torch.rand(2, 5)).rand(n, 1, device="cpu")


def test_a_large_batch_is_served():
    rows = torch.rand(300, 2)  # 300 is not a cached small int: a comparison by identity would refuse it
    assert torch.equal(SampleNoise(rows).rand(300, 2, device="cpu"), rows)
