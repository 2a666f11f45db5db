"""Exact polygons of a binary mask, for COCO ``segmentation`` fields (no OpenCV needed).

The polygons follow pixel edges: pixel ``(x, y)`` is the square ``[x, x+1] x [y, y+1]``, which
is the convention of pycocotools' rasteriser (``frPyObjects`` + ``decode``, also used by
detectron2's ``polygons_to_bitmask``), so rasterising the polygons gives back the mask exactly.

Tracing: every foreground-to-background pixel side is a directed edge with the foreground on
its right (in image coordinates, y down), and edges are chained into closed loops. Where two
foreground pixels touch only at a corner the chain turns right, so those pixels fall into
separate loops (foreground 4-connected, background 8-connected). Only corner vertices are kept.
Outer boundaries come out with positive signed area (``polygon_area``), hole boundaries negative.
A loop touches itself only around a background pocket that reaches the outside through such a
diagonal corner; masks passed through ``canvas.fill_holes`` have none, so their polygons are
simple (valid for shapely).
"""

from __future__ import annotations

import numpy as np

# direction code -> (dx, dy): right, down, left, up; a right turn is code + 1 (mod 4).
_STEP = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]])


def polygon_area(poly: np.ndarray) -> float:
    """Signed shoelace area of ``poly`` ``(K, 2)`` xy; positive for outer loops of ``trace_boundaries``."""
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def trace_boundaries(mask: np.ndarray) -> list[np.ndarray]:
    """All boundary loops of ``mask`` ``(H, W)`` bool, each ``(K, 2)`` float64 xy corners, K >= 4."""
    m = np.pad(np.asarray(mask, bool), 1)
    fg = m[1:-1, 1:-1]
    h, w = fg.shape
    ys, xs = np.mgrid[0:h, 0:w]
    # (condition, start corner offset, direction) for the four sides of a foreground pixel
    sides = (
        (fg & ~m[:-2, 1:-1], (0, 0), 0),  # top side, walking right
        (fg & ~m[1:-1, 2:], (1, 0), 1),  # right side, walking down
        (fg & ~m[2:, 1:-1], (1, 1), 2),  # bottom side, walking left
        (fg & ~m[1:-1, :-2], (0, 1), 3),  # left side, walking up
    )
    sx, sy, dirs = [], [], []
    for cond, (ox, oy), d in sides:
        sx.append(xs[cond] + ox)
        sy.append(ys[cond] + oy)
        dirs.append(np.full(int(cond.sum()), d))
    sx, sy, dirs = np.concatenate(sx), np.concatenate(sy), np.concatenate(dirs)
    if len(dirs) == 0:
        return []
    ex, ey = sx + _STEP[dirs, 0], sy + _STEP[dirs, 1]
    stride = w + 2
    start_key = (sy * stride + sx).tolist()
    end_key = (ey * stride + ex).tolist()
    dirs_l = dirs.tolist()
    outgoing: dict[int, list[int]] = {}
    for e, k in enumerate(start_key):
        outgoing.setdefault(k, []).append(e)
    used = [False] * len(dirs_l)
    loops = []
    for first in range(len(dirs_l)):
        if used[first]:
            continue
        chain = []
        e = first
        while not used[e]:
            used[e] = True
            chain.append(e)
            cands = outgoing[end_key[e]]
            if len(cands) > 1:  # a corner where two pixels touch diagonally: turn right
                right = (dirs_l[e] + 1) % 4
                cands = [c for c in cands if dirs_l[c] == right]
            e = cands[0]
        if e != first:
            raise AssertionError("boundary tracing did not close a loop")  # cannot happen
        chain = np.asarray(chain)
        cd = dirs[chain]
        corner = cd != np.roll(cd, 1)  # keep a vertex only where the direction changes
        loops.append(np.stack([sx[chain][corner], sy[chain][corner]], axis=1).astype(np.float64))
    return loops


def mask_to_polygons(mask: np.ndarray, allow_holes: bool = False) -> list[list[float]]:
    """COCO polygons ``[[x1, y1, x2, y2, ...], ...]`` (outer boundaries) of ``mask`` ``(H, W)``.

    Raises ValueError when the mask has a hole and ``allow_holes`` is False: COCO polygons are
    unioned when rasterised, so a hole would silently be filled. With ``allow_holes=True`` the
    holes are dropped (filled) knowingly.
    """
    loops = trace_boundaries(mask)
    outer = [p for p in loops if polygon_area(p) > 0]
    if len(outer) != len(loops) and not allow_holes:
        raise ValueError(f"mask has {len(loops) - len(outer)} hole(s), which COCO polygons cannot represent")
    return [p.reshape(-1).tolist() for p in outer]


def rasterize_polygons(polygons: list[list[float]], height: int, width: int) -> np.ndarray:
    """``(height, width)`` bool: pixels whose centre is inside any polygon (even-odd rule per polygon).

    An independent even-odd rasteriser for tests and checks (pycocotools gives the same result
    on the pixel-edge polygons of ``mask_to_polygons``).
    """
    out = np.zeros((height, width), bool)
    cy = np.arange(height) + 0.5
    cx = np.arange(width) + 0.5
    for flat in polygons:
        p = np.asarray(flat, np.float64).reshape(-1, 2)
        inside = np.zeros((height, width), bool)
        for (x0, y0), (x1, y1) in zip(p, np.roll(p, -1, axis=0)):
            if y0 == y1:
                continue
            rows = (cy >= min(y0, y1)) & (cy < max(y0, y1))
            xcross = x0 + (cy[rows] - y0) * (x1 - x0) / (y1 - y0)
            inside[rows] ^= cx[None, :] < xcross[:, None]
        out |= inside
    return out
