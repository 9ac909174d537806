"""Filters and feature maps as image grids: layout, padding and per-tile normalisation."""

from __future__ import annotations

import io

import numpy as np
import pytest

import gpudl as gd
from gpudl import inspect


def _tiles(grid, n, h, w, ncols, pad=1):
    """Cut tile i back out of a grid (the inverse of the documented layout)."""
    out = []
    for i in range(n):
        r, c = divmod(i, ncols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        out.append(grid[y:y + h, x:x + w])
    return np.stack(out)


def test_filter_grid_grey_layout_and_normalisation(device, xp):
    w = np.random.default_rng(0).standard_normal((4, 2, 3, 3)).astype(np.float32)
    grid = inspect.filter_grid(xp.asarray(w))  # 4 rows (outputs) x 2 columns (inputs)
    assert isinstance(grid, np.ndarray)
    assert grid.shape == (4 * 3 + 5, 2 * 3 + 3)
    tiles = _tiles(grid, 8, 3, 3, ncols=2)
    for t, src in zip(tiles, w.reshape(8, 3, 3)):
        assert t.min() == 0.0 and t.max() == 1.0
        np.testing.assert_allclose(t, (src - src.min()) / (src.max() - src.min()), rtol=1e-6)
    # The padding (frame and gutters) holds the pad value 1.0.
    mask = np.ones(grid.shape, bool)
    for i in range(8):
        r, c = divmod(i, 2)
        mask[1 + r * 4:1 + r * 4 + 3, 1 + c * 4:1 + c * 4 + 3] = False
    assert (grid[mask] == 1.0).all()


def test_filter_grid_rgb_and_single_channel():
    w = np.random.default_rng(1).standard_normal((5, 3, 4, 4))
    rgb = inspect.filter_grid(w, ncols=5)
    assert rgb.shape == (4 + 2, 5 * 4 + 6, 3)
    tile0 = _tiles(rgb, 1, 4, 4, 5)[0]
    src = w[0].transpose(1, 2, 0)
    np.testing.assert_allclose(tile0, (src - src.min()) / (src.max() - src.min()))
    grey = inspect.filter_grid(w, rgb=False)  # 5 rows of 3 tiles
    assert grey.shape == (5 * 4 + 6, 3 * 4 + 4)
    one = inspect.filter_grid(np.ones((6, 1, 5, 5)))  # ceil(sqrt(6)) = 3 columns, 2 rows
    assert one.shape == (2 * 5 + 3, 3 * 5 + 4)
    assert (_tiles(one, 6, 5, 5, 3) == 0.5).all()  # constant filters map to mid-grey
    with pytest.raises(gd.ShapeError):
        inspect.filter_grid(np.ones((3, 3)))
    with pytest.raises(gd.ShapeError):
        inspect.filter_grid(np.ones((2, 2, 3, 3)), rgb=True)


def test_make_grid_global_normalisation_and_feature_maps(device, xp):
    a = np.arange(2 * 3 * 2 * 2, dtype=np.float64).reshape(2, 3, 2, 2)
    grid = inspect.feature_map_grid(xp.asarray(a), index=1, ncols=3, padding=0)
    assert grid.shape == (2, 6)
    np.testing.assert_allclose(grid[:, :2], [[0, 1 / 3], [2 / 3, 1]])  # per-channel scale
    glob = inspect.make_grid(a[1], ncols=3, padding=0, per_tile=False)
    np.testing.assert_allclose(glob.min(), 0.0)
    np.testing.assert_allclose(glob.max(), 1.0)
    np.testing.assert_allclose(glob[:, 4:], (a[1, 2] - a[1].min()) / np.ptp(a[1]))
    raw = inspect.make_grid(a[0], normalize=False, padding=2, pad_value=-1.0)
    assert raw.shape == (2 * 2 + 3 * 2, 2 * 2 + 3 * 2) and raw[0, 0] == -1.0
    with pytest.raises(gd.ShapeError):
        inspect.feature_map_grid(np.ones((4, 4)))


def test_grid_figure_renders():
    from matplotlib.figure import Figure

    fig = inspect.grid_figure(inspect.filter_grid(np.ones((4, 3, 3, 3))), title="conv1")
    assert isinstance(fig, Figure) and fig.axes[0].get_title() == "conv1"
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.getvalue()[:4] == b"\x89PNG"
