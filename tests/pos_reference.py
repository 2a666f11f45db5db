"""An independent reference for resampling a ViT position table, written out in the test's own terms.

Convention under test (ViT, MAE, DropPos, timm): the table is (1, P + gh*gw, D), its first P rows are the
prefix tokens ([cls]), and patch token k sits at row i = k // gw, column j = k % gw of the grid. The grid
is rebuilt element by element here (no reshape or permute shared with the code under test) and resampled
by ``torch.nn.functional.interpolate`` (bicubic, half-pixel centres, antialiased: timm's choice).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def reference_resample(table: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int],
                       prefix: int = 1) -> torch.Tensor:
    (gh, gw), (nh, nw) = old_grid, new_grid
    d = table.shape[-1]
    grid = torch.empty(1, d, gh, gw, dtype=torch.float32)
    for k in range(gh * gw):
        grid[0, :, k // gw, k % gw] = table[0, prefix + k].float()
    out = F.interpolate(grid, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)
    rows = [table[0, p].float() for p in range(prefix)]
    rows += [out[0, :, k // nw, k % nw] for k in range(nh * nw)]
    return torch.stack(rows)[None].to(table.dtype)


CLS_VALUE = -7.0


def distinguishable_table(grid: tuple[int, int], dim: int = 8, prefix: int = 1, seed: int = 0) -> torch.Tensor:
    """(1, prefix + gh*gw, dim): channel 0 = the row i, channel 1 = the column j, channel 2 = 10 * i + j
    (rows and columns tell apart by value), the rest random; every prefix row is :data:`CLS_VALUE`."""
    gh, gw = grid
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(1, prefix + gh * gw, dim, generator=g)
    t[0, :prefix] = CLS_VALUE
    for k in range(gh * gw):
        i, j = divmod(k, gw)
        t[0, prefix + k, :3] = torch.tensor([float(i), float(j), 10.0 * i + j])
    return t


def check_conventions(table: torch.Tensor, new_grid: tuple[int, int], prefix: int = 1) -> None:
    """By value, on a resampled :func:`distinguishable_table`: the [cls] rows are kept as they are, channel 0
    varies along the rows of the new grid only (increasing), channel 1 along its columns only (increasing)."""
    nh, nw = new_grid
    assert table.shape[1] == prefix + nh * nw, table.shape
    assert torch.equal(table[0, :prefix], torch.full_like(table[0, :prefix], CLS_VALUE)), "prefix rows changed"
    g = torch.stack([table[0, prefix + k, :2] for k in range(nh * nw)]).reshape(nh, nw, 2)
    rows, cols = g[..., 0], g[..., 1]
    torch.testing.assert_close(rows, rows[:, :1].expand(nh, nw), atol=1e-4, rtol=0, msg="row index varies along a row")
    torch.testing.assert_close(cols, cols[:1, :].expand(nh, nw), atol=1e-4, rtol=0,
                               msg="column index varies along a column")
    if nh > 1:
        assert (rows[1:, 0] > rows[:-1, 0]).all(), rows[:, 0]
    if nw > 1:
        assert (cols[0, 1:] > cols[0, :-1]).all(), cols[0]
