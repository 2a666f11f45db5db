"""The smoothing map's edges, written out: the released grid's refusal (its numbers), any non-square grid,
a non-positive sigma, and option names that are equal strings but not the same object (from a config file)."""

from __future__ import annotations

import pytest
import torch

from droppos.errors import UserError
from droppos.pretrain.smoothing import released_side, smoothing_map


@pytest.mark.parametrize("grid,img,gives", [((4, 4), 12, "gives 9 < 16"), ((4, 5), 20, "gives 16 < 20"),
                                            ((5, 4), 20, "gives 25 < 20"), ((4, 5), 30, "gives 36 < 20")])
def test_the_released_grid_is_refused_with_its_numbers(grid, img, gives):
    with pytest.raises(UserError) as e:
        released_side(grid, img)
    assert f"({img} px, {grid[0]} x {grid[1]} patches {gives})" in str(e.value)


def test_the_released_side():
    assert released_side((14, 14), 224) == 16 and released_side((4, 4), 16) == 4


@pytest.mark.parametrize("sigma", [0.0, -0.5])
def test_no_positive_sigma_is_no_smoothing(sigma):
    assert torch.equal(smoothing_map((3, 3), sigma), torch.eye(9))


def test_option_names_compare_by_value():
    """A norm read from a file is an equal string, not the interned literal: it must choose the same map."""
    row, released = "".join(["r", "ow"]), "".join(["re", "leased"])
    torch.testing.assert_close(smoothing_map((3, 4), 1.0, row), smoothing_map((3, 4), 1.0, "row"))
    assert torch.allclose(smoothing_map((3, 4), 1.0, row).sum(1), torch.ones(12))
    torch.testing.assert_close(smoothing_map((2, 2), 1.0, released, img_size=6),
                               smoothing_map((3, 3), 1.0, "official")[:4, :4])
