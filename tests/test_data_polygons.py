"""Pixel-edge polygons of masks (tools/data/polygons.py) and hole filling (tools/data/canvas.py)."""

from __future__ import annotations

import numpy as np
import pytest

from droppos.tools.data.canvas import fill_holes
from droppos.tools.data.polygons import mask_to_polygons, polygon_area, rasterize_polygons, trace_boundaries


def test_single_pixel_is_its_square():
    m = np.zeros((4, 5), bool)
    m[2, 3] = True
    (loop,) = trace_boundaries(m)
    assert loop.tolist() == [[3, 2], [4, 2], [4, 3], [3, 3]]
    assert polygon_area(loop) == 1.0
    assert mask_to_polygons(m) == [[3.0, 2.0, 4.0, 2.0, 4.0, 3.0, 3.0, 3.0]]


def test_rectangle_keeps_only_corners():
    m = np.zeros((10, 10), bool)
    m[2:7, 1:9] = True
    (poly,) = mask_to_polygons(m)
    assert poly == [1.0, 2.0, 9.0, 2.0, 9.0, 7.0, 1.0, 7.0]


def test_diagonal_neighbours_are_separate_loops():
    m = np.array([[1, 0], [0, 1]], bool)
    loops = trace_boundaries(m)
    assert len(loops) == 2 and all(len(p) == 4 and polygon_area(p) == 1 for p in loops)
    m = np.array([[0, 1], [1, 0]], bool)
    assert sorted(polygon_area(p) for p in trace_boundaries(m)) == [1.0, 1.0]


def test_hole_is_refused_unless_allowed():
    ring = np.zeros((7, 7), bool)
    ring[1:6, 1:6] = True
    ring[3, 3] = False
    areas = sorted(polygon_area(p) for p in trace_boundaries(ring))
    assert areas == [-1.0, 25.0]  # the hole runs the other way round
    with pytest.raises(ValueError, match="1 hole"):
        mask_to_polygons(ring)
    filled = mask_to_polygons(ring, allow_holes=True)
    assert rasterize_polygons(filled, 7, 7).sum() == 25


def test_fill_holes_uses_4_connected_background():
    ring = np.zeros((7, 7), bool)
    ring[1:6, 1:6] = True
    ring[2:5, 2:5] = False
    assert fill_holes(ring).sum() == 25
    ring[1, 1] = False  # the inside reaches the outside only through a diagonal: still a hole
    ring[2, 2] = False
    assert fill_holes(ring).sum() == 24
    ring[1, 2] = False  # a 4-connected way out: not a hole any more
    assert fill_holes(ring).sum() == ring.sum()


def random_masks(n, seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        h, w = (int(v) for v in rng.integers(2, 20, 2))
        yield rng.random((h, w)) < rng.uniform(0.2, 0.8)


def test_loops_rasterise_back_to_the_mask():
    for m in random_masks(80):
        h, w = m.shape
        even_odd = np.zeros_like(m)
        for loop in trace_boundaries(m):
            even_odd ^= rasterize_polygons([loop.ravel().tolist()], h, w)
        np.testing.assert_array_equal(even_odd, m)
        filled = fill_holes(m)
        np.testing.assert_array_equal(rasterize_polygons(mask_to_polygons(filled), h, w), filled)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools' own numpy-2 notice
def test_pycocotools_rasterises_polygons_exactly():
    mask_util = pytest.importorskip("pycocotools.mask")
    for m in random_masks(150, seed=1):
        filled = fill_holes(m)
        if not filled.any():
            continue
        h, w = filled.shape
        rle = mask_util.merge(mask_util.frPyObjects(mask_to_polygons(filled), h, w))
        np.testing.assert_array_equal(mask_util.decode(rle).astype(bool), filled)


def test_filled_masks_give_simple_polygons():
    geometry = pytest.importorskip("shapely.geometry")
    for m in random_masks(80, seed=2):
        for poly in mask_to_polygons(fill_holes(m)):
            ring = np.asarray(poly).reshape(-1, 2)
            assert len(np.unique(ring, axis=0)) == len(ring)  # no vertex visited twice
            assert geometry.Polygon(ring).is_valid
