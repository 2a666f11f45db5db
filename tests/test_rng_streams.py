"""Random streams: every generator's state saved and restored exactly (Gaussian caches included), each
process's own on resume, the per-sample seeds distinct where samples differ and equal where they are the
same draw, and the caller's generators untouched by a sample's draws."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from droppos.errors import UserError
from droppos.pretrain.masking import MASK_STREAM, sample_noise
from droppos.utils.rng import (check_world_size, restore_rng_state, rng_state, sample_seed, saved_world_size,
                               seeded, set_rng_state)


def draws() -> tuple:
    """One draw of each kind; odd Gaussian counts leave numpy's and Python's cached second values in place."""
    return (torch.rand(3).tolist(), torch.randn(1).item(), random.random(), random.gauss(0, 1),
            np.random.rand(2).tolist(), np.random.standard_normal(1).tolist())


def test_every_generator_is_restored_exactly_gaussian_caches_included():
    torch.manual_seed(1), random.seed(2), np.random.seed(3)
    draws()  # leaves numpy's and Python's Gaussian caches full
    saved = rng_state()
    assert saved["numpy_has_gauss"] == 1 and saved["python_gauss"] is not None
    first = draws()
    draws()
    set_rng_state(saved)
    assert draws() == first


def test_older_checkpoints_without_the_caches_restore():
    torch.manual_seed(0), random.seed(0), np.random.seed(0)
    saved = {k: v for k, v in rng_state().items() if k not in ("numpy_has_gauss", "numpy_cached_gauss",
                                                                 "python_gauss")}
    a = (torch.rand(2).tolist(), random.random(), np.random.rand(2).tolist(), np.random.standard_normal(1).tolist())
    set_rng_state(saved)  # without a cached Gaussian: the next normal draw is computed, not a stale cache
    assert (torch.rand(2).tolist(), random.random(), np.random.rand(2).tolist(),
            np.random.standard_normal(1).tolist()) == a


def _state_of(seed):
    torch.manual_seed(seed), random.seed(seed), np.random.seed(seed)
    return rng_state()


@pytest.mark.parametrize("rank,which", [(0, 0), (1, 1), (2, 0), (3, 0)])  # a process the checkpoint lacked takes 0's
def test_each_process_restores_its_own_streams(rank, which):
    states = [_state_of(10), _state_of(11)]
    expected = [_state_of(10), _state_of(11)][which]
    set_rng_state(expected)
    want = draws()
    _state_of(99)
    restore_rng_state(states, rank)
    assert draws() == want


def test_a_single_dict_is_the_only_process_s():
    s = _state_of(5)
    want = draws()
    _state_of(7)
    restore_rng_state(s, 3)
    assert draws() == want


def test_world_sizes():
    assert saved_world_size({"rng": [{}, {}, {}]}) == 3 and saved_world_size({"rng": {}}) == 1
    assert saved_world_size({"rng": [{}], "world_size": 4}) == 4
    ck = {"rng": [{}, {}]}
    assert check_world_size(ck, 2, "ck.pth") is False
    assert check_world_size({"rng": [], "world_size": 1000}, int("1000"), "ck.pth") is False  # by value
    assert check_world_size(ck, 3, "ck.pth", why_not_exact=None) is True
    with pytest.raises(UserError) as e:
        check_world_size(ck, 3, "ck.pth")
    msg = str(e.value)
    assert msg.startswith("ck.pth: written by a run of 2 process(es), resumed with 3: each process's random streams")
    assert "srun --ntasks 2" in msg
    with pytest.raises(UserError, match="resumed with 1: mixup draws per process; resume it with 2"):
        check_world_size(ck, 1, "ck.pth", why_not_exact="mixup draws per process")


def test_sample_seeds_are_a_function_of_the_sample_only_and_distinct():
    assert sample_seed(1, 2, 3) == (1 * 1_000_003 + 2) * 10_000_019 + 3
    seeds = {sample_seed(s, e, i) for s in range(3) for e in range(4) for i in range(500)}
    assert len(seeds) == 3 * 4 * 500


def test_a_sample_s_draws_are_its_own_and_leave_the_caller_s_streams():
    def inside(*key):
        with seeded(*key):
            return torch.rand(2).tolist(), random.random(), np.random.rand(2).tolist()

    torch.manual_seed(0), random.seed(0), np.random.seed(0)
    outside = draws()
    torch.manual_seed(0), random.seed(0), np.random.seed(0)
    a = inside(0, 1, 7)
    assert draws() == outside  # the caller's generators continue as if nothing was drawn
    assert inside(0, 1, 7) == a  # the same sample draws the same, whatever came before
    for other in [(0, 1, 8), (0, 2, 7), (1, 1, 7)]:
        b = inside(*other)
        assert all(x != y for x, y in zip(a, b)), other  # each generator's stream differs
    value = sample_seed(0, 1, 7)
    np.random.seed(value % 2**32)
    assert a[2] == np.random.rand(2).tolist()
    big = sample_seed(5, 3, 7)  # above 2**32: numpy takes it modulo 2**32
    assert big > 2**32 and inside(5, 3, 7)[2] == np.random.RandomState(big % 2**32).rand(2).tolist()
    random.seed(value)
    assert a[1] == random.random()


def test_a_sample_s_mask_stream_is_apart_from_its_crop_stream():
    seed = sample_seed(0, 0, 3)
    assert torch.equal(sample_noise(seed, 16), sample_noise(seed, 16))
    assert not torch.equal(sample_noise(seed, 16), sample_noise(sample_seed(0, 0, 4), 16))
    crop = torch.rand(16, generator=torch.Generator().manual_seed(seed))  # what seeded() gives the crop
    with seeded(0, 0, 3):
        assert not torch.equal(sample_noise(seed, 16), torch.rand(16))
    assert not torch.equal(sample_noise(seed, 16), crop)
    # the stream id (1) is written out: it is part of a run's reproducibility, a sample's masks must not change
    # between versions of the code
    assert MASK_STREAM == 1
    ref = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 1]))).random(16, dtype=np.float32)
    assert torch.equal(sample_noise(seed, 16), torch.from_numpy(ref))
    noise = sample_noise(seed, 20_000)
    assert noise.dtype == torch.float32 and 0.0 <= noise.min() and noise.max() < 1.0
    assert abs(noise.mean().item() - 0.5) < 0.01
