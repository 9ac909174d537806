import numpy as np
import pytest

import gpudl as gd
from gpudl import functional as F


def test_linear_matches_the_formula_and_has_gradients(device, xp):
    rng = np.random.default_rng(0)
    x, w, b = rng.normal(size=(5, 3)), rng.normal(size=(4, 3)), rng.normal(size=4)
    got = F.linear(xp.asarray(x), xp.asarray(w), xp.asarray(b))
    np.testing.assert_allclose(gd.to_numpy(got), x @ w.T + b, rtol=1e-12)
    np.testing.assert_allclose(gd.to_numpy(F.linear(xp.asarray(x), xp.asarray(w))), x @ w.T)
    gd.testing.check_grad(F.linear, xp.asarray(x), xp.asarray(w), xp.asarray(b))


def test_linear_bad_shapes_name_the_sizes():
    with pytest.raises(gd.ShapeError, match="input has 2 features"):
        F.linear(np.ones((1, 2)), np.ones((4, 3)))
    with pytest.raises(gd.ShapeError, match="bias must have shape"):
        F.linear(np.ones((1, 3)), np.ones((4, 3)), np.ones(3))
    with pytest.raises(gd.ShapeError, match="weight must be 2-D"):
        F.linear(np.ones((1, 3)), np.ones(3))
