"""Learned filters and feature maps as image grids (NumPy arrays) and matplotlib Figures.

The grids are plain NumPy arrays (``gd.to_numpy`` brings GPU arrays over), so they can be
saved, compared in tests or shown with any plotting library; :func:`grid_figure` wraps
one in a ``matplotlib.figure.Figure`` (no pyplot).

Example:
    >>> import numpy as np
    >>> w = np.random.default_rng(0).standard_normal((6, 1, 5, 5))   # LeNet C1: (O, I, kH, kW)
    >>> filter_grid(w, ncols=3).shape                                 # 2 x 3 tiles of 5x5
    (13, 19)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

import gpudl as gd

Array = Any  # a NumPy or CuPy array


def normalize_tiles(tiles: np.ndarray, per_tile: bool = True) -> np.ndarray:
    """Min-max scale ``tiles`` (N, ...) to [0, 1], each tile alone or all together.

    A constant tile maps to 0.5 (there is no contrast to show).

    Example:
        >>> normalize_tiles(np.array([[1.0, 3.0], [2.0, 2.0]])).tolist()
        [[0.0, 1.0], [0.5, 0.5]]
    """
    t = np.asarray(tiles, dtype=np.float64)
    axes = tuple(range(1, t.ndim)) if per_tile else None
    lo = t.min(axis=axes, keepdims=True)
    hi = t.max(axis=axes, keepdims=True)
    span = hi - lo
    return np.where(span > 0, (t - lo) / np.where(span > 0, span, 1), 0.5)


def make_grid(tiles: Array, ncols: int | None = None, padding: int = 1,
              pad_value: float = 1.0, normalize: bool = True,
              per_tile: bool = True) -> np.ndarray:
    """Lay out ``tiles`` (N, h, w) or (N, h, w, 3) on a grid, row by row.

    ``ncols`` defaults to ``ceil(sqrt(N))``; ``padding`` pixels of ``pad_value`` separate
    the tiles and frame the grid. ``normalize`` min-max scales to [0, 1] (``per_tile``:
    each tile on its own scale). Returns (rows*h + (rows+1)*padding, ncols*w +
    (ncols+1)*padding[, 3]) float64, on the CPU.

    Example:
        >>> make_grid(np.zeros((5, 2, 2)), ncols=3, padding=1).shape
        (7, 10)
    """
    t = gd.to_numpy(tiles).astype(np.float64)
    if t.ndim not in (3, 4) or (t.ndim == 4 and t.shape[-1] != 3):
        raise gd.ShapeError(f"make_grid: tiles must be (N, h, w) or (N, h, w, 3), got {t.shape}")
    if normalize:
        t = normalize_tiles(t, per_tile)
    n, h, w = t.shape[:3]
    ncols = max(1, min(ncols or math.ceil(math.sqrt(n)), n))
    nrows = math.ceil(n / ncols)
    grid = np.full((nrows * h + (nrows + 1) * padding, ncols * w + (ncols + 1) * padding)
                   + t.shape[3:], pad_value, dtype=np.float64)
    for i in range(n):
        r, c = divmod(i, ncols)
        y, x = padding + r * (h + padding), padding + c * (w + padding)
        grid[y:y + h, x:x + w] = t[i]
    return grid


def filter_grid(weight: Array, ncols: int | None = None, rgb: bool | None = None,
                padding: int = 1) -> np.ndarray:
    """Conv filters (O, I, kH, kW) as one image grid, each filter min-max scaled to [0, 1].

    With ``rgb`` (default: when I == 3, e.g. a first layer on colour images) each filter is
    one colour tile (O tiles); otherwise every (output, input) slice is a grey tile, one
    row of I tiles per output channel (``ncols`` defaults to I then; for I == 1 to
    ``ceil(sqrt(O))``).

    Example:
        >>> filter_grid(np.ones((4, 3, 3, 3))).shape              # 2 x 2 RGB tiles
        (9, 9, 3)
        >>> filter_grid(np.ones((16, 6, 5, 5))).shape             # 16 rows of 6 tiles
        (97, 37)
    """
    w = gd.to_numpy(weight)
    if w.ndim != 4:
        raise gd.ShapeError(f"filter_grid: weight must be (O, I, kH, kW), got {w.shape}")
    o, i = w.shape[:2]
    rgb = (i == 3) if rgb is None else rgb
    if rgb:
        if i != 3:
            raise gd.ShapeError(f"filter_grid: rgb=True needs 3 input channels, got {i}")
        return make_grid(w.transpose(0, 2, 3, 1), ncols, padding)  # (O, kH, kW, 3)
    tiles = w.reshape(o * i, *w.shape[2:])  # (O*I, kH, kW)
    return make_grid(tiles, ncols or (i if i > 1 else None), padding)


def feature_map_grid(activations: Array, index: int = 0, ncols: int | None = None,
                     padding: int = 1) -> np.ndarray:
    """Channel maps of one sample, (C, H, W) or sample ``index`` of (N, C, H, W), as a grid.

    Example:
        >>> feature_map_grid(np.ones((2, 8, 4, 4)), index=1).shape   # 3 x 3 tiles of 4x4
        (16, 16)
    """
    a = gd.to_numpy(activations)
    if a.ndim == 4:
        a = a[index]
    if a.ndim != 3:
        raise gd.ShapeError(f"feature_map_grid: activations must be (C, H, W) or (N, C, H, W), "
                            f"got {np.shape(activations)}")
    return make_grid(a, ncols, padding)


def grid_figure(grid: np.ndarray, title: str | None = None, cmap: str = "gray",
                scale: float = 0.15):
    """A ``matplotlib.figure.Figure`` showing ``grid`` (from the functions above), no axes.

    Example:
        >>> fig = grid_figure(make_grid(np.eye(3)[None]), title="identity")
        >>> fig.axes[0].get_title()
        'identity'
    """
    from matplotlib.figure import Figure

    h, w = grid.shape[:2]
    fig = Figure(figsize=(max(2.0, w * scale), max(2.0, h * scale)))
    ax = fig.add_subplot()
    ax.imshow(grid, cmap=None if grid.ndim == 3 else cmap, vmin=0.0, vmax=1.0,
              interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return fig
