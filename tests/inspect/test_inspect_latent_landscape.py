"""Latent interpolation (lerp/slerp) and loss landscapes (1-D and 2-D) with plots."""

from __future__ import annotations

import io

import numpy as np
import pytest

import gpudl as gd
from gpudl import inspect, ops


def test_slerp_endpoints_norms_and_angle(device, xp):
    rng = np.random.default_rng(0)
    z0, z1 = rng.standard_normal(16), rng.standard_normal(16)
    z1 *= np.linalg.norm(z0) / np.linalg.norm(z1)  # equal norms
    t = np.linspace(0, 1, 7)
    path = gd.to_numpy(inspect.slerp(xp.asarray(z0), xp.asarray(z1), t))
    assert path.shape == (7, 16)
    np.testing.assert_allclose(path[0], z0, atol=1e-12)
    np.testing.assert_allclose(path[-1], z1, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(path, axis=1), np.linalg.norm(z0), rtol=1e-12)
    # The angle to z0 grows linearly in t along the great circle.
    omega = np.arccos(z0 @ z1 / (z0 @ z0))
    angles = np.arccos(np.clip(path @ z0 / (z0 @ z0), -1, 1))
    np.testing.assert_allclose(angles, t * omega, atol=1e-6)
    lin = gd.to_numpy(inspect.lerp(xp.asarray(z0), xp.asarray(z1), t))
    assert np.linalg.norm(lin[3]) < np.linalg.norm(z0)  # the straight line cuts the corner


def test_slerp_batches_rowwise_and_falls_back_to_lerp():
    rng = np.random.default_rng(1)
    z0, z1 = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    mid = inspect.slerp(z0, z1, 0.5)
    for n in range(3):
        np.testing.assert_allclose(mid[n], inspect.slerp(z0[n], z1[n], 0.5))
    v = rng.standard_normal(4)
    np.testing.assert_allclose(inspect.slerp(v, 2 * v, 0.25), inspect.lerp(v, 2 * v, 0.25))


def test_interpolate_shapes_and_methods():
    z0, z1 = np.zeros((2, 3)), np.ones((2, 3))
    path = inspect.interpolate(z0, z1, 5)
    assert path.shape == (5, 2, 3)
    np.testing.assert_allclose(path[:, 0, 0], np.linspace(0, 1, 5))
    sph = inspect.interpolate(np.array([1.0, 0.0]), np.array([-0.0, 1.0]), 3, "spherical")
    np.testing.assert_allclose(sph[1], [np.sqrt(0.5)] * 2)
    with pytest.raises(ValueError, match="method"):
        inspect.interpolate(z0, z1, 3, "cubic")
    # the function names work as method names (the guide and the course say "slerp")
    z2, z3 = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    np.testing.assert_array_equal(inspect.interpolate(z2, z3, 4, method="slerp"),
                                  inspect.interpolate(z2, z3, 4, method="spherical"))
    np.testing.assert_array_equal(inspect.interpolate(z0, z1, 4, method="lerp"),
                                  inspect.interpolate(z0, z1, 4))
    with pytest.raises(ValueError, match="'slerp'"):
        inspect.interpolate(z0, z1, 3, "Slerp ")
    with pytest.raises(gd.ShapeError):
        inspect.interpolate(z0, np.ones(3), 3)


def _mlp_loss(xp):
    rng = np.random.default_rng(2)
    x = xp.asarray(rng.standard_normal((8, 3)))
    y = xp.asarray(rng.standard_normal((8, 1)))

    def loss(p):
        h = ops.tanh(x @ p["l1"]["weight"].T + p["l1"]["bias"])
        return ops.mean((h @ p["l2"]["weight"].T - y) ** 2)

    def params(seed):
        r = np.random.default_rng(seed)
        return gd.to_device({"l1": {"weight": r.standard_normal((5, 3)), "bias": r.standard_normal(5)},
                             "l2": {"weight": r.standard_normal((1, 5))}}, gd.get_device())

    return loss, params(10), params(11)


def test_landscape_1d_endpoints_equal_the_two_losses(device):
    loss, p0, p1 = _mlp_loss(gd.backend.xp_for(device))
    line = inspect.landscape_1d(loss, p0, p1, alphas=[0.0, 0.5, 1.0])
    assert line.alphas.tolist() == [0.0, 0.5, 1.0]
    assert line.losses[0] == pytest.approx(float(loss(p0)), rel=1e-12)
    assert line.losses[2] == pytest.approx(float(loss(p1)), rel=1e-12)
    mid = inspect.interpolate_params(p0, p1, 0.5)
    assert line.losses[1] == pytest.approx(float(loss(mid)), rel=1e-12)
    default = inspect.landscape_1d(loss, p0, p1)
    assert default.losses.shape == (41,)
    assert default.losses[10] == pytest.approx(line.losses[0])  # alpha = 0 on the default grid


def test_filter_normalized_direction(device):
    _, p, _ = _mlp_loss(gd.backend.xp_for(device))
    d = inspect.filter_normalized_direction(gd.random.key(0), p)
    w, dw = gd.to_numpy(p["l1"]["weight"]), gd.to_numpy(d["l1"]["weight"])
    np.testing.assert_allclose(np.linalg.norm(dw, axis=1), np.linalg.norm(w, axis=1), rtol=1e-10)
    assert not np.allclose(dw / np.linalg.norm(dw), w / np.linalg.norm(w))  # random, not w
    np.testing.assert_array_equal(gd.to_numpy(d["l1"]["bias"]), 0.0)  # 1-D leaves ignored
    again = inspect.filter_normalized_direction(gd.random.key(0), p)
    np.testing.assert_array_equal(gd.to_numpy(again["l2"]["weight"]),
                                  gd.to_numpy(d["l2"]["weight"]))
    d_all = inspect.filter_normalized_direction(gd.random.key(0), p, ignore_1d=False)
    assert np.linalg.norm(gd.to_numpy(d_all["l1"]["bias"])) == pytest.approx(
        np.linalg.norm(gd.to_numpy(p["l1"]["bias"])))


def test_landscape_2d_grid(device):
    loss, p, _ = _mlp_loss(gd.backend.xp_for(device))
    land = inspect.landscape_2d(loss, p, gd.random.key(1), alphas=[-1, 0, 1], betas=[0, 0.5])
    assert land.losses.shape == (2, 3)
    assert land.losses[0, 1] == pytest.approx(float(loss(p)), rel=1e-12)  # the centre
    d1, d2 = land.directions
    moved = gd.tree.tree_map(lambda a, u, v: a + 1.0 * u + 0.5 * v, p, d1, d2)
    assert land.losses[1, 2] == pytest.approx(float(loss(moved)), rel=1e-12)


def test_landscape_2d_with_given_directions_is_a_quadratic():
    # loss(p) = |p|^2 on the plane p0 + a e1 + b e2 is |p0|^2 + 2 a p0.e1 + 2 b p0.e2 + a^2 + b^2.
    p0 = np.array([1.0, 2.0, 0.0])
    e1, e2 = np.eye(3)[0], np.eye(3)[1]
    a, b = np.linspace(-1, 1, 5), np.linspace(-2, 2, 4)
    land = inspect.landscape_2d(lambda p: (p ** 2).sum(), p0, alphas=a, betas=b,
                                directions=(e1, e2))
    expected = 5 + 2 * a[None, :] + 4 * b[:, None] + a[None, :] ** 2 + b[:, None] ** 2
    np.testing.assert_allclose(land.losses, expected)
    with pytest.raises(ValueError, match="key"):
        inspect.landscape_2d(lambda p: (p ** 2).sum(), p0)


def test_landscape_figures_render_to_png():
    from matplotlib.figure import Figure

    line = inspect.Landscape1D(np.linspace(0, 1, 5), np.array([3.0, 2.0, 1.5, 1.2, 1.0]))
    land = inspect.landscape_2d(lambda p: (p ** 2).sum(), np.ones(2), alphas=np.linspace(-1, 1, 5),
                                betas=np.linspace(-1, 1, 4), directions=(np.eye(2)[0], np.eye(2)[1]))
    for fig in (inspect.plot_landscape_1d(line, log=True), inspect.plot_landscape_2d(land)):
        assert isinstance(fig, Figure)
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        assert buf.getvalue()[:4] == b"\x89PNG"
